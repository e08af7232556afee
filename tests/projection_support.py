"""Test support for projections: a trail projection that records every event it is given
(so applying one twice or skipping one is visible) and can crash mid-transaction, and a
raw dump of projection tables for byte-for-byte comparisons."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

from ledger.projections.base import PositionedEvent, Projection, Tombstone
from ledger.projections.store import Tx
from tests.helpers import StoreHandle

PROJECTION_TABLES = (
    "current_view",
    "current_view_tags",
    "current_view_lookup",
    "data_quality",
    "duplicate_keys",
    "duplicate_records",
    "duplicate_labels",
)


class Crash(Exception):
    """Injected between applying a batch and recording the position."""


class Trail(Projection):
    """One row per event applied, keyed by log position: a second application of the same
    event violates the primary key, a skipped one leaves a gap."""

    name = "test_trail"
    description = "every event applied, by position"

    def __init__(self, *, fail_at: int | None = None, exit_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.exit_at = exit_at

    def tables(self) -> Sequence[str]:
        return ("test_trail",)

    def create(self, tx: Tx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS test_trail ("
            " position {bigint} PRIMARY KEY, customer_id TEXT NOT NULL, version {bigint} NOT NULL)"
        )

    def apply(
        self, tx: Tx, events: Sequence[PositionedEvent], *, fresh: Collection[UUID] = ()
    ) -> None:
        tx.executemany(
            "INSERT INTO test_trail (position, customer_id, version) VALUES (?, ?, ?)",
            [(e.position, str(e.customer_id), e.event.originator_version) for e in events],
        )
        reached = [e.position for e in events]
        if self.exit_at is not None and any(p >= self.exit_at for p in reached):
            os._exit(17)  # a crash: no rollback, no commit, no clean-up
        if self.fail_at is not None and any(p >= self.fail_at for p in reached):
            self.fail_at = None
            raise Crash(f"injected after applying up to {reached[-1]}")

    def purge(self, tx: Tx, tombstone: Tombstone) -> None:
        """Holds ids and versions only; nothing personal to purge."""


def dump_tables(store: StoreHandle, tables: Sequence[str] = PROJECTION_TABLES) -> dict[str, Any]:
    """Every row of every table, as stored (bytes stay bytes), in a stable order."""
    dumped = {}
    for table in tables:
        rows = store.execute(f"SELECT * FROM {table}")
        dumped[table] = sorted(
            (tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows),
            key=repr,
        )
    return dumped
