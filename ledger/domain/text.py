"""The one rule for text a command stores, and the one way text is shown on a terminal.

Stored text (names, address lines, reasons, legal bases, actors, owners, tags, ids) ends up
in one-line views, `ledger history`, certificates and logs. A newline there forges a line
(a fake "Erased by dpo" entry); an escape sequence (ESC, CSI) moves the cursor, recolours or
hides text on an auditor's terminal; a bidirectional override (U+202E) shows text in another
order than it is stored. None of these has a place in a customer record, so they are
refused on the way in, naming the field, never repeating the value. NUL (which
PostgreSQL text cannot hold at all) and lone surrogates (which UTF-8 cannot) are refused
with them.

Text stored before this rule (or written around it) is still shown safely: every terminal
renderer passes text through `printable`, which spells the same characters out (`\\x1b`,
`\\u202e`) instead of letting the terminal interpret them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ledger.domain.errors import FieldViolation, ValidationFailed

# C0 controls and DEL, C1 controls (CSI is U+009B on its own), the line and paragraph
# separators, lone surrogates.
_OTHER_CONTROL = "\x7f-\x9f\u2028\u2029\ud800-\udfff"
_CONTROL = "\x00-\x1f" + _OTHER_CONTROL
# Bidirectional controls: embeddings and overrides, isolates, marks (LRM, RLM, ALM).
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_CONTROLS = re.compile(f"[{_CONTROL}]")
_BIDIS = re.compile(f"[{_BIDI}]")
_UNSAFE = re.compile(f"[{_CONTROL}{_BIDI}]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_OTHER_CONTROL}{_BIDI}]")

CONTROL_REASON = "must not contain control characters"
BIDI_REASON = "must not contain bidirectional control characters"
NUL_REASON = "must not contain NUL characters"


def problem(text: str) -> str | None:
    """The fixed reason `text` cannot be stored, or None when it can."""
    if _CONTROLS.search(text):
        return CONTROL_REASON
    if _BIDIS.search(text):
        return BIDI_REASON
    return None


def storable_violations(fields: Iterable[tuple[str, object]]) -> list[FieldViolation]:
    """One violation per (field, value) whose value is a string that cannot be stored;
    values that are not strings are left to the field's own checks."""
    found = []
    for field, value in fields:
        if isinstance(value, str):
            reason = problem(value)
            if reason is not None:
                found.append(FieldViolation(field, reason))
    return found


def check_storable(*fields: tuple[str, object]) -> None:
    """Refuse (ValidationFailed naming each field) any text that cannot be stored."""
    violations = storable_violations(fields)
    if violations:
        raise ValidationFailed(violations)


def has_nul(text: str) -> bool:
    """Text no store can hold (PostgreSQL refuses NUL in text): for strings that are not
    stored but are sent to a store as query parameters (filters, names, page cursors)."""
    return "\x00" in text


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every character a terminal could interpret spelled out (`\\x1b`,
    `\\u202e`, a stored newline as `\\x0a`): shown in stored order, on the lines the
    renderer made, colours untouched. `keep_newlines`: for a whole rendered text, whose
    line breaks are the renderer's own (the values in it were made printable already)."""
    pattern = _UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE
    return pattern.sub(_spelled, text)
