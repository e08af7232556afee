"""SQLite backups: a consistent copy of the event store and the key store through SQLite's
online backup API (readers and writers carry on meanwhile), into a timestamped folder under
every target, with a manifest that lets a restore check what it copies back.

The event store is copied before the key store. A registration that lands between the two
copies then has its key in the backup (a key without events is harmless), never the other
way round (events whose key is missing would read as erased); an erasure that lands between
them has its key destroyed in the key store copy and its Erased event missing from the
event copy, which the erasure journal puts back when the restored ledger is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.config import Settings
from ledger.crypto_shred.keystore import sqlite_key_store_path
from ledger.operations.counts import Counts, count
from ledger.operations.targets import Target
from ledger.signing import ensure_private_dir
from ledger.sqlite_files import SIDE_FILES, prepare_private_sqlite

MANIFEST = "manifest.json"
EVENTS_FILE = "ledger.db"
KEYS_FILE = "keys.db"
_STAMP = "%Y%m%dT%H%M%S%fZ"
_PAGES_PER_STEP = 1024  # the backup API copies this many pages, then lets writers in


class BackupError(Exception):
    """A backup or restore cannot go ahead (the message names the folder or file)."""


class RestoreRefused(BackupError):
    """The restore would replace a ledger, or a running server, without being told to."""


class DamagedBackup(BackupError):
    """A backup's files are not what its manifest describes: nothing was restored."""


@dataclass(frozen=True)
class Snapshot:
    folder: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.manifest["created_at"])

    @property
    def counts(self) -> Counts:
        return Counts(**self.manifest["counts"])

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), **self.manifest}


def store_files(settings: Settings) -> tuple[Path, Path]:
    """The event store file and the key store file of a SQLite ledger."""
    store = settings.store
    keys = sqlite_key_store_path(settings.resolved_key_store_url)
    if store.sqlite_path is None or keys is None:
        raise BackupError(
            "backup: the SQLite backup needs both stores in SQLite files (LEDGER_KEY_STORE "
            "names another kind of store: back it up with that store's own tools)"
        )
    return store.sqlite_path, keys


def _copy_database(source: Path, target: Path, progress: Callable[[int, int], None]) -> None:
    prepare_private_sqlite(target)  # 0600 before SQLite writes a byte
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=_PAGES_PER_STEP, progress=lambda _s, left, total: progress(
            total - left, total))  # fmt: skip
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
    finally:
        dst.close()
        src.close()


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _describe(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        name: {"size": (folder / name).stat().st_size, "sha256": _digest(folder / name)}
        for name in (EVENTS_FILE, KEYS_FILE)
    }


def scratch_settings(settings: Settings, folder: Path, heads: Path | None = None) -> Settings:
    """The live settings pointed at a copy in `folder`: the same secrets (KEK, signing and
    index keys), that copy's two files, and tree heads published beside the copy (so a
    drill never appends to the live published heads)."""
    return replace(
        settings,
        store_url=f"sqlite:///{folder / EVENTS_FILE}",
        key_store_url=f"sqlite:///{folder / KEYS_FILE}",
        data_dir=settings.resolved_data_dir,
        tree_head_dir=heads or folder,
    )


def take(
    settings: Settings,
    targets: list[Target],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[Snapshot]:
    """One snapshot, written to the first target and copied to the others; every folder
    appears complete or not at all (written under a hidden name, then renamed)."""
    events, keys = store_files(settings)
    if not events.exists():
        raise BackupError(f"backup: there is no ledger at {events}")
    started = time.perf_counter()
    created = datetime.now(UTC)
    name = created.strftime(_STAMP)
    first = targets[0].local_path
    ensure_private_dir(first)
    partial = first / f".{name}.partial"
    ensure_private_dir(partial)
    try:
        _copy_database(events, partial / EVENTS_FILE, progress)
        _copy_database(keys, partial / KEYS_FILE, progress)
        counts = count(scratch_settings(settings, partial))
        manifest = {
            "format": 1,
            "kind": "sqlite",
            "created_at": created.isoformat(),
            "seconds": round(time.perf_counter() - started, 3),
            "files": _describe(partial),
            "counts": counts.to_json(),
        }
        _write_private(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        os.replace(partial, first / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    taken = [Snapshot(first / name, manifest)]
    for target in targets[1:]:
        taken.append(_copy_to(taken[0], target.local_path))
    for target in targets:
        prune(target.local_path, settings.backup_retention_full)
    return taken


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _copy_to(snapshot: Snapshot, root: Path) -> Snapshot:
    ensure_private_dir(root)
    partial = root / f".{snapshot.name}.partial"
    ensure_private_dir(partial)
    try:
        for name in (EVENTS_FILE, KEYS_FILE, MANIFEST):
            _copy_private(snapshot.folder / name, partial / name)
        check(Snapshot(partial, snapshot.manifest))
        os.replace(partial, root / snapshot.name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Snapshot(root / snapshot.name, snapshot.manifest)


def _copy_private(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def snapshots(root: Path) -> list[Snapshot]:
    """The complete snapshots under `root`, oldest first; `root` may also be one snapshot
    folder itself."""
    if (root / MANIFEST).is_file():
        return [_load(root)]
    if not root.is_dir():
        return []
    found = [
        _load(folder)
        for folder in sorted(root.iterdir())
        if not folder.name.startswith(".") and (folder / MANIFEST).is_file()
    ]
    return sorted(found, key=lambda s: s.created_at)


def _load(folder: Path) -> Snapshot:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        Snapshot(folder, manifest).created_at  # noqa: B018  (check it parses)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedBackup(f"backup {folder}: unreadable manifest ({exc})") from None
    return Snapshot(folder, manifest)


def prune(root: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` snapshots in `root` (LEDGER_BACKUP_RETENTION_FULL)."""
    old = snapshots(root)[:-keep] if keep > 0 else []
    for snapshot in old:
        shutil.rmtree(snapshot.folder)
    return [s.folder for s in old]


def check(snapshot: Snapshot) -> None:
    """Every file is the one the manifest describes (a truncated or altered copy is
    refused before it replaces anything)."""
    for name, expected in snapshot.manifest["files"].items():
        path = snapshot.folder / name
        if not path.is_file() or _digest(path) != expected["sha256"]:
            raise DamagedBackup(f"backup {snapshot.folder}: {name} does not match its manifest")


def choose(root: Path, before: datetime | None = None) -> Snapshot:
    """The newest snapshot in `root`, or the newest taken at or before `before`."""
    candidates = [s for s in snapshots(root) if before is None or s.created_at <= before]
    if not candidates:
        when = f" taken at or before {before.isoformat()}" if before else ""
        raise BackupError(f"restore: no backup{when} in {root}")
    return candidates[-1]


def copy_out(snapshot: Snapshot, events: Path, keys: Path) -> None:
    """Put the snapshot's two files at `events` and `keys` (owner-only). The old files'
    -wal/-shm are removed first: SQLite would otherwise replay a stale WAL onto the
    restored file."""
    check(snapshot)
    for source, target in ((snapshot.folder / EVENTS_FILE, events),
                           (snapshot.folder / KEYS_FILE, keys)):  # fmt: skip
        ensure_private_dir(target.parent)
        staged = target.with_name(f".{target.name}.restoring")
        staged.unlink(missing_ok=True)
        _copy_private(source, staged)
        for suffix in SIDE_FILES:
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(staged, target)
