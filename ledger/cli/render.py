"""Readable text for people; `--json` callers get `to_json()` dicts instead.

Every stored value goes through `show` on its way into a line: text stored before the
stored-text rule (or written around it) may hold newlines, escape sequences or
bidirectional overrides, and must neither forge a line nor act on the reader's terminal.
`ledger.cli.common.emit` then spells out whatever else a renderer let through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ledger.domain.profile import PERSONAL_FIELDS as _PERSONAL
from ledger.domain.text import printable
from ledger.views import CustomerView, HistoryEntry

ERASED_TEXT = "<erased>"


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def show(value: object) -> str:
    """One stored value as it may appear on a terminal line."""
    return printable(str(value))


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) if value else "-"
    if isinstance(value, dict):
        parts = [f"{show(k)}={_value(v)}" for k, v in value.items() if v not in (None, "")]
        return "; ".join(parts) if parts else "-"
    return show(value)


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
            f"{show(entry.event_type):<15} by {show(entry.actor)}"
        )
        if entry.reason:
            head += f"  ({show(entry.reason)})"
        lines.append(head)
        for name, value in entry.details.items():
            lines.append(f"      {show(name)}: {_value(value)}")
        if entry.personal is not None:
            if entry.personal_erased:
                lines.append(f"      personal data: {ERASED_TEXT}")
            else:
                assert isinstance(entry.personal, dict)
                for name, value in entry.personal.items():
                    lines.append(f"      {show(name)}: {_value(value)}")
    return "\n".join(lines)


def with_masks(data: dict[str, Any], hidden: Mapping[str, str]) -> dict[str, Any]:
    """A customer's JSON with the fields the read's purpose left out, and why."""
    return {**data, "masked_fields": dict(sorted(hidden.items()))}


def masks_text(text: str, hidden: Mapping[str, str]) -> str:
    if not hidden:
        return text
    masked = ", ".join(f"{name} ({reason})" for name, reason in sorted(hidden.items()))
    return f"{text}\n  masked for this purpose: {masked}"
