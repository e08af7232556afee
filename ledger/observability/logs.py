"""Log lines as JSON objects, one a line, for log shippers (`LEDGER_LOG_FORMAT=json`).

Structured fields travel in a log record's `fields` attribute (`extra={"fields": {...}}`)
and become keys of the object. What callers put there is theirs to keep free of personal
data (the call log holds method, status, latency, principal, peer and request id only);
the message itself goes through the token redaction filter like every other line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from ledger.api import redaction

_OURS = "_ledger_handler"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redaction.redact(record.exc_text)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(log_format: str, *, level: int = logging.INFO) -> None:
    """The process's one stderr handler, in `log_format` (json | text)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)  # configured twice in one process: one handler, not two
    root.addHandler(handler)
    root.setLevel(level)
