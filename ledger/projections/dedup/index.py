"""The duplicate index: blocking keys per customer, and ranked look-ups against them.

Storage is behind two small interfaces so the same engine runs in memory (tests, benchmark,
an embedded ledger) and on a projection table:

* `KeyStore` holds (key_hash, customer_id) rows: a table with an index on key_hash is all
  a database needs. Only keyed hashes are stored, never the values (DESIGN invariant 7).
* `RecordSource` returns the canonical `Record` of candidates for scoring. A projection
  backs it with its current view (decrypting personal fields under each customer's key and
  calling `prepare`); the in-memory version keeps records in a dict.

Keys shared by more than `max_block` customers are ignored at query time: a key that common
(a frequent surname's phonetic code, a shared office email) does not discriminate, and
skipping it bounds the cost of a look-up however large the ledger grows. Of the customers
sharing keys, a look-up scores at most `max_candidates`, those sharing the most (rarest
first on a tie): a common name in a big town brings hundreds of namesakes, of whom the one
sharing a phone or birth date as well is the one worth decrypting, so the cost stays flat.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ledger.projections.dedup.compare import (
    Levels,
    Similarities,
    compare,
    record_terms,
    term_values,
)
from ledger.projections.dedup.keys import BlockingKeyer
from ledger.projections.dedup.normalise import clear_caches
from ledger.projections.dedup.record import Profile, Record, prepare
from ledger.projections.dedup.score import (
    Adjustments,
    FieldScore,
    Model,
    TermFrequencies,
    estimate,
    starting_model,
)

Scored = tuple[float, Levels, Similarities, Adjustments]
DEFAULT_MAX_BLOCK = 200
DEFAULT_MAX_CANDIDATES = 30  # scored per look-up, those sharing the most keys first
DEFAULT_FIT_PAIRS = 200_000
RANDOM_PAIRS = 20_000  # to count chance agreement (u probabilities)
RANDOM_PAIR_CUSTOMERS = 50_000


class KeyStore(Protocol):
    """Rows of (key_hash, customer_id)."""

    def put(self, customer_id: str, keys: Collection[bytes]) -> None:
        """Replace the customer's keys with `keys` (a profile change re-keys)."""

    def delete(self, customer_id: str) -> None:
        """Remove every row of the customer (erasure, merge into another)."""

    def members(self, keys: Collection[bytes], max_block: int) -> Mapping[bytes, Collection[str]]:
        """For each of `keys` shared by at most `max_block` customers, those customers."""
        ...

    def shared_blocks(self, max_block: int) -> Iterable[Collection[str]]:
        """Every block of 2..max_block customers sharing one key (batch candidate pairs)."""
        ...

    def some_customers(self, limit: int) -> Collection[str]:
        """Up to `limit` indexed customers chosen without regard to their data (customer
        ids are random UUIDs, so the first ones by id will do): random pairs of them show
        how often fields agree by chance."""
        ...


class RecordSource(Protocol):
    def records(self, customer_ids: Collection[str]) -> Mapping[str, Record]:
        """Canonical records of those of `customer_ids` that exist (others are left out)."""
        ...


class InMemoryKeyStore:
    """A `KeyStore` in two dicts. A block with one customer holds the id itself rather
    than a one-element set: most keys are unique, and 100,000 customers with ~10 keys each
    would otherwise spend a few hundred MB on singleton sets."""

    def __init__(self) -> None:
        self._blocks: dict[bytes, str | set[str]] = {}
        self._keys: dict[str, frozenset[bytes]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def put(self, customer_id: str, keys: Collection[bytes]) -> None:
        self.delete(customer_id)
        new = frozenset(keys)
        self._keys[customer_id] = new
        blocks = self._blocks
        for key in new:
            present = blocks.get(key)
            if present is None:
                blocks[key] = customer_id
            elif isinstance(present, str):
                if present != customer_id:
                    blocks[key] = {present, customer_id}
            else:
                present.add(customer_id)

    def delete(self, customer_id: str) -> None:
        for key in self._keys.pop(customer_id, ()):
            present = self._blocks.get(key)
            if isinstance(present, set):
                present.discard(customer_id)
                if len(present) == 1:
                    self._blocks[key] = next(iter(present))
            elif present == customer_id:
                del self._blocks[key]

    def keys_of(self, customer_id: str) -> frozenset[bytes]:
        return self._keys.get(customer_id, frozenset())

    def members(self, keys: Collection[bytes], max_block: int) -> dict[bytes, Collection[str]]:
        found: dict[bytes, Collection[str]] = {}
        for key in keys:
            present = self._blocks.get(key)
            if isinstance(present, str):
                found[key] = (present,)
            elif present is not None and len(present) <= max_block:
                found[key] = present
        return found

    def shared_blocks(self, max_block: int) -> Iterator[Collection[str]]:
        for present in self._blocks.values():
            if isinstance(present, set) and len(present) <= max_block:
                yield present

    def some_customers(self, limit: int) -> list[str]:
        """Spread evenly over the ids in order: ids given by a caller (benchmarks, tests)
        are not always random, and the first ones by id can be one kind of customer."""
        ids = sorted(self._keys)
        step = max(1, len(ids) // max(limit, 1))
        return ids[::step][:limit]

    def rows(self) -> Iterator[tuple[bytes, str]]:
        """(key_hash, customer_id) rows, as a table would hold them."""
        for customer_id, keys in self._keys.items():
            for key in keys:
                yield key, customer_id


class InMemoryRecords:
    """A `RecordSource` in a dict; holds personal data in memory only."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def put(self, customer_id: str, record: Record) -> None:
        self._records[customer_id] = record

    def delete(self, customer_id: str) -> None:
        self._records.pop(customer_id, None)

    def records(self, customer_ids: Collection[str]) -> dict[str, Record]:
        get = self._records.get
        return {i: r for i in customer_ids if (r := get(i)) is not None}


@dataclass(frozen=True)
class Match:
    """A likely duplicate of the record looked up."""

    customer_id: str
    score: float
    explanation: tuple[FieldScore, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "score": round(self.score, 6),
            "explanation": [line.as_dict() for line in self.explanation],
        }


class DuplicateIndex:
    """Blocking keys and a scoring model; `lookup` ranks likely duplicates of one record.

    With no `records` source the index keeps each added customer's canonical record in
    memory (embedded use, tests, benchmarks). A projection passes its own source and writes
    `keys_for(profile)` to its key table in the same transaction as its other rows.
    """

    def __init__(
        self,
        keyer: BlockingKeyer,
        *,
        store: KeyStore | None = None,
        records: RecordSource | None = None,
        model: Model | None = None,
        max_block: int = DEFAULT_MAX_BLOCK,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        self.keyer = keyer
        self.store: KeyStore = store if store is not None else InMemoryKeyStore()
        self._own_records: InMemoryRecords | None = None
        if records is None:
            self._own_records = records = InMemoryRecords()
        self.records: RecordSource = records
        # Until `refit` has seen data (or a persisted `Model.from_dict` is passed in), a
        # vague model that only ranks by agreement: an empty ledger has no duplicates.
        self.model = model or starting_model()
        self.max_block = max_block
        self.max_candidates = max_candidates

    def keys_for(self, profile: Profile | Record) -> frozenset[bytes]:
        record = profile if isinstance(profile, Record) else prepare(profile)
        return self.keyer.keys(record)

    def add(self, customer_id: str, profile: Profile | Record) -> None:
        """Index (or re-index after a change) one customer."""
        record = profile if isinstance(profile, Record) else prepare(profile)
        self.store.put(customer_id, self.keyer.keys(record))
        if self._own_records is not None:
            self._own_records.put(customer_id, record)

    def remove(self, customer_id: str) -> None:
        """Forget a customer's keys and record (merged into another, or erased)."""
        self.store.delete(customer_id)
        if self._own_records is not None:
            self._own_records.delete(customer_id)

    def erase(self, customer_id: str) -> None:
        """`remove`, and also drop the memoised canonical names and places of everyone
        (DESIGN invariant 3 purges caches too): they refill from the remaining records."""
        self.remove(customer_id)
        clear_caches()

    def candidates(self, profile: Profile | Record, *, exclude: Collection[str] = ()) -> set[str]:
        """Customers sharing at least one discriminating key with the profile: at most
        `max_candidates`, those sharing the most keys (then the smallest blocks) first."""
        blocks = self.store.members(self.keys_for(profile), self.max_block).values()
        shared: Counter[str] = Counter()
        rarity: dict[str, int] = {}
        for members in blocks:
            size = len(members)
            for customer_id in members:
                shared[customer_id] += 1
                rarity[customer_id] = min(rarity.get(customer_id, size), size)
        for customer_id in exclude:
            shared.pop(customer_id, None)
        if len(shared) <= self.max_candidates:
            return set(shared)
        ranked = sorted(shared, key=lambda i: (-shared[i], rarity[i], i))
        return set(ranked[: self.max_candidates])

    def score(self, a: Record, b: Record, model: Model | None = None) -> Scored:
        """Score, levels, similarities and term-frequency adjustments of one pair."""
        model = model or self.model
        levels, similarities = compare(a, b)
        adjustments: Adjustments = ()
        if model.frequencies is not None:
            term = self.keyer.term
            adjustments = model.term_adjustments(
                (name, term(name, value)) for name, value in term_values(a, b, levels)
            )
        return model.score(levels, adjustments), levels, similarities, adjustments

    def lookup(
        self,
        profile: Profile | Record,
        *,
        limit: int = 10,
        min_score: float = 0.0,
        exclude: Collection[str] = (),
    ) -> list[Match]:
        """Likely duplicates of a new or changed profile, best first."""
        record = profile if isinstance(profile, Record) else prepare(profile)
        ids = self.candidates(record, exclude=exclude)
        model = self.model
        scored: list[tuple[str, Scored]] = []
        for customer_id, other in self.records.records(ids).items():
            result = self.score(record, other, model)
            if result[0] >= min_score:
                scored.append((customer_id, result))
        scored.sort(key=lambda item: (-item[1][0], item[0]))
        return [
            Match(customer_id, score, model.explain(levels, similarities, adjustments))
            for customer_id, (score, levels, similarities, adjustments) in scored[:limit]
        ]

    def lookup_customer(
        self, customer_id: str, *, limit: int = 10, min_score: float = 0.0
    ) -> list[Match]:
        """Likely duplicates of a customer already in the index."""
        record = self.records.records((customer_id,)).get(customer_id)
        if record is None:
            return []
        return self.lookup(record, limit=limit, min_score=min_score, exclude=(customer_id,))

    def candidate_pairs(self) -> set[tuple[str, str]]:
        """Every pair of customers sharing a discriminating key, each pair once (a < b)."""
        pairs: set[tuple[str, str]] = set()
        for block in self.store.shared_blocks(self.max_block):
            members = sorted(block)
            for i, first in enumerate(members):
                for second in members[i + 1 :]:
                    pairs.add((first, second))
        return pairs

    def random_pairs(self, rng: random.Random, count: int = RANDOM_PAIRS) -> list[tuple[str, str]]:
        """Random pairs of indexed customers: almost all of them two different people."""
        ids = sorted(self.store.some_customers(RANDOM_PAIR_CUSTOMERS))
        if len(ids) < 2:
            return []
        drawn = (sorted(rng.sample(ids, 2)) for _ in range(count))
        return [(a, b) for a, b in drawn]

    def refit(
        self,
        *,
        max_pairs: int = DEFAULT_FIT_PAIRS,
        seed: int = 0,
        matches: Iterable[tuple[str, str]] = (),
        non_matches: Iterable[tuple[str, str]] = (),
    ) -> Model:
        """Re-estimate the model on (a sample of) the index's own candidate pairs, and use
        it from now on. `matches` (merged) and `non_matches` (unmerged, "not a
        duplicate") pairs of customer ids are the ledger's labels: the model learns from
        them as well (pairs whose records are gone are skipped)."""
        pairs = sorted(self.candidate_pairs())
        rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
        if len(pairs) > max_pairs:
            pairs = rng.sample(pairs, max_pairs)
        vectors = compare_pairs(self.records, pairs)
        return self.estimate_model(
            (levels for levels, _ in vectors.values()),
            seed=seed,
            matches=matches,
            non_matches=non_matches,
        )

    def estimate_model(
        self,
        candidate_levels: Iterable[Levels],
        *,
        seed: int = 0,
        matches: Iterable[tuple[str, str]] = (),
        non_matches: Iterable[tuple[str, str]] = (),
    ) -> Model:
        """Estimate the model from candidate pairs' levels (see `score.estimate`), drawing
        random pairs of this index's customers for chance agreement, with the term
        frequencies of (a sample of) its records and the labelled pairs; keep it."""
        rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret

        def chance_levels() -> list[Levels]:
            chance = compare_pairs(self.records, self.random_pairs(rng))
            return [levels for levels, _ in chance.values()]

        def labelled(pairs: Iterable[tuple[str, str]]) -> list[Levels]:
            return [levels for levels, _ in compare_pairs(self.records, pairs).values()]

        model = estimate(
            candidate_levels,
            chance_levels,
            confirmed=labelled(matches),
            rejected=labelled(non_matches),
        )
        self.model = replace(model, frequencies=self.term_frequencies())
        return self.model

    def term_frequencies(self) -> TermFrequencies:
        """How common each name, birth date, phone and place is among (up to
        `RANDOM_PAIR_CUSTOMERS` of) the indexed customers, keyed by `BlockingKeyer.term`."""
        ids = self.store.some_customers(RANDOM_PAIR_CUSTOMERS)
        term = self.keyer.term
        return TermFrequencies.count(
            [(name, term(name, value)) for name, value in record_terms(record)]
            for record in self.records.records(ids).values()
        )


def score_pairs(
    index: DuplicateIndex, pairs: Iterable[tuple[str, str]], model: Model | None = None
) -> dict[tuple[str, str], Scored]:
    """`DuplicateIndex.score` of pairs whose records both exist."""
    pairs = list(pairs)
    records = index.records.records({customer_id for pair in pairs for customer_id in pair})
    model = model or index.model
    return {
        (a, b): index.score(records[a], records[b], model)
        for a, b in pairs
        if a in records and b in records
    }


def compare_pairs(
    source: RecordSource, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[tuple[int, ...], tuple[float | None, ...]]]:
    """Level and similarity vectors of pairs whose records both exist."""
    pairs = list(pairs)
    records = source.records({customer_id for pair in pairs for customer_id in pair})
    return {
        (a, b): compare(records[a], records[b]) for a, b in pairs if a in records and b in records
    }
