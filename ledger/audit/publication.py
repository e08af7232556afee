"""Publishing signed tree heads outside the database.

A head kept only in the database protects nothing from someone who can rewrite the database:
they delete it, rewrite the log, and the next signature vouches for the forgery. So every
head the ledger signs is first appended to a JSON-lines file (one `TreeHead.to_json()`
object per line, fsynced), which is append-only by convention and meant to be shipped
elsewhere (rsync, cp, a log shipper). The signer only signs a tree that extends the last
published head, and `ledger verify` checks the log against it.

Several processes may sign (the server, CLI commands): appends, and the check-then-sign
step around them, hold an exclusive `flock` on the file, so heads appear in size order.
A torn last line (a crash mid-write) is ignored and closed off by the next append.

The file also holds signed restore statements (`ledger.audit.restores`): after one, the head
a new tree must extend is the newest head at or below the restored size, not the last head
in the file. Finding it reads the whole file, which happens only while a restore statement
is the last line (until the first head after the restore is published).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger.audit import client_check
from ledger.audit.restores import RESTORE_TYPE, RestoreStatement
from ledger.audit.tree_heads import PublicationError, TreeHead, TreeHeadFormatError
from ledger.signing import fsync_dir

TAIL = 64 * 1024  # enough for the last few hundred heads

__all__ = ["PublicationError", "PublishedHeads"]


class PublishedHeads:
    """The append-only publication file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def latest(self, public_key_pem: str | None) -> TreeHead | None:
        """The head the log must extend (None: no file, or no head yet): the last complete
        head in the file, or after a restore statement the newest head at or below the
        restored size; checked to be signed by `public_key_pem` (None: not checked, the
        caller reports it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublicationError(f"cannot read {self.path} ({exc.strerror})") from None
        try:
            return _last_head(fd, self.path, public_key_pem)
        finally:
            os.close(fd)

    def restores(self) -> list[RestoreStatement]:
        """Every restore statement in the file, oldest first (signatures not checked)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PublicationError(f"cannot read {self.path} ({exc.strerror})") from None
        try:
            entries = _all_entries(fd, self.path)
        finally:
            os.close(fd)
        return [e for e in entries if isinstance(e, RestoreStatement)]

    @contextmanager
    def locked(self) -> Iterator[_Locked]:
        """The file, opened for appending and locked against every other signer."""
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PublicationError(f"cannot open {self.path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if created:
                fsync_dir(self.path.parent)
            yield _Locked(fd, self.path)
        finally:
            os.close(fd)  # releases the lock


class _Locked:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def latest(self, public_key_pem: str) -> TreeHead | None:
        return _last_head(self._fd, self.path, public_key_pem)

    def append(self, head: TreeHead) -> None:
        """Append `head` as one line and make it durable before anything relies on it."""
        self.append_json(head.to_json())

    def append_json(self, document: dict[str, object]) -> None:
        line = json.dumps(document, separators=(",", ":")) + "\n"
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            line = "\n" + line  # close off a torn line left by a crash
        data = line.encode("ascii")
        try:
            written = os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            raise PublicationError(f"cannot write {self.path} ({exc.strerror})") from None
        if written != len(data):
            raise PublicationError(f"short write to {self.path}")


Entry = TreeHead | RestoreStatement


def _parse(line: bytes, path: Path) -> Entry:
    try:
        data = json.loads(line)
        if isinstance(data, dict) and data.get("type") == RESTORE_TYPE:
            return RestoreStatement.from_json(data)
        return TreeHead.from_json(data)
    except (ValueError, TreeHeadFormatError, client_check.CheckFailed) as exc:
        raise PublicationError(
            f"a line of {path} is not a tree head or restore statement ({exc})"
        ) from None


def _last_head(fd: int, path: Path, public_key_pem: str | None) -> TreeHead | None:
    size = os.fstat(fd).st_size
    start = max(0, size - TAIL)
    tail = os.pread(fd, size - start, start)
    complete = tail[: tail.rfind(b"\n") + 1]
    lines = [line for line in complete.split(b"\n") if line.strip()]
    if start > 0 and lines:
        lines = lines[1:]  # the first may be cut
    if not lines:
        if size > TAIL:
            raise PublicationError(f"{path} has no complete head in its last {TAIL} bytes")
        return None
    last = _parse(lines[-1], path)
    if isinstance(last, RestoreStatement):
        return _head_after_restores(_all_entries(fd, path), path, public_key_pem)
    _check_signed(last, path, public_key_pem)
    return last


def _all_entries(fd: int, path: Path) -> list[Entry]:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    complete = data[: data.rfind(b"\n") + 1]
    return [_parse(line, path) for line in complete.split(b"\n") if line.strip()]


def _head_after_restores(
    entries: list[Entry], path: Path, public_key_pem: str | None
) -> TreeHead | None:
    """Walking back from the end: each restore statement lowers the bound to its restored
    size; the first head at or below the bound is the one the log must extend."""
    bound: int | None = None
    for entry in reversed(entries):
        if isinstance(entry, RestoreStatement):
            if public_key_pem is not None and not entry.verify(public_key_pem):
                raise PublicationError(
                    f"a restore statement in {path} (restored size {entry.restored_size}) is "
                    "not signed by this ledger's key"
                )
            bound = entry.restored_size if bound is None else min(bound, entry.restored_size)
        elif bound is None or entry.tree_size <= bound:
            _check_signed(entry, path, public_key_pem)
            return entry
    return None


def _check_signed(head: TreeHead, path: Path, public_key_pem: str | None) -> None:
    if public_key_pem is not None and not head.verify(public_key_pem):
        raise PublicationError(
            f"the last head in {path} (size {head.tree_size}) is not signed by this ledger's key"
        )
