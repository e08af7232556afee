"""The Customer aggregate: the only place where the rules about a customer's life live.

Events split their payload into `personal` (encrypted by the store's mapper under the
customer's own key, declared through `personal_attributes`) and readable metadata, so the
rules stay free of any I/O and of any knowledge of cryptography.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.domain.erased import ERASED, ErasedValue
from ledger.domain.errors import CustomerErasedError, FieldViolation, ValidationFailed
from ledger.domain.profile import EXTERNAL_ID_PREFIX, PERSONAL_FIELDS, PUBLIC_FIELDS

ACTIVE = "active"
ERASED_STATUS = "erased"

PersonalData = dict[str, Any] | ErasedValue


def split_profile(profile: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate what identifies a person from readable metadata (locale, tags)."""
    personal = {k: v for k, v in profile.items() if k in PERSONAL_FIELDS}
    public = {k: v for k, v in profile.items() if k in PUBLIC_FIELDS}
    named = {
        k[len(EXTERNAL_ID_PREFIX) :]: v
        for k, v in profile.items()
        if k.startswith(EXTERNAL_ID_PREFIX) and v is not None
    }
    if named:
        personal["external_ids"] = {**(personal.get("external_ids") or {}), **named}
    return personal, public


class Customer(Aggregate):
    """A customer's profile, its owner, its verification and, at the end, its erasure."""

    class Event(Aggregate.Event):
        """Every event says who caused it and, optionally, why (a non-personal reason code).

        `personal_attributes` names the attributes the mapper must encrypt; an event class
        that does not declare it cannot be stored at all (the mapper fails closed).
        """

        actor: str
        reason: str | None
        personal_attributes: ClassVar[tuple[str, ...]] = ()

    class Registered(Event, Aggregate.Created):
        personal: PersonalData
        public: dict[str, Any]
        owner: str | None
        personal_attributes: ClassVar[tuple[str, ...]] = ("personal",)

    class ProfileChanged(Event):
        """Carries only what changed; `None` clears a field. `changed_fields` stays
        readable so auditors can follow a field's history without the key."""

        personal: PersonalData
        public: dict[str, Any]
        changed_fields: list[str]
        personal_attributes: ClassVar[tuple[str, ...]] = ("personal",)

        def apply(self, aggregate: Customer) -> None:
            if isinstance(self.personal, ErasedValue) or isinstance(
                aggregate.personal, ErasedValue
            ):
                aggregate.personal = ERASED
            else:
                _merge(aggregate.personal, self.personal)
            for name, value in self.public.items():
                setattr(aggregate, name, value)

    class OwnerAssigned(Event):
        owner: str
        previous_owner: str | None

        def apply(self, aggregate: Customer) -> None:
            aggregate.owner = self.owner

    class Verified(Event):
        """A review confirmed the data; the event's timestamp is the verification time."""

        def apply(self, aggregate: Customer) -> None:
            aggregate.verified_at = self.timestamp

    class Erased(Event):
        """Holds no personal data: who erased, when, on which legal basis, which key died."""

        legal_basis: str
        key_id: str | None

        def apply(self, aggregate: Customer) -> None:
            aggregate.status = ERASED_STATUS
            aggregate.personal = ERASED
            aggregate.erased_at = self.timestamp

    def __init__(self, personal: PersonalData, public: dict[str, Any], owner: str | None) -> None:
        self.personal: PersonalData = dict(personal) if isinstance(personal, dict) else ERASED
        self.locale: str | None = public.get("locale")
        self.tags: list[str] = list(public.get("tags") or [])
        self.owner: str | None = owner
        self.verified_at: datetime | None = None
        self.erased_at: datetime | None = None
        self.status: str = ACTIVE

    # Commands -----------------------------------------------------------------------------

    @classmethod
    def register(
        cls, customer_id: UUID, profile: dict[str, Any], actor: str, reason: str | None
    ) -> Customer:
        """`profile` must come from `validate_registration`."""
        owner = profile.get("owner")
        personal, public = split_profile(profile)
        return cls._create(
            cls.Registered,
            id=customer_id,
            personal=personal,
            public=public,
            owner=owner,
            actor=actor,
            reason=reason,
        )

    @property
    def is_erased(self) -> bool:
        return self.status == ERASED_STATUS

    def refuse_if_erased(self) -> None:
        if self.is_erased:
            raise CustomerErasedError(self.id)

    def change(self, changes: dict[str, Any], actor: str, reason: str | None) -> list[str]:
        """Apply validated changes (from `validate_changes`); returns the fields that really
        changed. No event when nothing changed, so retries are harmless."""
        self.refuse_if_erased()
        assert isinstance(self.personal, dict)
        personal_diff, public_diff = self._diff(changes)
        after = dict(self.personal)
        _merge(after, personal_diff)
        if not after.get("given_name") and not after.get("family_name"):
            raise ValidationFailed(
                [FieldViolation("family_name", "a customer needs a given_name or a family_name")]
            )
        changed = sorted([*personal_diff, *public_diff])
        if changed:
            self.trigger_event(
                self.ProfileChanged,
                personal=personal_diff,
                public=public_diff,
                changed_fields=changed,
                actor=actor,
                reason=reason,
            )
        return changed

    def _diff(self, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        assert isinstance(self.personal, dict)
        personal: dict[str, Any] = {}
        public: dict[str, Any] = {}
        external_ids = dict(self.personal.get("external_ids") or {})
        for name, value in changes.items():
            if name.startswith(EXTERNAL_ID_PREFIX):
                scheme = name[len(EXTERNAL_ID_PREFIX) :]
                if value is None:
                    external_ids.pop(scheme, None)
                else:
                    external_ids[scheme] = value
            elif name == "external_ids":
                external_ids = dict(value or {})
            elif name in PERSONAL_FIELDS:
                if self.personal.get(name) != value:
                    personal[name] = value
            elif name in PUBLIC_FIELDS:
                current = getattr(self, name)
                if (current or None) != (value or None):
                    public[name] = value
        if external_ids != (self.personal.get("external_ids") or {}):
            personal["external_ids"] = external_ids or None
        return personal, public

    def assign_owner(self, owner: str, actor: str, reason: str | None) -> bool:
        self.refuse_if_erased()
        if owner == self.owner:
            return False
        self.trigger_event(
            self.OwnerAssigned, owner=owner, previous_owner=self.owner, actor=actor, reason=reason
        )
        return True

    def mark_verified(self, actor: str, reason: str | None) -> None:
        self.refuse_if_erased()
        self.trigger_event(self.Verified, actor=actor, reason=reason)

    def erase(self, actor: str, reason: str | None, legal_basis: str, key_id: str | None) -> None:
        self.refuse_if_erased()
        if not legal_basis.strip():
            raise ValidationFailed([FieldViolation("legal_basis", "must not be empty")])
        self.trigger_event(
            self.Erased, actor=actor, reason=reason, legal_basis=legal_basis, key_id=key_id
        )


def _merge(personal: dict[str, Any], changes: PersonalData) -> None:
    """`None` in a change means the field was cleared."""
    assert isinstance(changes, dict)
    for name, value in changes.items():
        if value is None:
            personal.pop(name, None)
        else:
            personal[name] = value
