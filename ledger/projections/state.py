"""A customer's state as projections see it, and the pure fold from events to it.

Projections cannot load aggregates (a rebuild must depend on the log alone), so they fold
events themselves. This is that fold, written once: the current view stores its result
(sealed), the quality projection derives non-personal facts from it, and other projections
(e.g. the duplicate index) can reuse it.

Rules that keep rebuilds identical to incremental processing:
* an erased customer's state is final (a tombstone): older events that arrive later — a
  worker lagging behind an erasure — are ignored;
* an event at or below the state's version is ignored (already applied);
* personal data that cannot be read (key destroyed) is `None`, and stays `None` until the
  `Erased` event turns the state into a tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.domain.customer import ACTIVE, ERASED_STATUS, MERGED_STATUS, Customer
from ledger.domain.erased import ErasedValue


@dataclass(frozen=True)
class CustomerState:
    customer_id: UUID
    version: int
    status: str  # active | merged | erased
    personal: dict[str, Any] | None  # None: unreadable (key destroyed) or erased
    owner: str | None
    locale: str | None
    tags: list[str]
    merged_into: str | None
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None = None
    erased_at: datetime | None = None

    @property
    def is_erased(self) -> bool:
        return self.status == ERASED_STATUS

    @property
    def country(self) -> str | None:
        """The first address's country: the customer's country for filtering."""
        addresses = (self.personal or {}).get("addresses") or []
        return str(addresses[0].get("country")) if addresses else None

    @classmethod
    def tombstone(
        cls, customer_id: UUID, version: int, created_at: datetime, erased_at: datetime
    ) -> CustomerState:
        return cls(
            customer_id=customer_id,
            version=version,
            status=ERASED_STATUS,
            personal=None,
            owner=None,
            locale=None,
            tags=[],
            merged_into=None,
            created_at=created_at,
            updated_at=erased_at,
            erased_at=erased_at,
        )


def _readable(value: object) -> dict[str, Any] | None:
    """States never mutate values in place (a change replaces a field's whole value), so a
    shallow copy suffices; decoded events are fresh objects no one else holds. A field
    whose category was destroyed (`ERASED`) is simply absent: rows hold no marker for it."""
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if not isinstance(v, ErasedValue)}


def _changed(personal: dict[str, Any] | None, diff: object) -> dict[str, Any] | None:
    """A personal diff (`None` clears a field) applied to readable data, else unreadable."""
    if personal is None or isinstance(diff, ErasedValue) or not isinstance(diff, dict):
        return None
    result = dict(personal)
    for name, value in diff.items():
        if value is None or isinstance(value, ErasedValue):
            result.pop(name, None)
        else:
            result[name] = value
    return result


def fold(state: CustomerState | None, event: Customer.Event) -> CustomerState | None:
    """The state after `event`; the same object when the event changes nothing here."""
    if isinstance(event, Customer.Registered):
        if state is not None:
            return state
        public = event.public or {}
        return CustomerState(
            customer_id=event.originator_id,
            version=event.originator_version,
            status=ACTIVE,
            personal=_readable(event.personal),
            owner=event.owner,
            locale=public.get("locale"),
            tags=list(public.get("tags") or []),
            merged_into=None,
            created_at=event.timestamp,
            updated_at=event.timestamp,
        )
    if state is None or state.is_erased or event.originator_version <= state.version:
        return state
    if isinstance(event, Customer.Erased):
        return CustomerState.tombstone(
            state.customer_id, event.originator_version, state.created_at, event.timestamp
        )
    # Every other event moves version and time; one `replace` per event (it is not cheap).
    changes: dict[str, Any] = {"version": event.originator_version, "updated_at": event.timestamp}
    if isinstance(event, Customer.ProfileChanged | Customer.MergeAbsorbed | Customer.MergeUndone):
        public = dict(event.public or {})
        changes["personal"] = _changed(state.personal, event.personal)
        if "tags" in public:
            changes["tags"] = list(public["tags"] or [])
        if "locale" in public:
            changes["locale"] = public["locale"]
    elif isinstance(event, Customer.CategoriesErased):
        # The destroyed fields leave the state (and so the rows and blocking keys).
        if state.personal is not None:
            changes["personal"] = {
                k: v for k, v in state.personal.items() if k not in set(event.fields)
            }
    elif isinstance(event, Customer.OwnerAssigned):
        changes["owner"] = event.owner
    elif isinstance(event, Customer.Verified):
        changes["verified_at"] = event.timestamp
    elif isinstance(event, Customer.MergedInto):
        changes.update(status=MERGED_STATUS, merged_into=event.target_id)
    elif isinstance(event, Customer.Unmerged):
        changes.update(status=ACTIVE, merged_into=None)
    # An event kind this fold does not know changes only version and time.
    return replace(state, **changes)
