"""Duplicate detection: blocking keys, Fellegi-Sunter scoring, index, clusters.

A self-contained engine with no I/O of its own. How a projection plugs it in:

* **Secret.** `BlockingKeyer(secret)` needs a secret of 16+ bytes that lives with the
  ledger's other secrets (never in the projection's tables). Changing it changes every
  key: rebuild the index afterwards.
* **Key rows.** A table ``(key_hash BYTES, customer_id)`` with an index on key_hash backs
  `KeyStore`: `put` replaces a customer's rows, `delete` removes them, `members` is one
  ``WHERE key_hash IN (...)`` query that skips keys with more than `max_block` rows,
  `shared_blocks` groups by key_hash (``HAVING count(*) BETWEEN 2 AND max_block``),
  `some_customers` takes the first ids by id. `DuplicateIndex.keys_for(profile)` gives
  the rows to write in the same transaction as the current-view row.
* **Records.** `RecordSource.records(ids)` reads the candidates' current-view rows,
  decrypts them under each customer's key and returns `prepare(profile)` for each.
* **Events.** Registration or change: `add` (re-keys). Merge of B into A: `remove(B)`;
  unmerge: `add(B, ...)` again. Erasure: `erase` (also clears memoised names).
* **Model.** `refit()` after a rebuild and from time to time (or `find_duplicates`, which
  refits); persist `model.as_dict()` (probabilities, and term frequencies keyed by a keyed
  hash: no personal data) and pass `Model.from_dict(...)` to the next `DuplicateIndex`.
  Scoring a pair needs the index's keyer for term frequencies: `DuplicateIndex.score`.
* **Labels.** Merges are confirmed pairs, unmerges and "not a duplicate" decisions
  confirmed non-pairs: pass them as `refit(matches=..., non_matches=...)` or
  `find_duplicates(..., matches=..., non_matches=...)`; the fit learns from both and a
  non-match is never reported or clustered together.
* **Cost.** A look-up scores at most `max_candidates` customers (those sharing the most
  keys), so the records to read and decrypt per look-up are bounded.
* **Uses.** Registration calls `lookup(profile, min_score=...)` to warn about or refuse
  likely duplicates; `ledger duplicates [--min-score S] [--json]` calls `find_duplicates`
  and prints `report.as_dict()` plus each customer's external ids.
"""

from ledger.projections.dedup.batch import (
    DEFAULT_MIN_SCORE,
    Cluster,
    DuplicateReport,
    ScoredPair,
    duplicates_among,
    find_duplicates,
)
from ledger.projections.dedup.cluster import clusters
from ledger.projections.dedup.compare import FIELD_NAMES, FIELDS, compare
from ledger.projections.dedup.index import (
    DEFAULT_MAX_BLOCK,
    DuplicateIndex,
    InMemoryKeyStore,
    InMemoryRecords,
    KeyStore,
    Match,
    RecordSource,
)
from ledger.projections.dedup.keys import KEY_KINDS, BlockingKeyer
from ledger.projections.dedup.record import Profile, Record, prepare
from ledger.projections.dedup.score import FieldScore, Model, fit, starting_model

__all__ = [
    "DEFAULT_MAX_BLOCK",
    "DEFAULT_MIN_SCORE",
    "FIELDS",
    "FIELD_NAMES",
    "KEY_KINDS",
    "BlockingKeyer",
    "Cluster",
    "DuplicateIndex",
    "DuplicateReport",
    "FieldScore",
    "InMemoryKeyStore",
    "InMemoryRecords",
    "KeyStore",
    "Match",
    "Model",
    "Profile",
    "Record",
    "RecordSource",
    "ScoredPair",
    "clusters",
    "compare",
    "duplicates_among",
    "find_duplicates",
    "fit",
    "prepare",
    "starting_model",
]
