"""Legal holds and contract ends: small audited commands on one customer.

A hold is an event in the customer's own stream (`Customer.LegalHoldPlaced` /
`LegalHoldReleased`), with the actor and a reason code, so who froze whose data and when is
in the tamper-evident history. While held, `Customer.erase` refuses (CustomerOnHold) and
retention skips the customer. The end of a contract is recorded the same way
(`Customer.ContractEnded`): it starts the `end_of_contract` retention periods.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.domain.customer import Customer
from ledger.domain.errors import FieldViolation, ValidationFailed

if TYPE_CHECKING:
    from ledger.application import CustomerLedger


def place_hold(ledger: CustomerLedger, customer_id: UUID, *, actor: str, reason: str) -> bool:
    """True when placed; False when the customer was held already (nothing written)."""
    placed: bool = ledger.run_command(
        customer_id, lambda c: c.place_hold(actor, reason), actor=actor, reason=reason
    )
    return placed


def release_hold(
    ledger: CustomerLedger, customer_id: UUID, *, actor: str, reason: str | None = None
) -> None:
    ledger.run_command(
        customer_id, lambda c: c.release_hold(actor, reason), actor=actor, reason=reason
    )


def is_held(ledger: CustomerLedger, customer_id: UUID) -> bool:
    customer: Customer = ledger.load_metadata(customer_id)
    return customer.legal_hold


def parse_day(text: str, name: str = "ended_on") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed([FieldViolation(name, "not a date (YYYY-MM-DD)")]) from None


def end_contract(
    ledger: CustomerLedger,
    customer_id: UUID,
    ended_on: date,
    *,
    actor: str,
    reason: str | None = None,
) -> bool:
    """Record that the customer's contract ended on `ended_on` (False: already recorded)."""
    day = ended_on.isoformat()
    recorded: bool = ledger.run_command(
        customer_id, lambda c: c.end_contract(day, actor, reason), actor=actor, reason=reason
    )
    return recorded
