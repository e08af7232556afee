"""Connected groups of customers linked by likely-duplicate pairs.

A cluster is what a person reviews: "these four records look like one customer". Grouping
is transitive (A~B and B~C put A, B and C together even when A and C were never compared),
which is why `duplicates` re-scores the pairs inside each group before reporting it.
"""

from __future__ import annotations

from collections.abc import Iterable


def clusters(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Groups of two or more ids, each sorted; larger groups first, then by first id."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving keeps the trees flat
            node = parent[node]
        return node

    for first, second in pairs:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for node in parent:
        groups.setdefault(root(node), []).append(node)
    found = [tuple(sorted(group)) for group in groups.values() if len(group) > 1]
    found.sort(key=lambda group: (-len(group), group[0]))
    return found
