"""The Customer aggregate: the only place where the rules about a customer's life live.

Events split their payload into `personal` (encrypted by the store's mapper under the
customer's own key, declared through `personal_attributes`) and readable metadata, so the
rules stay free of any I/O and of any knowledge of cryptography.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.domain.erased import ERASED, ErasedValue
from ledger.domain.errors import (
    CustomerErasedError,
    CustomerMergedError,
    CustomerOnHold,
    FieldViolation,
    HoldRefused,
    MergeRefused,
    ValidationFailed,
)
from ledger.domain.profile import (
    EXTERNAL_ID_PREFIX,
    IDENTIFYING_FIELDS,
    NO_IDENTITY,
    PERSONAL_FIELDS,
    PUBLIC_FIELDS,
    validate_changes,
)

ACTIVE = "active"
ERASED_STATUS = "erased"
MERGED_STATUS = "merged"
# What `merge --take` may name: the survivor takes the merged customer's value as it is.
MERGEABLE_FIELDS: tuple[str, ...] = (*PERSONAL_FIELDS, *PUBLIC_FIELDS)

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

    class DataQualityFlagged(Event):
        """Warnings about a customer's data, e.g. an import kept the row but left an invalid
        value out. Names fields and fixed reasons only, never values, so it stays readable."""

        warnings: list[dict[str, str]]

        def apply(self, aggregate: Customer) -> None:
            aggregate.quality_warnings = [dict(w) for w in self.warnings]

    class MergeAbsorbed(Event):
        """On the survivor: it took values from `source_id`. `personal` holds only the
        survivor's new values (sealed under the survivor's own key: they are its data now);
        its previous values are not repeated here, the aggregate remembers them from its
        own history, which is what lets an unmerge restore them exactly."""

        source_id: str
        personal: PersonalData
        public: dict[str, Any]
        changed_fields: list[str]
        personal_attributes: ClassVar[tuple[str, ...]] = ("personal",)

        def apply(self, aggregate: Customer) -> None:
            record: dict[str, Any] = {"source_id": self.source_id, "personal": ERASED}
            if isinstance(self.personal, dict) and isinstance(aggregate.personal, dict):
                record["personal"] = copy.deepcopy(self.personal)
                record["previous"] = {
                    f: copy.deepcopy(aggregate.personal.get(f)) for f in self.personal
                }
            record["public"] = copy.deepcopy(self.public)
            record["previous_public"] = {
                f: copy.deepcopy(getattr(aggregate, f)) for f in self.public
            }
            _apply_changes(aggregate, self.personal, self.public)
            aggregate.merges.append(record)

    class MergedInto(Event):
        """On the merged customer: it now lives on in `target_id` and is hidden from lists;
        its own data and history stay as they were."""

        target_id: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.status = MERGED_STATUS
            aggregate.merged_into = self.target_id

    class MergeUndone(Event):
        """On the survivor: the values it took from `source_id` are put back as they were
        before the merge. Fields changed since the merge keep their newer value and are
        named in `kept_fields` (a later edit is never silently lost)."""

        source_id: str
        personal: PersonalData
        public: dict[str, Any]
        changed_fields: list[str]
        kept_fields: list[str]
        personal_attributes: ClassVar[tuple[str, ...]] = ("personal",)

        def apply(self, aggregate: Customer) -> None:
            _apply_changes(aggregate, self.personal, self.public)
            for index in range(len(aggregate.merges) - 1, -1, -1):
                if aggregate.merges[index]["source_id"] == self.source_id:
                    del aggregate.merges[index]
                    break

    class Unmerged(Event):
        """On the merged customer: it is a customer of its own again, exactly as before."""

        target_id: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.status = ACTIVE
            aggregate.merged_into = None

    class DuplicateDismissed(Event):
        """On both customers of a pair a person decided are not the same person: they are
        no longer reported as likely duplicates of each other, and the pair is a labelled
        non-match the scoring model learns from. Ids, actor and reason only (no personal
        data), so it stays readable after either customer is erased."""

        other_id: str

    # Data policy: legal holds and the end of the contract (policy-retention) ---------------
    # None carries personal data: a hold's reason is the event's (readable) reason code.

    class LegalHoldPlaced(Event):
        """From now on neither erasure nor retention may destroy this customer's data."""

        def apply(self, aggregate: Customer) -> None:
            aggregate.legal_hold = True

    class LegalHoldReleased(Event):
        def apply(self, aggregate: Customer) -> None:
            aggregate.legal_hold = False

    class ContractEnded(Event):
        """The trigger of `end_of_contract` retention rules: the day the contract ended
        (an ISO date, which may be earlier than the event: recorded after the fact)."""

        ended_on: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.contract_ended_on = self.ended_on

    # Per-category destruction (issue 14) ------------------------------------------------

    class CategoriesErased(Event):
        """Some data categories of the customer were crypto-shredded, the rest kept (e.g.
        contact details due under the retention policy, the name kept for tax law). Holds
        no personal data: which categories and fields, the legal basis, which keys died.
        This event, not the key store, decides that the categories are gone for good."""

        categories: list[str]
        fields: list[str]
        legal_basis: str
        key_ids: dict[str, str]

        def apply(self, aggregate: Customer) -> None:
            erased = getattr(aggregate, "erased_categories", None)
            aggregate.erased_categories = sorted({*(erased or ()), *self.categories})
            if isinstance(aggregate.personal, dict):
                for name in self.fields:
                    if name in aggregate.personal:
                        aggregate.personal[name] = ERASED

    # Consent (data policy) ----------------------------------------------------------------
    # Per purpose of the data policy: given or withdrawn, when (the event's timestamp), and
    # where it came from, as codes only: the channel, the form or its version, and a
    # reference to the proof kept elsewhere. No free text, so no personal data is stored
    # readable here (`personal_attributes` stays empty).

    class ConsentGiven(Event):
        """`bundle`: every purpose asked for in the same act, this one included. PIPL
        Art. 29 and 39 want some purposes consented to on their own: such a consent has a
        bundle of one."""

        purpose: str
        channel: str
        form: str
        proof: str
        bundle: list[str]

        def apply(self, aggregate: Customer) -> None:
            aggregate.consents[self.purpose] = {
                "given": True,
                "at": self.timestamp,
                "channel": self.channel,
                "form": self.form,
                "proof": self.proof,
                "bundle": list(self.bundle),
            }

    class ConsentWithdrawn(Event):
        purpose: str
        channel: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.consents[self.purpose] = {
                "given": False,
                "at": self.timestamp,
                "channel": self.channel,
            }

    def __init__(self, personal: PersonalData, public: dict[str, Any], owner: str | None) -> None:
        self.personal: PersonalData = dict(personal) if isinstance(personal, dict) else ERASED
        self.locale: str | None = public.get("locale")
        self.tags: list[str] = list(public.get("tags") or [])
        self.owner: str | None = owner
        self.verified_at: datetime | None = None
        self.erased_at: datetime | None = None
        self.status: str = ACTIVE
        self.merged_into: str | None = None
        # Merges into this customer still in force, oldest first (undone last-in first-out).
        self.merges: list[dict[str, Any]] = []
        self.quality_warnings: list[dict[str, str]] = []
        self.legal_hold: bool = False
        self.contract_ended_on: str | None = None
        # Data categories destroyed on their own (`CategoriesErased`), sorted.
        self.erased_categories: list[str] = []
        # The latest consent event per purpose (see `ConsentGiven`).
        self.consents: dict[str, dict[str, Any]] = {}

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

    @property
    def is_merged(self) -> bool:
        return self.status == MERGED_STATUS

    def refuse_if_merged(self) -> None:
        if self.is_merged:
            raise CustomerMergedError(self.id, self.merged_into or "another customer")

    def change(self, changes: dict[str, Any], actor: str, reason: str | None) -> list[str]:
        """Apply validated changes (from `validate_changes`); returns the fields that really
        changed. No event when nothing changed, so retries are harmless."""
        self.refuse_if_erased()
        self.refuse_if_merged()
        assert isinstance(self.personal, dict)
        personal_diff, public_diff = self._diff(changes)
        self.refuse_erased_fields(personal_diff)
        after = dict(self.personal)
        _merge(after, personal_diff)
        if not any(_present(after.get(name)) for name in (*IDENTIFYING_FIELDS, "external_ids")):
            raise ValidationFailed([FieldViolation("family_name", NO_IDENTITY)])
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
        self.refuse_if_merged()
        if owner == self.owner:
            return False
        self.trigger_event(
            self.OwnerAssigned, owner=owner, previous_owner=self.owner, actor=actor, reason=reason
        )
        return True

    def mark_verified(self, actor: str, reason: str | None) -> None:
        self.refuse_if_erased()
        self.refuse_if_merged()
        self.trigger_event(self.Verified, actor=actor, reason=reason)

    def erase(
        self,
        actor: str,
        reason: str | None,
        legal_basis: str,
        key_id: str | None,
        *,
        despite_hold: bool = False,
    ) -> None:
        """`despite_hold`: only for re-applying an erasure that already happened (from the
        erasure journal after a restore): the hold cannot undo a destruction done."""
        self.refuse_if_erased()
        if not despite_hold:
            self.refuse_if_held()
        if not legal_basis.strip():
            raise ValidationFailed([FieldViolation("legal_basis", "must not be empty")])
        self.trigger_event(
            self.Erased, actor=actor, reason=reason, legal_basis=legal_basis, key_id=key_id
        )

    # Legal holds and contract end (policy-retention) ------------------------------------

    def refuse_if_held(self) -> None:
        if getattr(self, "legal_hold", False):  # aggregates from older snapshots lack it
            raise CustomerOnHold(self.id)

    def place_hold(self, actor: str, reason: str) -> bool:
        """False when the customer is held already (a retried command writes nothing)."""
        self.refuse_if_erased()
        _require_reason(reason)
        if self.legal_hold:
            return False
        self.trigger_event(self.LegalHoldPlaced, actor=actor, reason=reason)
        return True

    def release_hold(self, actor: str, reason: str | None) -> None:
        self.refuse_if_erased()
        if not self.legal_hold:
            raise HoldRefused(f"customer {self.id} is not under a legal hold")
        self.trigger_event(self.LegalHoldReleased, actor=actor, reason=reason)

    def end_contract(self, ended_on: str, actor: str, reason: str | None) -> bool:
        """`ended_on`: an ISO date (checked by the caller). False when already recorded
        with that date."""
        self.refuse_if_erased()
        if self.contract_ended_on == ended_on:
            return False
        self.trigger_event(self.ContractEnded, ended_on=ended_on, actor=actor, reason=reason)
        return True

    def erase_categories(
        self,
        categories: list[str],
        fields: list[str],
        *,
        actor: str,
        reason: str | None,
        legal_basis: str,
        key_ids: dict[str, str],
        despite_hold: bool = False,
    ) -> None:
        """`categories`/`fields`: resolved by the caller from the classification table
        (`ledger.crypto_shred.category_erasure`); only what is not destroyed yet.
        `despite_hold`: only for re-applying a destruction that already happened (from the
        journal after a restore)."""
        self.refuse_if_erased()
        if not despite_hold:
            self.refuse_if_held()
        if not legal_basis.strip():
            raise ValidationFailed([FieldViolation("legal_basis", "must not be empty")])
        if not categories:
            raise ValidationFailed([FieldViolation("categories", "name at least one category")])
        self.trigger_event(
            self.CategoriesErased,
            categories=sorted(categories),
            fields=sorted(fields),
            legal_basis=legal_basis,
            key_ids=dict(key_ids),
            actor=actor,
            reason=reason,
        )

    def refuse_erased_fields(self, names: Collection[str]) -> None:
        """A destroyed category's key is gone: new values for its fields cannot be sealed
        (and keeping them would undo the destruction's purpose)."""
        if not isinstance(self.personal, dict):
            return
        gone = sorted(n for n in names if isinstance(self.personal.get(n), ErasedValue))
        if gone:
            raise ValidationFailed(
                [
                    FieldViolation(n, "its data category was destroyed; it cannot be set again")
                    for n in gone
                ]
            )

    def flag_quality(self, warnings: list[FieldViolation], actor: str, reason: str | None) -> None:
        """Record validation warnings (field and reason; the values were never kept)."""
        self.refuse_if_erased()
        self.trigger_event(
            self.DataQualityFlagged,
            warnings=[{"field": w.field, "reason": w.reason} for w in warnings],
            actor=actor,
            reason=reason,
        )

    def give_consent(
        self,
        purpose: str,
        *,
        channel: str,
        form: str,
        proof: str,
        bundle: list[str],
        actor: str,
        reason: str | None,
    ) -> None:
        """The caller checked the purpose against the data policy (`ledger.consent`)."""
        self.refuse_if_erased()
        self.refuse_if_merged()
        self.trigger_event(
            self.ConsentGiven,
            purpose=purpose,
            channel=channel,
            form=form,
            proof=proof,
            bundle=list(bundle),
            actor=actor,
            reason=reason,
        )

    def withdraw_consent(
        self, purpose: str, *, channel: str, actor: str, reason: str | None
    ) -> bool:
        """False, and no event, when there is no consent in force to withdraw (a retried
        withdrawal is harmless)."""
        self.refuse_if_erased()
        self.refuse_if_merged()
        if not self.consents.get(purpose, {}).get("given"):
            return False
        self.trigger_event(
            self.ConsentWithdrawn, purpose=purpose, channel=channel, actor=actor, reason=reason
        )
        return True

    # Merging ------------------------------------------------------------------------------

    def absorb(
        self, source: Customer, take: Collection[str], actor: str, reason: str | None
    ) -> list[str]:
        """Take values from `source` (which the caller then marks `merge_into` this one):
        fields named in `take` get the source's value; fields this customer lacks are filled
        in; emails, phones, external ids and tags are united (this customer's win on a
        conflicting external id scheme). Returns the fields that changed."""
        for customer in (self, source):
            customer.refuse_if_erased()
            customer.refuse_if_merged()
        if source.id == self.id:
            raise MergeRefused(f"customer {self.id} cannot be merged into itself")
        unknown = [name for name in take if name not in MERGEABLE_FIELDS]
        if unknown:
            raise ValidationFailed(
                [
                    FieldViolation("take", f"{name[:40]!r} is not a field that can be taken")
                    for name in unknown
                ]
            )
        assert isinstance(self.personal, dict) and isinstance(source.personal, dict)
        missing = [n for n in take if n in PERSONAL_FIELDS and not source.personal.get(n)]
        missing += [n for n in take if n in PUBLIC_FIELDS and not getattr(source, n)]
        if missing:
            raise ValidationFailed(
                [
                    FieldViolation("take", f"customer {source.id} has no {name} to take")
                    for name in missing
                ]
            )
        personal, public = merge_plan(self, source, set(take))
        self.refuse_erased_fields(personal)
        if personal or public:
            validate_changes({**personal, **public})  # the limits (e.g. 20 emails) still hold
        changed = sorted([*personal, *public])
        self.trigger_event(
            self.MergeAbsorbed,
            source_id=str(source.id),
            personal=personal,
            public=public,
            changed_fields=changed,
            actor=actor,
            reason=reason,
        )
        return changed

    def merge_into(self, target_id: UUID, actor: str, reason: str | None) -> None:
        self.refuse_if_erased()
        self.refuse_if_merged()
        self.trigger_event(self.MergedInto, target_id=str(target_id), actor=actor, reason=reason)

    def undo_absorb(
        self, source_id: UUID, actor: str, reason: str | None
    ) -> tuple[list[str], list[str]]:
        """Put back the values this customer had before absorbing `source_id`; returns the
        (restored, kept) fields. Merges are undone last-in first-out, so each undo restores
        exactly the state the merge started from."""
        self.refuse_if_erased()
        self.refuse_if_merged()
        sources = [m["source_id"] for m in self.merges]
        if str(source_id) not in sources:
            raise MergeRefused(f"customer {source_id} is not merged into {self.id}")
        if sources[-1] != str(source_id):
            later = ", ".join(sources[sources.index(str(source_id)) + 1 :])
            raise MergeRefused(
                f"customers were merged into {self.id} after {source_id}: unmerge {later} first"
            )
        record = self.merges[-1]
        assert isinstance(self.personal, dict) and isinstance(record["personal"], dict)
        personal: dict[str, Any] = {}
        public: dict[str, Any] = {}
        kept: list[str] = []
        for name, value in record["personal"].items():
            if isinstance(self.personal.get(name), ErasedValue):
                kept.append(name)  # its category was destroyed since: nothing to put back
            elif self.personal.get(name) == value:
                personal[name] = record["previous"][name]
            else:
                kept.append(name)
        for name, value in record["public"].items():
            if getattr(self, name) == value:
                public[name] = record["previous_public"][name]
            else:
                kept.append(name)
        self.trigger_event(
            self.MergeUndone,
            source_id=str(source_id),
            personal=personal,
            public=public,
            changed_fields=sorted([*personal, *public]),
            kept_fields=sorted(kept),
            actor=actor,
            reason=reason,
        )
        return sorted([*personal, *public]), sorted(kept)

    def unmerge(self, actor: str, reason: str | None) -> UUID:
        """Become a customer of one's own again; returns the customer it was merged into."""
        self.refuse_if_erased()
        if not self.is_merged or self.merged_into is None:
            raise MergeRefused(f"customer {self.id} is not merged into another customer")
        target = UUID(self.merged_into)
        self.trigger_event(self.Unmerged, target_id=self.merged_into, actor=actor, reason=reason)
        return target

    # Labels -------------------------------------------------------------------------------

    def dismiss_duplicate(self, other: Customer, actor: str, reason: str | None) -> None:
        """Record that this customer and `other` are different people (the caller records
        the same on `other`). Only between two active customers: a merged one is hidden
        behind its survivor (dismiss against that), an erased one is gone."""
        for customer in (self, other):
            customer.refuse_if_erased()
            customer.refuse_if_merged()
        if other.id == self.id:
            raise MergeRefused(f"customer {self.id} cannot be dismissed as its own duplicate")
        self.trigger_event(
            self.DuplicateDismissed, other_id=str(other.id), actor=actor, reason=reason
        )


def _require_reason(reason: str | None) -> None:
    if reason is None or not reason.strip():
        raise ValidationFailed([FieldViolation("reason", "a legal hold needs a reason code")])


def _present(value: object) -> bool:
    """A destroyed value was there (it is gone by law, not missing by mistake)."""
    return isinstance(value, ErasedValue) or bool(value)


def _unite(first: list[Any] | None, second: list[Any] | None, key: Any = None) -> list[Any]:
    seen: dict[Any, Any] = {}
    for item in [*(first or []), *(second or [])]:
        seen.setdefault(key(item) if key else item, item)
    return list(seen.values())


def merge_plan(
    target: Customer, source: Customer, take: set[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the survivor's fields become (only the ones that change). Pure."""
    assert isinstance(target.personal, dict) and isinstance(source.personal, dict)
    mine, theirs = target.personal, source.personal
    personal: dict[str, Any] = {}
    for name in PERSONAL_FIELDS:
        value = mine.get(name)
        if name in take:
            value = copy.deepcopy(theirs.get(name))
        elif not value and theirs.get(name):
            value = copy.deepcopy(theirs[name])
        elif name == "emails":
            value = _unite(mine.get(name), theirs.get(name), str.casefold)
        elif name == "phones":
            value = _unite(mine.get(name), theirs.get(name))
        elif name == "external_ids":
            value = {**(theirs.get(name) or {}), **(mine.get(name) or {})}
        if (value or None) != (mine.get(name) or None):
            personal[name] = value
    public: dict[str, Any] = {}
    tags = list(source.tags) if "tags" in take else sorted(set(target.tags) | set(source.tags))
    if tags != target.tags:
        public["tags"] = tags
    wants_locale = "locale" in take or (not target.locale and source.locale)
    if wants_locale and source.locale != target.locale:
        public["locale"] = source.locale
    return personal, public


def _apply_changes(aggregate: Customer, personal: PersonalData, public: dict[str, Any]) -> None:
    """Like a profile change: `None` clears a field; unreadable data stays unreadable."""
    if isinstance(personal, ErasedValue) or isinstance(aggregate.personal, ErasedValue):
        aggregate.personal = ERASED
    else:
        _merge(aggregate.personal, copy.deepcopy(personal))
    for name, value in public.items():
        setattr(aggregate, name, value)


def _merge(personal: dict[str, Any], changes: PersonalData) -> None:
    """`None` in a change means the field was cleared."""
    assert isinstance(changes, dict)
    for name, value in changes.items():
        if value is None:
            personal.pop(name, None)
        else:
            personal[name] = value
