"""Turn command-line text into the field values the domain validates.

Only the shape is decided here (lists, JSON objects, clearing); every rule about what a
valid value is stays in `ledger.domain.profile`, so CLI, imports and API agree.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import ADDRESS_FIELDS

LIST_FIELDS = frozenset({"emails", "phones", "tags"})
JSON_FIELDS = frozenset({"addresses", "external_ids"})
ADDRESS_OPTIONS = ADDRESS_FIELDS


def parse_assignment(text: str) -> tuple[str, Any]:
    """`FIELD=VALUE`; an empty VALUE clears the field."""
    field, sep, raw = text.partition("=")
    field = field.strip()
    if not sep or not field:
        raise ValidationFailed([FieldViolation("--set", "expected FIELD=VALUE")])
    return field, parse_value(field, raw)


def parse_value(field: str, raw: str) -> Any:
    if raw == "":
        return None
    if field in JSON_FIELDS or (field in LIST_FIELDS and raw.lstrip().startswith("[")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ValidationFailed([FieldViolation(field, "must be valid JSON")]) from None
    if field in LIST_FIELDS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def parse_external_ids(items: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for index, item in enumerate(items):
        scheme, sep, value = item.partition(":")
        if not sep or not scheme:
            raise ValidationFailed(
                [FieldViolation(f"external_ids[{index}]", "expected SCHEME:VALUE")]
            )
        result[scheme] = value
    return result


def registration_profile(options: dict[str, Any]) -> dict[str, Any]:
    """Collect the register command's flags into one profile mapping."""
    profile: dict[str, Any] = {}
    for name in ("given_name", "family_name", "birth_date", "locale", "owner"):
        if options.get(name) is not None:
            profile[name] = options[name]
    for flag, name in (("email", "emails"), ("phone", "phones"), ("tag", "tags")):
        if options.get(flag):
            profile[name] = list(options[flag])
    if options.get("external_id"):
        profile["external_ids"] = parse_external_ids(list(options["external_id"]))
    address = {k: options[k] for k in ADDRESS_OPTIONS if options.get(k) is not None}
    if address:
        profile["addresses"] = [address]
    return profile
