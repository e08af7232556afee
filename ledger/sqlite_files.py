"""Owner-only SQLite files: the database and the files SQLite keeps beside it.

SQLite creates a new database file with mode 0644 (less the umask), and gives its -wal,
-shm and -journal files the database file's mode. So the database file is created 0600
here, before SQLite ever opens it, and the side files then follow; side files an older
version left readable are tightened too. Every SQLite file the ledger writes (the event
store with its projections and API tables, and the key store) goes through
`prepare_private_sqlite` first.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from pathlib import Path

from ledger.signing import ensure_private_dir

SIDE_FILES = ("-wal", "-shm", "-journal")


def prepare_private_sqlite(path: Path) -> None:
    """Create `path` (mode 0600, its folder 0700) if missing; make it and any side file
    owner-only."""
    ensure_private_dir(path.parent)
    # O_EXCL: an existing file is never opened here. Closing a descriptor of a database
    # file drops every POSIX lock this process holds on it, including the locks of
    # SQLite connections already open on it (the event store's, when the projections or
    # the API tables open theirs): another process would then think itself the last
    # one and delete the -wal file under them.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with suppress(FileExistsError):
        os.close(os.open(path, flags, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(file, 0o600)
