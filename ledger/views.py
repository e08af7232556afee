"""What reads return: plain, typed snapshots of a customer and its history.

Personal data is either a dict of the profile fields or `ERASED`; callers never meet a
half-decrypted value or a crash after erasure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.domain.customer import Customer, PersonalData
from ledger.domain.erased import ErasedValue
from ledger.domain.profile import PERSONAL_FIELDS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def personal_json(personal: PersonalData) -> dict[str, Any]:
    """Erased data is shown as `null` fields plus `personal_data: "erased"`. Fields whose
    data category alone was destroyed are `null` too, and named in `erased_fields` (only
    present when there are some, so other answers keep their shape)."""
    if isinstance(personal, ErasedValue):
        return {"personal_data": "erased", **dict.fromkeys(PERSONAL_FIELDS)}
    shown = {"personal_data": "available", **{k: personal.get(k) for k in PERSONAL_FIELDS}}
    gone = erased_fields(personal)
    if gone:
        shown.update(dict.fromkeys(gone))
        shown["erased_fields"] = gone
    return shown


def erased_fields(personal: PersonalData) -> list[str]:
    """The fields of readable personal data whose category was destroyed."""
    if not isinstance(personal, dict):
        return []
    return sorted(k for k, v in personal.items() if isinstance(v, ErasedValue))


def personal_values_json(personal: dict[str, Any]) -> dict[str, Any]:
    """An event's readable personal data for JSON: a destroyed field becomes "erased"."""
    return {k: "erased" if isinstance(v, ErasedValue) else v for k, v in personal.items()}


@dataclass(frozen=True)
class CustomerView:
    id: UUID
    version: int
    status: str
    personal: PersonalData
    locale: str | None
    tags: list[str]
    owner: str | None
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None
    erased_at: datetime | None
    merged_into: str | None = None  # set while this customer is merged into another

    @classmethod
    def of(cls, customer: Customer) -> CustomerView:
        return cls(
            id=customer.id,
            version=customer.version,
            status=customer.status,
            personal=customer.personal,
            locale=customer.locale,
            tags=list(customer.tags),
            owner=customer.owner,
            created_at=customer.created_on,
            updated_at=customer.modified_on,
            verified_at=customer.verified_at,
            erased_at=customer.erased_at,
            merged_into=customer.merged_into,
        )

    @property
    def is_erased(self) -> bool:
        return isinstance(self.personal, ErasedValue)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "version": self.version,
            "status": self.status,
            **personal_json(self.personal),
            "locale": self.locale,
            "tags": self.tags,
            "owner": self.owner,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "verified_at": _iso(self.verified_at),
            "erased_at": _iso(self.erased_at),
            "merged_into": self.merged_into,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One event as an auditor reads it: metadata always, personal data while the key lives."""

    customer_id: UUID
    version: int
    event_type: str
    timestamp: datetime
    actor: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    personal: PersonalData | None = None

    @classmethod
    def of(cls, event: Customer.Event) -> HistoryEntry:
        attributes = dict(vars(event))
        personal = attributes.pop("personal", None)
        attributes.update(attributes.pop("public", None) or {})
        for name in (
            "originator_id",
            "originator_version",
            "timestamp",
            "actor",
            "reason",
            "originator_topic",
        ):
            attributes.pop(name, None)
        return cls(
            customer_id=event.originator_id,
            version=event.originator_version,
            event_type=type(event).__name__,
            timestamp=event.timestamp,
            actor=event.actor,
            reason=event.reason,
            details=attributes,
            personal=personal,
        )

    @property
    def personal_erased(self) -> bool:
        return isinstance(self.personal, ErasedValue)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "customer_id": str(self.customer_id),
            "version": self.version,
            "event_type": self.event_type,
            "timestamp": _iso(self.timestamp),
            "actor": self.actor,
            "reason": self.reason,
            **self.details,
        }
        if self.personal is not None:
            data["personal"] = (
                "erased"
                if isinstance(self.personal, ErasedValue)
                else personal_values_json(self.personal)
            )
        return data
