"""Connected groups of customers linked by likely-duplicate pairs.

A cluster is what a person reviews: "these four records look like one customer". Grouping
by links alone is transitive (A~B and B~C put A, B and C together even when A and C were
never compared), so `duplicates` scores every pair inside each linked group and splits it
into clusters whose members agree on average (`agreeing_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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


MAX_LINKAGE_GROUP = 500  # larger linked groups are split by their pairs alone (cubic cost)


def agreeing_groups(
    group: tuple[str, ...], scores: Mapping[tuple[str, str], float], threshold: float
) -> list[tuple[str, ...]]:
    """Split one linked group into clusters whose members agree: average linkage, merging
    the two clusters whose pairs score highest on average while that average is at least
    `threshold`. A pair never scored counts 0 (no evidence they are one person).

    Linking by single pairs chains different people (A~B and B~C join A and C even when A
    and C clearly differ, and one bridging record can join two families); averaging over
    every pair across two clusters lets a member in only through most of the others."""
    if len(group) <= 2 or len(group) > MAX_LINKAGE_GROUP:
        return [group]
    members: list[list[str]] = [[customer_id] for customer_id in group]

    def score(a: str, b: str) -> float:
        return scores.get((a, b) if a < b else (b, a), 0.0)

    while len(members) > 1:
        best, best_pair = threshold, None
        for i, left in enumerate(members):
            for j in range(i + 1, len(members)):
                right = members[j]
                average = sum(score(a, b) for a in left for b in right) / (len(left) * len(right))
                if average >= best:
                    best, best_pair = average, (i, j)
        if best_pair is None:
            break
        i, j = best_pair
        members[i] = members[i] + members.pop(j)
    found = [tuple(sorted(m)) for m in members if len(m) > 1]
    found.sort(key=lambda g: (-len(g), g[0]))
    return found
