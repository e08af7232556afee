"""Duplicate detection: blocking keys, Fellegi-Sunter scoring, index, clusters.

A self-contained engine with no I/O of its own. The projection runner feeds it: on each
registration or change `DuplicateIndex.add` (or `keys_for`, to write key rows itself), on
erasure or merge `remove`; registration calls `lookup` to warn about or refuse likely
duplicates; `ledger duplicates` calls `find_duplicates`.
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
