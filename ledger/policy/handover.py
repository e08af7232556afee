"""Staff departure ("飞单", customers leaving with the salesperson): every customer a departing
owner holds goes to a successor in one audited operation, and the departing principal's
credentials are revoked.

Order matters for the threat: the principal is revoked first (from its next call it is
refused, by every server process: `ledger.api.api_store`), then every owner change and one
`StaffHandover.Performed` record are stored in one transaction, all or nothing. If the
process stops in between, running the handover again finishes it (revoking is idempotent,
customers already moved are not owned by the leaver any more).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from ledger.api.api_store import ApiStore
from ledger.api.tokens import TokenError, check_principal
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import validate_owner
from ledger.domain.text import storable_violations
from ledger.policy.facts import scan_customers

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger.handover")


class StaffHandover(Aggregate):
    """One handover: who left, who took over, which customers moved, when the leaver's
    credentials were revoked. Ids and principal names only."""

    class Performed(Aggregate.Created):
        from_principal: str
        to_principal: str
        customer_ids: list[str]
        revoked_at: str  # ISO-8601, UTC
        actor: str
        reason: str
        personal_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        from_principal: str,
        to_principal: str,
        customer_ids: list[str],
        revoked_at: str,
        actor: str,
        reason: str,
    ) -> None:
        self.from_principal = from_principal
        self.to_principal = to_principal
        self.customer_ids = customer_ids


PERFORMED_TOPIC = get_topic(StaffHandover.Performed)


@dataclass(frozen=True)
class HandoverResult:
    handover_id: UUID
    from_principal: str
    to_principal: str
    customer_ids: tuple[UUID, ...]
    revoked_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "handover_id": str(self.handover_id),
            "from": self.from_principal,
            "to": self.to_principal,
            "customers": [str(c) for c in self.customer_ids],
            "revoked_at": self.revoked_at.isoformat(),
        }


def _check(from_principal: str, to_principal: str, actor: str, reason: str) -> tuple[str, str]:
    violations: list[FieldViolation] = []
    names: list[str] = []
    for name, value in (("from", from_principal), ("to", to_principal)):
        try:
            names.append(check_principal(validate_owner(value)))
        except (TokenError, ValidationFailed):
            violations.append(FieldViolation(name, "not a principal id"))
    if not violations and names[0] == names[1]:
        violations.append(FieldViolation("to", "must differ from the departing principal"))
    if not isinstance(reason, str) or not reason.strip():
        violations.append(FieldViolation("reason", "required: a non-personal reason code"))
    violations += storable_violations((("actor", actor), ("reason", reason)))
    if violations:
        raise ValidationFailed(violations)
    return names[0], names[1]


def hand_over(
    ledger: CustomerLedger,
    api_store: ApiStore,
    from_principal: str,
    to_principal: str,
    *,
    actor: str,
    reason: str,
) -> HandoverResult:
    """Move every live customer owned by `from_principal` to `to_principal` and revoke
    `from_principal`. Erased customers keep their last owner (nothing to hand over); a
    customer merged into another lives on in its survivor, which moves if the leaver owns it."""
    leaver, successor = _check(from_principal, to_principal, actor, reason)
    revoked_at = api_store.revoke(leaver)
    owned = sorted(
        (
            facts.customer_id
            for facts in scan_customers(ledger).values()
            if facts.owner == leaver and not facts.is_erased and not facts.is_merged
        ),
        key=str,
    )
    customers = [ledger.load_metadata(customer_id) for customer_id in owned]
    for customer in customers:
        customer.assign_owner(successor, actor, reason)
    record = StaffHandover._create(
        StaffHandover.Performed,
        id=uuid4(),
        from_principal=leaver,
        to_principal=successor,
        customer_ids=[str(c) for c in owned],
        revoked_at=revoked_at.isoformat(),
        actor=actor,
        reason=reason,
    )
    ledger.save_together(customers, record.collect_events())
    log.info(
        "handover %s: %d customers from %s to %s; %s revoked",
        record.id,
        len(owned),
        leaver,
        successor,
        leaver,
    )
    return HandoverResult(record.id, leaver, successor, tuple(owned), revoked_at)
