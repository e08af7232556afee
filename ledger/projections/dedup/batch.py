"""Batch duplicate search: every likely-duplicate pair and cluster, for `ledger duplicates`.

The steps: candidate pairs from shared blocking keys → field comparison → Fellegi-Sunter
weights estimated by EM on exactly these pairs (so the model fits this ledger's data, not
someone else's; see `score.estimate` for the ledger without duplicates) → pairs at or
above `min_score` → linked groups. Inside each group the
pairs that no key proposed are compared too (A~B and B~C suggest A~C), and the group is
split into clusters whose members agree on average (`cluster.agreeing_groups`): one weak
link does not chain two people together. Reported pairs are those at or above
`min_score` inside a cluster, so pairs and clusters tell the same story.

The report holds customer ids, scores and per-field similarities: no personal values, so it
can be printed, logged or returned as JSON as it is (the CLI adds external ids itself,
after an authorised read).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.projections.dedup.cluster import agreeing_groups, clusters
from ledger.projections.dedup.compare import Levels, Similarities, term_values
from ledger.projections.dedup.index import DuplicateIndex, compare_pairs
from ledger.projections.dedup.keys import KEY_KINDS, BlockingKeyer
from ledger.projections.dedup.record import Profile
from ledger.projections.dedup.score import Adjustments, FieldScore, Model

DEFAULT_MIN_SCORE = 0.5  # posterior match probability: more likely one person than two
MAX_GROUP_COMPLETION = 50  # larger groups are left as linked; comparing them is quadratic

PROGRESS_STEP = 20_000  # pairs compared between two progress reports
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A batch allocates millions of small tuples and strings that form no reference
    cycles; the cyclic collector's passes over them (and over everything else the process
    holds) cost up to a third of the run and free nothing. Restored afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class ScoredPair:
    first: str
    second: str
    score: float
    explanation: tuple[FieldScore, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_ids": [self.first, self.second],
            "score": round(self.score, 6),
            "explanation": [line.as_dict() for line in self.explanation],
        }


@dataclass(frozen=True)
class Cluster:
    customer_ids: tuple[str, ...]
    min_score: float  # the weakest scored link inside the group
    max_score: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_ids": list(self.customer_ids),
            "min_score": round(self.min_score, 6),
            "max_score": round(self.max_score, 6),
        }


@dataclass(frozen=True)
class DuplicateReport:
    customers: int
    candidate_pairs: int
    pairs: tuple[ScoredPair, ...]  # best first
    clusters: tuple[Cluster, ...]  # largest first
    model: Model

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "candidate_pairs": self.candidate_pairs,
            "pairs": [pair.as_dict() for pair in self.pairs],
            "clusters": [cluster.as_dict() for cluster in self.clusters],
            "model": self.model.as_dict(),
        }


def find_duplicates(
    index: DuplicateIndex,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    refit: bool = True,
    progress: Progress | None = None,
    customers: int | None = None,
    matches: Iterable[tuple[str, str]] = (),
    non_matches: Iterable[tuple[str, str]] = (),
) -> DuplicateReport:
    """All likely-duplicate pairs and clusters in the index. With `refit` (the default)
    the model is re-estimated on this run's candidate pairs and kept on the index for
    real-time look-ups; otherwise the index's current model scores them. `matches` and
    `non_matches` are the ledger's labels (pairs of customer ids): the fit learns from
    both, and a non-match is never reported nor counted for its two customers' cluster."""
    labels = _Labels(tuple(matches), frozenset((min(a, b), max(a, b)) for a, b in non_matches))
    with _gc_paused():
        return _find_duplicates(index, min_score, refit, progress, customers, labels)


@dataclass(frozen=True)
class _Labels:
    matches: tuple[tuple[str, str], ...]
    non_matches: frozenset[tuple[str, str]]


def _find_duplicates(
    index: DuplicateIndex,
    min_score: float,
    refit: bool,
    progress: Progress | None,
    customers: int | None,
    labels: _Labels,
) -> DuplicateReport:
    pairs = sorted(index.candidate_pairs())
    vectors: dict[tuple[str, str], tuple[Levels, Similarities]] = {}
    for start in range(0, len(pairs), PROGRESS_STEP):
        if progress:
            progress("compare", start, len(pairs))
        vectors.update(compare_pairs(index.records, pairs[start : start + PROGRESS_STEP]))
    if progress:
        progress("compare", len(pairs), len(pairs))
    if refit:
        index.estimate_model(
            (levels for levels, _ in vectors.values()),
            matches=labels.matches,
            non_matches=labels.non_matches,
        )
    model = index.model
    adjustments = _adjustments(index, model, vectors)

    scores = {
        pair: model.score(levels, adjustments.get(pair, ()))
        for pair, (levels, _) in vectors.items()
    }
    for pair in labels.non_matches:
        scores[pair] = 0.0  # cannot-link: a reviewer said these are two people
    accepted = {pair: score for pair, score in scores.items() if score >= min_score}
    linked = clusters(accepted)
    missing = [
        (a, b)
        for group in linked
        if len(group) <= MAX_GROUP_COMPLETION
        for i, a in enumerate(group)
        for b in group[i + 1 :]
        if (a, b) not in vectors
    ]
    completed = compare_pairs(index.records, missing)
    vectors.update(completed)
    adjustments.update(_adjustments(index, model, completed))
    for pair, (levels, _) in completed.items():
        scores[pair] = (
            0.0 if pair in labels.non_matches else model.score(levels, adjustments.get(pair, ()))
        )
    groups = [cluster for group in linked for cluster in agreeing_groups(group, scores, min_score)]
    groups.sort(key=lambda group: (-len(group), group[0]))
    within = {
        (a, b): scores[(a, b)]
        for group in groups
        for i, a in enumerate(group)
        for b in group[i + 1 :]
        if scores.get((a, b), 0.0) >= min_score
    }

    return DuplicateReport(
        customers=customers if customers is not None else _count(index),
        candidate_pairs=len(pairs),
        pairs=_scored_pairs(within, vectors, adjustments, model),
        clusters=_clusters(groups, within),
        model=model,
    )


def _adjustments(
    index: DuplicateIndex,
    model: Model,
    vectors: Mapping[tuple[str, str], tuple[Levels, Similarities]],
) -> dict[tuple[str, str], Adjustments]:
    """Term-frequency adjustments of the pairs that agree exactly on a counted field."""
    if model.frequencies is None:
        return {}
    records = index.records.records({i for pair in vectors for i in pair})
    term = index.keyer.term
    found: dict[tuple[str, str], Adjustments] = {}
    for (a, b), (levels, _) in vectors.items():
        values = term_values(records[a], records[b], levels)
        if values:
            found[(a, b)] = model.term_adjustments((n, term(n, v)) for n, v in values)
    return found


def duplicates_among(
    profiles: Mapping[str, Profile] | Iterable[tuple[str, Profile]],
    secret: bytes,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    kinds: Iterable[str] = KEY_KINDS,
    progress: Progress | None = None,
) -> tuple[DuplicateReport, DuplicateIndex]:
    """Index the given profiles in memory and find their duplicates (benchmarks, one-off
    checks of a file before import). Returns the index too, fitted, for look-ups."""
    items = profiles.items() if isinstance(profiles, Mapping) else profiles
    index = DuplicateIndex(BlockingKeyer(secret, kinds))
    count = 0
    with _gc_paused():
        for customer_id, profile in items:
            index.add(customer_id, profile)
            count += 1
    return find_duplicates(index, min_score=min_score, progress=progress, customers=count), index


def _scored_pairs(
    accepted: Mapping[tuple[str, str], float],
    vectors: Mapping[tuple[str, str], tuple[Levels, Similarities]],
    adjustments: Mapping[tuple[str, str], Adjustments],
    model: Model,
) -> tuple[ScoredPair, ...]:
    ordered = sorted(accepted.items(), key=lambda item: (-item[1], item[0]))
    return tuple(
        ScoredPair(a, b, score, model.explain(*vectors[(a, b)], adjustments.get((a, b), ())))
        for (a, b), score in ordered
    )


def _clusters(
    groups: list[tuple[str, ...]], accepted: Mapping[tuple[str, str], float]
) -> tuple[Cluster, ...]:
    members = {customer_id: n for n, group in enumerate(groups) for customer_id in group}
    scores: dict[int, list[float]] = {}
    for (a, _), score in accepted.items():
        scores.setdefault(members[a], []).append(score)
    return tuple(
        Cluster(group, min(scores.get(n, [0.0])), max(scores.get(n, [0.0])))
        for n, group in enumerate(groups)
    )


def _count(index: DuplicateIndex) -> int:
    size = getattr(index.store, "__len__", None)
    return int(size()) if callable(size) else 0
