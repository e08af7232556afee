"""Exact lookup keys: keyed hashes (HMAC-SHA256, DESIGN invariant 7) of a customer's
emails, phones and external ids, in their canonical forms.

Queries go through the same validation as stored data (`ledger.domain.profile`), so a phone
typed nationally or an email in capitals finds the customer; emails are compared
case-insensitively (casefolded), phones as E.164, external ids exactly per scheme.
"""

from __future__ import annotations

from typing import Any

from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import validate_changes
from ledger.projections.index_key import IndexKey

EMAIL, PHONE, EXTERNAL_ID = "email", "phone", "external_id"


def digests_of(index_key: IndexKey, personal: dict[str, Any]) -> set[bytes]:
    """Every lookup key of one customer's (readable) personal data."""
    found = {index_key.digest(EMAIL, e.casefold()) for e in personal.get("emails") or []}
    found |= {index_key.digest(PHONE, p) for p in personal.get("phones") or []}
    for scheme, value in (personal.get("external_ids") or {}).items():
        found.add(index_key.digest(EXTERNAL_ID, f"{scheme}\x00{value}"))
    return found


def _canonical(field: str, changes: dict[str, Any], region: str | None) -> Any:
    try:
        return validate_changes(changes, default_region=region)
    except ValidationFailed as exc:
        raise ValidationFailed([FieldViolation(field, v.reason) for v in exc.violations]) from None


def email_key(index_key: IndexKey, email: str) -> bytes:
    emails = _canonical("email", {"emails": [email]}, None).get("emails")
    if not emails:
        raise ValidationFailed([FieldViolation("email", "must not be empty")])
    return index_key.digest(EMAIL, str(emails[0]).casefold())


def phone_key(index_key: IndexKey, phone: str, region: str | None) -> bytes:
    phones = _canonical("phone", {"phones": [phone]}, region).get("phones")
    if not phones:
        raise ValidationFailed([FieldViolation("phone", "must not be empty")])
    return index_key.digest(PHONE, str(phones[0]))


def external_id_key(index_key: IndexKey, scheme_and_value: str) -> bytes:
    scheme, sep, value = scheme_and_value.partition(":")
    if not sep or not scheme or not value.strip():
        raise ValidationFailed([FieldViolation("external_id", "expected SCHEME:VALUE")])
    canonical = _canonical("external_id", {"external_ids": {scheme: value}}, None)
    return index_key.digest(EXTERNAL_ID, f"{scheme}\x00{canonical['external_ids'][scheme]}")
