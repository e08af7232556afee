"""Operations: backups, restores and restore drills (`ledger backup`, `ledger restore`).

SQLite ledgers are snapshotted with SQLite's online backup API (`snapshot`); PostgreSQL
ledgers are backed up by pgBackRest with WAL archiving (`pgbackrest`). Both end a restore in
`restore._after_restore`, the one place that makes a restored ledger current again: it
records a signed restore statement (`restore_statement.record_restore`) and opens the
ledger, which replays the erasure journal before anything is served.
"""

from ledger.operations.restore_statement import (
    JournalStatus,
    RestoreStatement,
    journal_status,
    record_restore,
)

__all__ = ["JournalStatus", "RestoreStatement", "journal_status", "record_restore"]
