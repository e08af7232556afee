"""Purpose-bound reads: what a read for one purpose may show of each customer.

Every path that returns personal data (the API's customer, list, event and export
answers; the CLI's show, list, lookup, history) asks `PurposeReads` which fields to mask
for the declared purpose, masks them, and records in the access log which fields were
masked and why (`masked_record`). The policy is asked for on every read and consents are
read from the log on every read, so a new policy version or a withdrawal governs the next
call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.audit.history import FieldChange, field_history, is_personal
from ledger.consent.basis import masked_fields, resolve
from ledger.consent.records import ConsentEntry, consents_of
from ledger.domain.customer import Customer
from ledger.domain.errors import CustomerNotFound
from ledger.domain.profile import PERSONAL_FIELDS
from ledger.policy.model import Purpose
from ledger.policy.source import PolicySource, policy_for
from ledger.views import CustomerView, HistoryEntry

Masks = Mapping[UUID, Mapping[str, str]]
M = TypeVar("M")


class PurposeReads:
    def __init__(self, ledger: CustomerLedger, policy: PolicySource | None = None) -> None:
        self.ledger = ledger
        self.policy = policy if policy is not None else policy_for(ledger)

    def purpose(self, declared: str) -> Purpose:
        """The policy purpose a read declaring `declared` is judged by (see `resolve`);
        raises PurposeNotInPolicy."""
        return resolve(self.policy.current()[1], declared)

    def masks(self, purpose: Purpose, customer_ids: Iterable[UUID]) -> dict[UUID, dict[str, str]]:
        """Per customer, field -> reason for every field the read must mask. Consents are
        read from the log only when the purpose rests on consent."""
        ids = list(dict.fromkeys(customer_ids))
        consents: Mapping[UUID, Mapping[str, ConsentEntry]] = (
            consents_of(self.ledger, ids) if purpose.needs_consent else {}
        )
        return {
            customer_id: masked_fields(purpose, consents.get(customer_id, {}))
            for customer_id in ids
        }

    # One customer's reads, each recorded (with what was masked and why) before it returns:
    # what `CustomerLedger.read*` do, judged by the declared purpose.

    def read(
        self, customer_id: UUID, *, principal: str, purpose: str, os_user: str = "",
        method: str = "ledger.read",
    ) -> tuple[CustomerView, dict[str, str]]:  # fmt: skip
        """The customer as the purpose may see it, and the masked fields with reasons."""
        view = self.ledger.get(customer_id)
        hidden = self._masks_of(customer_id, purpose)
        self._record(customer_id, principal, purpose, hidden, os_user, method)
        return mask(view, hidden), hidden

    def read_as_of(
        self, customer_id: UUID, *, principal: str, purpose: str, version: int | None = None,
        at: datetime | None = None, os_user: str = "", method: str = "ledger.read_as_of",
    ) -> tuple[CustomerView, dict[str, str]]:  # fmt: skip
        view = self.ledger.as_of(customer_id, version=version, at=at)
        hidden = self._masks_of(customer_id, purpose)
        self._record(customer_id, principal, purpose, hidden, os_user, method)
        return mask(view, hidden), hidden

    def read_history(
        self, customer_id: UUID, *, principal: str, purpose: str, os_user: str = "",
        method: str = "ledger.read_history",
    ) -> tuple[list[HistoryEntry], dict[str, str]]:  # fmt: skip
        entries = self.ledger.history(customer_id)
        hidden = self._masks_of(customer_id, purpose)
        self._record(customer_id, principal, purpose, hidden, os_user, method)
        return [mask(entry, hidden) for entry in entries], hidden

    def read_field_history(
        self, customer_id: UUID, field: str, *, principal: str, purpose: str,
        os_user: str = "", method: str = "ledger.read_field_history",
    ) -> tuple[list[FieldChange], dict[str, str]]:  # fmt: skip
        """A masked personal field's changes keep their times and actors, not their values."""
        events = [e for e in self.ledger.events.get(customer_id) if isinstance(e, Customer.Event)]
        if not events:
            raise CustomerNotFound(customer_id)
        changes = field_history(events, field)
        if not is_personal(field):
            return changes, {}
        hidden = self._masks_of(customer_id, purpose)
        personal_field = "external_ids" if field.startswith("external_id:") else field
        hidden = {personal_field: hidden[personal_field]} if personal_field in hidden else {}
        self._record(customer_id, principal, purpose, hidden, os_user, method, [personal_field])
        if hidden:
            changes = [dataclasses.replace(change, value=None) for change in changes]
        return changes, hidden

    def _masks_of(self, customer_id: UUID, declared: str) -> dict[str, str]:
        return self.masks(self.purpose(declared), [customer_id])[customer_id]

    def _record(
        self,
        customer_id: UUID,
        principal: str,
        purpose: str,
        hidden: Mapping[str, str],
        os_user: str,
        method: str,
        fields: Collection[str] = PERSONAL_FIELDS,
    ) -> None:
        self.ledger.access_log.record(
            principal,
            purpose,
            [customer_id],
            [name for name in fields if name not in hidden],
            method=method,
            os_user=os_user,
            masked=masked_record({customer_id: hidden}),
        )


def mask(item: M, hidden: Collection[str]) -> M:
    """A view, history entry or list record without the hidden personal fields (erased
    ones stay as they are)."""
    personal = getattr(item, "personal", None)
    if not hidden or not isinstance(personal, dict):
        return item
    kept = {name: value for name, value in personal.items() if name not in hidden}
    return dataclasses.replace(item, personal=kept)  # type: ignore[type-var]


def masked_record(
    masks: Masks, customer_ids: Collection[UUID] | None = None
) -> list[dict[str, Any]]:
    """What the access record keeps of the masks: one entry per (field, reason), naming
    the customers only when it applies to some of the read's customers, not all (a page
    read for marketing masks only the customers without consent)."""
    everyone = set(customer_ids if customer_ids is not None else masks)
    grouped: dict[tuple[str, str], set[str]] = {}
    for customer_id, hidden in masks.items():
        for field, reason in hidden.items():
            grouped.setdefault((field, reason), set()).add(str(customer_id))
    entries: list[dict[str, Any]] = []
    for (field, reason), ids in sorted(grouped.items()):
        entry: dict[str, Any] = {"field": field, "reason": reason}
        if ids != {str(c) for c in everyone}:
            entry["customer_ids"] = sorted(ids)
        entries.append(entry)
    return entries


def masked_json(hidden: Mapping[str, str]) -> dict[str, str]:
    """How a masked answer says what it left out (CLI JSON and text)."""
    return dict(sorted(hidden.items()))
