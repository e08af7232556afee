"""Duplicate queries over the duplicate index projection: real-time candidates of one
record, the batch report (`ledger duplicates`), re-estimating the model, and the
registration policy (LEDGER_DUPLICATE_POLICY).

Results carry customer ids, scores and per-field explanations (similarities, agreement
levels, weights): no personal values. The batch report adds each customer's external ids,
which are personal data: callers that print them record the read in the access log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from ledger.crypto_shred.keyring import KeyRing
from ledger.domain.errors import LikelyDuplicate
from ledger.projections.dedup import (
    DEFAULT_MAX_BLOCK,
    BlockingKeyer,
    Cluster,
    DuplicateIndex,
    DuplicateReport,
    KeyStore,
    Match,
    Model,
    Profile,
    Record,
    ScoredPair,
    find_duplicates,
    starting_model,
)
from ledger.projections.dedup.record import prepare
from ledger.projections.duplicate_index import (
    KEYS,
    SealedRecords,
    TableKeyStore,
    load_model,
    members_query,
    save_model,
)
from ledger.projections.duplicate_labels import Labels, LabelTable, pair_of
from ledger.projections.duplicate_lookup import (
    MAX_SCORED,
    RankedBlocks,
    labelled_keys,
    name_only,
    worth_flagging,
)
from ledger.projections.record_cache import RecordCache
from ledger.projections.row_mac import RowMac
from ledger.projections.store import ProjectionDatabase

DEFAULT_LIMIT = 10
# Below this many candidate pairs EM has too little to go on: the stored (or starting)
# model is kept rather than re-estimated from a handful of pairs.
MIN_FIT_PAIRS = 100
MODEL_TTL = 60.0  # seconds a loaded model serves before it is read again

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DuplicatesResult:
    """The batch report and the external ids of every customer it names."""

    report: DuplicateReport
    external_ids: Mapping[str, Mapping[str, str]]

    @property
    def customer_ids(self) -> list[str]:
        named = {c for cluster in self.report.clusters for c in cluster.customer_ids}
        named |= {c for pair in self.report.pairs for c in (pair.first, pair.second)}
        return sorted(named)

    def as_dict(self) -> dict[str, Any]:
        data = self.report.as_dict()
        data["external_ids"] = {c: dict(self.external_ids.get(c, {})) for c in self.customer_ids}
        return data


class _RememberedBlocks(TableKeyStore):
    """A batch run reads the shared blocks twice (count, then pairs): once is enough."""

    def __init__(self, db: ProjectionDatabase) -> None:
        super().__init__(db)
        self._blocks: dict[int, list[Any]] = {}

    def shared_blocks(self, max_block: int) -> list[Any]:
        if max_block not in self._blocks:
            self._blocks[max_block] = list(super().shared_blocks(max_block))
        return self._blocks[max_block]


class DuplicateQueries:
    def __init__(
        self,
        db: ProjectionDatabase,
        keys: KeyRing,
        keyer: BlockingKeyer,
        row_mac: RowMac,
        *,
        threshold: float,
        max_block: int = DEFAULT_MAX_BLOCK,
        labels: LabelTable | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.keyer = keyer
        self.row_mac = row_mac
        self.threshold = threshold
        self.max_block = max_block
        self.label_table = labels
        self._model: Model | None = None
        self._model_loaded = 0.0
        # Prepared records of recent candidates (real-time checks): see record_cache.
        self.record_cache = RecordCache(keys.ttl)

    @property
    def model(self) -> Model:
        """The persisted model, or the vague starting one before any fit. Read again at
        most every `MODEL_TTL` seconds, so one instance can serve every look-up of a
        long-running server and still pick up a refit made by another process."""
        now = time.monotonic()
        if self._model is None or now - self._model_loaded > MODEL_TTL:
            self._model = load_model(self.db) or starting_model()
            self._model_loaded = now
        return self._model

    def _index(
        self,
        records: SealedRecords,
        store: KeyStore | None = None,
        model: Model | None = None,
    ) -> DuplicateIndex:
        return DuplicateIndex(
            self.keyer,
            store=store or TableKeyStore(self.db),
            records=records,
            model=model or self.model,
            max_block=self.max_block,
        )

    # Real time ------------------------------------------------------------------------------

    def candidates(
        self,
        profile: Profile,
        min_score: float | None = None,
        limit: int = DEFAULT_LIMIT,
        owner: str | None = None,
        exclude: Collection[str] = (),
        model: Model | None = None,
    ) -> list[Match]:
        """Likely duplicates of a (new) profile, best first. With `owner`, only that
        owner's customers are considered at all; `exclude`d ids are never matched.
        `model`: scored with it instead of the ledger's (an import fit on its own file
        while the ledger's model is still the untrained starting one). Candidates are
        chosen and matches flagged as `duplicate_lookup` says: the cost does not grow with
        a name's frequency, and a name (with a city) alone is not a duplicate."""
        return self._lookup(prepare(profile), min_score, limit, owner, exclude, model)

    def candidates_of(
        self,
        customer_id: UUID | str,
        min_score: float | None = None,
        limit: int = DEFAULT_LIMIT,
        owner: str | None = None,
    ) -> list[Match]:
        """Likely duplicates of a customer in the index (none when it is not active),
        leaving out the customers it was dismissed against ("not a duplicate")."""
        wanted = str(customer_id)
        record = SealedRecords(self.db, self.keys, self.row_mac).records((wanted,)).get(wanted)
        if record is None:
            return []
        exclude = {wanted, *self.dismissed_partners(wanted)}
        return self._lookup(record, min_score, limit, owner, exclude, None)

    def _lookup(
        self,
        record: Record,
        min_score: float | None,
        limit: int,
        owner: str | None,
        exclude: Collection[str],
        model: Model | None,
    ) -> list[Match]:
        records = SealedRecords(
            self.db, self.keys, self.row_mac, owner=owner, cache=self.record_cache
        )
        search = name_only(record)
        kinds = labelled_keys(self.keyer, record)
        blocks = RankedBlocks(
            self.db, KEYS, kinds, members_query, exclude=exclude, name_search=search
        )
        index = self._index(records, blocks, model)
        found = index.lookup(
            record, limit=MAX_SCORED, min_score=self._min(min_score), exclude=exclude
        )
        if not search:
            found = [m for m in found if worth_flagging(m, common_name=blocks.common_name)]
        return found[:limit]

    def lookup_figures(self, profile: Profile) -> tuple[int, int, bool]:
        """What a look-up of `profile` would consider, without decrypting anything:
        (customers sharing a usable block, how many of them it scores, whether its name is
        common). For tests and benchmarks: counts, no personal data."""
        record = prepare(profile)
        blocks = RankedBlocks(
            self.db,
            KEYS,
            labelled_keys(self.keyer, record),
            members_query,
            name_search=name_only(record),
        )
        blocks.members((), self.max_block)
        return blocks.considered, blocks.chosen, blocks.common_name

    # Labels ---------------------------------------------------------------------------------

    def labels(self, customer_ids: Collection[str] | None = None) -> Labels:
        """Pairs people decided about (merged; unmerged or dismissed), all or those with
        one of `customer_ids`."""
        if self.label_table is None:
            return Labels(frozenset(), frozenset())
        with self.db.reading() as tx:
            return self.label_table.read(tx, customer_ids)

    def dismissed_partners(self, customer_id: str) -> set[str]:
        """The customers confirmed not to be `customer_id` (dismissed or unmerged)."""
        pairs = self.labels([customer_id]).non_matches
        return {b if a == customer_id else a for a, b in pairs}

    def _min(self, min_score: float | None) -> float:
        return self.threshold if min_score is None else min_score

    # Batch ----------------------------------------------------------------------------------

    def report(
        self, min_score: float | None = None, *, progress: Progress | None = None
    ) -> DuplicatesResult:
        """Every likely-duplicate pair and cluster. The model is re-estimated on this run's
        candidate pairs (when there are enough) and the ledger's labels (merged pairs are
        matches; unmerged and dismissed ones non-matches), and kept for real-time
        look-ups. A non-match is never reported, nor inside one cluster."""
        records = SealedRecords(self.db, self.keys, self.row_mac)
        customers = records.load_all()
        store = _RememberedBlocks(self.db)
        index = self._index(records, store)
        refit = len(index.candidate_pairs()) >= MIN_FIT_PAIRS
        labels = self.labels()
        records.hold_merged({c for pair in labels.matches for c in pair})
        report = find_duplicates(
            index,
            min_score=self._min(min_score),
            refit=refit,
            progress=progress,
            customers=customers,
            matches=labels.matches,
            non_matches=labels.non_matches,
        )
        if refit:
            self._keep(report.model)
        report = without_pairs(report, labels.non_matches)
        result = DuplicatesResult(report, {})
        external = {}
        for customer_id in result.customer_ids:
            personal = records.held_personal(customer_id) or {}
            external[customer_id] = dict(personal.get("external_ids") or {})
        return DuplicatesResult(report, external)

    def refit(self) -> Model:
        """Re-estimate the model by EM on the index's own candidate pairs and the ledger's
        labels, and keep it, unless there are too few pairs to learn from."""
        records = SealedRecords(self.db, self.keys, self.row_mac)
        records.load_all()
        index = self._index(records, _RememberedBlocks(self.db))
        if len(index.candidate_pairs()) < MIN_FIT_PAIRS:
            return self.model
        labels = self.labels()
        records.hold_merged({c for pair in labels.matches for c in pair})
        return self._keep(index.refit(matches=labels.matches, non_matches=labels.non_matches))

    def _keep(self, model: Model) -> Model:
        save_model(self.db, model)
        self._model = model
        self._model_loaded = time.monotonic()
        return model

    # Registration policy --------------------------------------------------------------------

    def check_registration(
        self,
        profile: Profile,
        *,
        policy: str,
        owner: str | None = None,
        exclude: Collection[str] = (),
    ) -> list[Match]:
        """The likely duplicates of a profile about to be registered, above the threshold:
        `refuse` raises `LikelyDuplicate` naming their ids, `warn` returns them for the
        caller to pass on, `off` looks nothing up. `exclude`: the id the profile is about
        to be registered under (an API retry racing its first attempt is no duplicate of
        the customer that attempt is creating)."""
        if policy == "off":
            return []
        found = self.candidates(profile, owner=owner, exclude=exclude)
        if found and policy == "refuse":
            raise LikelyDuplicate([(m.customer_id, m.score) for m in found])
        return found


def without_pairs(
    report: DuplicateReport, dismissed: Collection[tuple[str, str]]
) -> DuplicateReport:
    """The report without the pairs people confirmed are different people, and with no
    cluster holding both customers of such a pair: a cluster that did is rebuilt from its
    remaining pairs, strongest first, never joining two groups a dismissal keeps apart.
    (The engine already scores such pairs 0; this holds whatever its clustering does.)"""
    if not dismissed:
        return report
    apart = {pair_of(a, b) for a, b in dismissed}
    pairs = tuple(p for p in report.pairs if pair_of(p.first, p.second) not in apart)
    kept: list[Cluster] = []
    for cluster in report.clusters:
        members = set(cluster.customer_ids)
        if not any(a in members and b in members for a, b in apart):
            kept.append(cluster)
            continue
        inside = [p for p in pairs if p.first in members and p.second in members]
        kept += _split(inside, apart)
    kept.sort(key=lambda c: (-len(c.customer_ids), c.customer_ids[0]))
    return replace(report, pairs=pairs, clusters=tuple(kept))


def _split(pairs: Sequence[ScoredPair], apart: Collection[tuple[str, str]]) -> list[Cluster]:
    """Groups linked by `pairs` (taken strongest first), never uniting two customers of a
    pair in `apart`."""
    group: dict[str, set[str]] = {}
    for pair in sorted(pairs, key=lambda p: -p.score):
        a = group.setdefault(pair.first, {pair.first})
        b = group.setdefault(pair.second, {pair.second})
        if a is b or any(pair_of(x, y) in apart for x in a for y in b):
            continue
        a |= b
        for member in b:
            group[member] = a
    found: list[Cluster] = []
    for members in {id(g): g for g in group.values()}.values():
        if len(members) < 2:
            continue
        scores = [p.score for p in pairs if p.first in members and p.second in members]
        found.append(Cluster(tuple(sorted(members)), min(scores), max(scores)))
    return found
