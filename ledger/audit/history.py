"""One field's history for one customer: every event that set or cleared it, with who and
when. Pure: it reads the customer's (already decrypted) events and nothing else.

Works from the events' readable `changed_fields` and payloads, so after erasure the history
still shows *when* and *by whom* a personal field changed, with its values erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.customer import Customer, PersonalData
from ledger.domain.erased import ERASED, ErasedValue
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import EXTERNAL_ID_PREFIX, PERSONAL_FIELDS, PUBLIC_FIELDS

OWNER = "owner"
HISTORY_FIELDS = (*PERSONAL_FIELDS, *PUBLIC_FIELDS, OWNER)
_ABSENT = object()


def check_field(field: str) -> str:
    """The field's name if it has a history (`external_id:SCHEME` names one external id)."""
    if field in HISTORY_FIELDS:
        return field
    if field.startswith(EXTERNAL_ID_PREFIX) and len(field) > len(EXTERNAL_ID_PREFIX):
        return field
    raise ValidationFailed(
        [FieldViolation("field", f"unknown field; use one of {', '.join(HISTORY_FIELDS)} or "
                        f"{EXTERNAL_ID_PREFIX}SCHEME")]
    )  # fmt: skip


def is_personal(field: str) -> bool:
    return field in PERSONAL_FIELDS or field.startswith(EXTERNAL_ID_PREFIX)


@dataclass(frozen=True)
class FieldChange:
    version: int
    timestamp: datetime
    event_type: str
    actor: str
    reason: str | None
    value: Any  # None: cleared (or never set at registration)
    erased: bool  # the value is personal data whose key has been destroyed

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "timestamp": self.timestamp.isoformat(),
            "event_type": self.event_type,
            "actor": self.actor,
            "reason": self.reason,
            "value": None if self.erased else self.value,
            "erased": self.erased,
        }


def field_history(events: Sequence[Customer.Event], field: str) -> list[FieldChange]:
    field = check_field(field)
    changes: list[FieldChange] = []
    for event in events:
        value = _value_in(event, field)
        if value is _ABSENT:
            continue
        changes.append(
            FieldChange(
                version=event.originator_version,
                timestamp=event.timestamp,
                event_type=type(event).__name__,
                actor=event.actor,
                reason=event.reason,
                value=None if isinstance(value, ErasedValue) else value,
                erased=isinstance(value, ErasedValue),
            )
        )
    return changes


def _value_in(event: Customer.Event, field: str) -> Any:
    if isinstance(event, Customer.Registered):
        if field == OWNER:
            return event.owner
        return _from(event.personal, event.public, field, registered=True)
    if isinstance(event, Customer.ProfileChanged):
        name = "external_ids" if field.startswith(EXTERNAL_ID_PREFIX) else field
        if name not in event.changed_fields:
            return _ABSENT
        value = _from(event.personal, event.public, field, registered=False)
        return None if value is _ABSENT else value
    if isinstance(event, Customer.OwnerAssigned):
        return event.owner if field == OWNER else _ABSENT
    if isinstance(event, Customer.Erased) and is_personal(field):
        return ERASED
    if isinstance(event, Customer.CategoriesErased):
        name = "external_ids" if field.startswith(EXTERNAL_ID_PREFIX) else field
        return ERASED if name in event.fields else _ABSENT
    return _ABSENT


def _from(personal: PersonalData, public: dict[str, Any], field: str, *, registered: bool) -> Any:
    if field in PUBLIC_FIELDS:
        return public.get(field, None if registered else _ABSENT)
    if isinstance(personal, ErasedValue):
        return personal
    if field.startswith(EXTERNAL_ID_PREFIX):
        scheme = field[len(EXTERNAL_ID_PREFIX) :]
        if "external_ids" not in personal:
            return None if registered else _ABSENT
        if isinstance(personal["external_ids"], ErasedValue):
            return personal["external_ids"]
        return (personal["external_ids"] or {}).get(scheme)
    if field in personal:
        return personal[field]
    return None if registered else _ABSENT
