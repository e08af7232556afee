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
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger.audit.tree_heads import PublicationError, TreeHead, TreeHeadFormatError

TAIL = 64 * 1024  # enough for the last few hundred heads

__all__ = ["PublicationError", "PublishedHeads"]


class PublishedHeads:
    """The append-only publication file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def latest(self, public_key_pem: str | None) -> TreeHead | None:
        """The last complete head in the file (None: no file, or no head yet), checked to
        be signed by `public_key_pem` (None: not checked; the caller reports it)."""
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
                _fsync_dir(self.path.parent)
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
        line = json.dumps(head.to_json(), separators=(",", ":")) + "\n"
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
    try:
        head = TreeHead.from_json(json.loads(lines[-1]))
    except (ValueError, TreeHeadFormatError) as exc:
        raise PublicationError(f"the last line of {path} is not a tree head ({exc})") from None
    if public_key_pem is not None and not head.verify(public_key_pem):
        raise PublicationError(
            f"the last head in {path} (size {head.tree_size}) is not signed by this ledger's key"
        )
    return head


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
