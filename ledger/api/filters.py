"""A small AIP-160 filter language for the audit listings: comparisons joined by `AND`.

    principal = "sales.uk" AND customer = "customers/…" AND access_time >= "2026-01-01T00:00:00Z"

Values are quoted strings or bare words (`DENIED`). Each listing says which fields it
accepts and with which operators; anything else is INVALID_ARGUMENT with a field violation
on `filter` saying what was wrong (never echoing the value: filters can be typed by people).
OR, NOT, parentheses and functions are not part of this subset and are refused as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ledger.api.errors import ApiError

MAX_FILTER = 1_000
MAX_TERMS = 20
_TERM = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|!=|=|<|>|:)\s*"
    r'(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[A-Za-z0-9_.:/+-]+))\s*'
)
_AND = re.compile(r"AND\s+|AND$")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: str


def invalid(reason: str, field: str = "filter") -> ApiError:
    return ApiError.invalid(field, reason)


def parse_filter(
    text: str, allowed: Mapping[str, frozenset[str]], *, field: str = "filter"
) -> list[Comparison]:
    """The comparisons of `text` (empty: no filter). `allowed`: field name -> operators."""
    if len(text) > MAX_FILTER:
        raise invalid(f"at most {MAX_FILTER} characters", field)
    terms: list[Comparison] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None:
            raise invalid(
                'expected comparisons like `name = "value"` joined by AND '
                f"(at character {position + 1})",
                field,
            )
        name, op = match.group("field"), match.group("op")
        if name not in allowed:
            raise invalid(f"unknown field `{name}`; one of {', '.join(sorted(allowed))}", field)
        if op not in allowed[name]:
            raise invalid(f"`{name}` takes {' '.join(sorted(allowed[name]))}, not `{op}`", field)
        quoted = match.group("quoted")
        value = _ESCAPE.sub(r"\1", quoted) if quoted is not None else match.group("bare")
        terms.append(Comparison(name, op, value))
        if len(terms) > MAX_TERMS:
            raise invalid(f"at most {MAX_TERMS} comparisons", field)
        position = match.end()
        if position < len(text):
            joiner = _AND.match(text, position)
            if joiner is None:
                raise invalid(
                    f"comparisons are joined by AND (at character {position + 1}); "
                    "OR, NOT and parentheses are not supported",
                    field,
                )
            position = joiner.end()
            if position >= len(text):
                raise invalid("a comparison must follow AND", field)
    return terms
