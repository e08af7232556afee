"""Readable text for people; `--json` callers get `to_json()` dicts instead."""

from __future__ import annotations

import json
from typing import Any

from ledger.domain.profile import PERSONAL_FIELDS as _PERSONAL
from ledger.views import CustomerView, HistoryEntry

ERASED_TEXT = "<erased>"


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) if value else "-"
    if isinstance(value, dict):
        parts = [f"{k}={v}" for k, v in value.items() if v not in (None, "")]
        return "; ".join(parts) if parts else "-"
    return str(value)


def customer_text(view: CustomerView) -> str:
    data = view.to_json()
    lines = [f"customer {data['id']}  (version {data['version']}, {data['status']})"]
    erased = data["personal_data"] == "erased"
    for name, value in data.items():
        if name in ("id", "version", "status", "personal_data"):
            continue
        shown = ERASED_TEXT if erased and value is None and name in _PERSONAL else _value(value)
        lines.append(f"  {name:<13} {shown}")
    return "\n".join(lines)


def history_text(entries: list[HistoryEntry]) -> str:
    lines = []
    for entry in entries:
        head = (
            f"v{entry.version}  {entry.timestamp.isoformat(timespec='seconds')}  "
            f"{entry.event_type:<15} by {entry.actor}"
        )
        if entry.reason:
            head += f"  ({entry.reason})"
        lines.append(head)
        for name, value in entry.details.items():
            lines.append(f"      {name}: {_value(value)}")
        if entry.personal is not None:
            if entry.personal_erased:
                lines.append(f"      personal data: {ERASED_TEXT}")
            else:
                assert isinstance(entry.personal, dict)
                for name, value in entry.personal.items():
                    lines.append(f"      {name}: {_value(value)}")
    return "\n".join(lines)
