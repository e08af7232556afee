"""Where the newest successful backup is recorded, for the metrics endpoint.

A backup that succeeds writes `backup-state.json` into the data directory (atomically:
write a temporary file, then rename), a JSON object with at least

    {"last_success": "2026-12-07T22:00:00+00:00"}

(ISO-8601 with a UTC offset). Other keys are ignored here. The server reads it at scrape
time only, so a backup run by another process (cron, `ledger backup`) is seen at once.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

STATE_FILE = "backup-state.json"


def state_file(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def last_backup_timestamp(path: Path) -> float | None:
    """Seconds since the epoch of the newest successful backup; None when none is recorded
    or the file is unreadable (the metric then reads 0: an alert on its age fires)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        moment = datetime.fromisoformat(str(state["last_success"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def record_backup_success(data_dir: Path, moment: datetime | None = None) -> None:
    """Record a successful backup (atomically, owner-only) for the metrics endpoint."""
    path = state_file(data_dir)
    when = (moment or datetime.now(UTC)).astimezone(UTC).isoformat()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"last_success": when}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
