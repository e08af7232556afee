"""The erasure journal: every signed erasure certificate, one JSON line each, in files kept
outside the backed-up databases.

Crypto-shredding makes backups special: a backup of the key store holds the keys of
customers erased after it was taken, and a backup of the event store lacks their Erased
events. Restoring both would bring an erased customer back. The journal is the record a
restore cannot roll back: `erase` appends the certificate to it (and to every configured
copy, e.g. the off-site backup repository's folder) before it returns, and opening the
ledger replays it (`ledger.crypto_shred.replay`) before anything is served.

Each line is `{"certificate": {...}, "signature": "..."}` (what `SignedCertificate.to_json`
holds, compact), so a line is checked with the ledger's public key alone. Appends hold an
exclusive `flock`, are fsynced, and the file is owner-only (0600). A torn last line (a crash
mid-write) is ignored and closed off by the next append. No personal data: certificates hold
ids, times, staff names and legal references only.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ledger.config import Settings
from ledger.crypto_shred.certificate import CertificateFormatError, SignedCertificate
from ledger.signing import fsync_dir

log = logging.getLogger("ledger.erasure_journal")


class JournalWriteFailed(Exception):
    """A certificate could not be appended to one or more journal files. The erasure it
    certifies is committed to the log and its key destroyed all the same; the next start
    of the ledger copies it from the log to the files that lack it."""

    def __init__(self, certificate: SignedCertificate, failures: Sequence[tuple[Path, str]]):
        self.certificate = certificate
        self.failures = list(failures)
        where = "; ".join(f"{path}: {why}" for path, why in failures)
        super().__init__(
            f"the erasure of customer {certificate.certificate.customer_id} is recorded in the "
            f"log and its key is destroyed, but its certificate could not be written to the "
            f"erasure journal ({where}); the next start of the ledger writes it from the log"
        )


# The customer id as `line_of` writes it (sorted-key compact JSON): found without parsing
# the line, so that opening the ledger reads a long journal cheaply. A line the pattern
# misses is parsed in full; one whose customer the log already records as erased needs
# nothing more (a hand-edited line can at worst be skipped, which deleting it does too).
_CUSTOMER_ID = re.compile(
    rb'"customer_id":"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
)


@dataclass
class JournalFile:
    """What one journal file holds, as read: (line number, line, customer id when found
    without parsing) per complete line."""

    path: Path
    lines: list[tuple[int, bytes, str | None]] = field(default_factory=list)
    error: str | None = None  # the file could not be read (None: read, or absent)
    exists: bool = False

    def parse(self, line: bytes) -> SignedCertificate | None:
        try:
            return SignedCertificate.from_json(line)
        except CertificateFormatError:
            return None

    def parsed(self) -> tuple[list[SignedCertificate], list[int]]:
        """(every entry, the numbers of the lines that are not signed certificates)."""
        entries: list[SignedCertificate] = []
        malformed: list[int] = []
        for number, line, _ in self.lines:
            entry = self.parse(line)
            if entry is None:
                malformed.append(number)
            else:
                entries.append(entry)
        return entries, malformed

    def customer_ids(self) -> set[str]:
        found: set[str] = set()
        for _, line, quick in self.lines:
            if quick is not None:
                found.add(quick)
            elif (entry := self.parse(line)) is not None:
                found.add(entry.certificate.customer_id)
        return found


def line_of(signed: SignedCertificate) -> bytes:
    document = {"certificate": signed.certificate.to_dict(), "signature": signed.signature}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def append(paths: Iterable[Path], signed: Sequence[SignedCertificate]) -> None:
    """Append `signed` to every file in `paths`; tries them all, then raises
    `JournalWriteFailed` (for the first certificate) naming each file that failed."""
    if not signed:
        return
    failures: list[tuple[Path, str]] = []
    data = b"".join(line_of(s) for s in signed)
    for path in paths:
        try:
            _append_one(path, data)
        except OSError as exc:
            failures.append((path, exc.strerror or type(exc).__name__))
    if failures:
        raise JournalWriteFailed(signed[0], failures)


def _append_one(path: Path, data: bytes) -> None:
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, 0o600)  # owner-only whatever the umask or an earlier copy left
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # close off a torn line left by a crash
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created:
        fsync_dir(path.parent)


def read(path: Path) -> JournalFile:
    """Every complete line of the file (a torn last line is not an entry yet). Nothing is
    trusted here: signatures are checked by whoever acts on an entry."""
    result = JournalFile(path)
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            data = handle.read()
    except FileNotFoundError:
        return result
    except OSError as exc:
        result.error = exc.strerror or type(exc).__name__
        return result
    result.exists = True
    complete = data[: data.rfind(b"\n") + 1]
    for number, line in enumerate(complete.split(b"\n"), start=1):
        if line.strip():
            found = _CUSTOMER_ID.search(line)
            result.lines.append((number, line, found.group(1).decode() if found else None))
    return result


@dataclass(frozen=True)
class JournalStatus:
    """A summary for operators and the backup commands."""

    path: Path
    entries: int
    last_erased_at: str | None  # the newest certificate's erasure time (ISO-8601 UTC)
    malformed: int
    invalid: int  # entries whose signature does not hold (checked with a public key)
    copies: tuple[tuple[Path, int | None, str | None], ...]  # (path, entries, error)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "entries": self.entries,
            "last_erased_at": self.last_erased_at,
            "malformed_lines": self.malformed,
            "invalid_signatures": self.invalid,
            "error": self.error,
            "copies": [
                {"path": str(path), "entries": entries, "error": error}
                for path, entries, error in self.copies
            ],
        }


def status(paths: Sequence[Path], public_key_pem: str | None = None) -> JournalStatus:
    """Summarise the journal (`paths[0]`) and its copies; with `public_key_pem`, every
    entry's signature is checked too (one Ed25519 verification per entry)."""
    primary = read(paths[0])
    entries, malformed = primary.parsed()
    invalid = 0
    if public_key_pem is not None:
        invalid = sum(1 for entry in entries if not entry.verify(public_key_pem))
    times = [entry.certificate.erased_at for entry in entries]
    copies = []
    for path in paths[1:]:
        copy = read(path)
        copies.append((path, None if copy.error else len(copy.lines), copy.error))
    return JournalStatus(
        path=primary.path,
        entries=len(entries),
        last_erased_at=max(times, key=datetime.fromisoformat) if times else None,
        malformed=len(malformed),
        invalid=invalid,
        copies=tuple(copies),
        error=primary.error,
    )


def journal_status(settings: Settings, public_key_pem: str | None = None) -> JournalStatus:
    """The journal and copies `settings` name (LEDGER_ERASURE_JOURNAL[_COPIES])."""
    return status(settings.erasure_journal_paths, public_key_pem)
