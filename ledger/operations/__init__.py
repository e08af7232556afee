"""Whole-ledger operations: restores from backup and the erasure journal."""

from ledger.operations.restore import (
    JournalStatus,
    RestoreStatement,
    journal_status,
    record_restore,
)

__all__ = ["JournalStatus", "RestoreStatement", "journal_status", "record_restore"]
