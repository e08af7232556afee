"""Operations: backups, restores and restore drills (`ledger backup`, `ledger restore`).

SQLite ledgers are snapshotted with SQLite's online backup API (`snapshot`); PostgreSQL
ledgers are backed up by pgBackRest with WAL archiving (`pgbackrest`). Both end a restore in
`restore.after_restore`, the one place that makes a restored ledger current again.
"""
