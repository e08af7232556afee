"""Retention: which categories of which customers the policy says must go, and destroying
them.

`plan` is read-only: from the log's readable metadata (`ledger.policy.facts`) and the
current policy it lists each customer and category that is due, the rule that makes it due,
the trigger date and the due date. `apply` destroys what the plan lists, one customer at a
time, each destruction an event in the log and a signed certificate:

- every personal category due (or already destroyed): the whole customer is erased with the
  existing erasure (`CustomerLedger.erase`: key destroyed, derived copies purged, journaled);
- some categories due: the per-category destruction (crypto-shredding one category's key,
  `CategoryDestroyer`) is called with them.

Resumable by construction: the plan is recomputed from the log on every run and a
destruction is in the log before `apply` moves on, so a run that stopped half-way (crash,
Ctrl-C, a lost connection) is finished by running it again, and nothing is ever destroyed
twice. A customer under legal hold is never destroyed: it is listed as held and skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from ledger.crypto_shred.certificate import SignedCertificate
from ledger.domain.errors import (
    CustomerErasedError,
    CustomerOnHold,
    LedgerError,
    ValidationFailed,
)
from ledger.policy.classification import FIELDS, PERSONAL_CATEGORIES
from ledger.policy.facts import CustomerFacts, midnight, scan_customers
from ledger.policy.log import PolicyLog
from ledger.policy.model import Policy, RetentionRule, Trigger

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger.retention")

RETENTION_REASON = "retention"
Progress = Callable[[int, int], None]


class CategoryDestroyer(Protocol):
    """Destroys some categories of one customer (crypto-shredding their key), records it
    in the log and returns the signed certificate (the category-keys service)."""

    def __call__(
        self,
        ledger: CustomerLedger,
        customer_id: UUID,
        categories: list[str],
        *,
        actor: str,
        reason: str,
        legal_basis: str,
    ) -> SignedCertificate: ...


def default_destroyer() -> CategoryDestroyer:
    """The per-category destruction (crypto-shredding one category's key)."""
    from ledger.crypto_shred.category_erasure import destroy_categories

    return destroy_categories


@dataclass(frozen=True)
class DueCategory:
    category: str  # a field's Fides category, e.g. user.contact.email
    fields: tuple[str, ...]
    rule: RetentionRule
    trigger_date: datetime
    due_date: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "fields": list(self.fields),
            "rule": {
                "category": self.rule.category,
                "keep_for_days": self.rule.keep_for_days,
                "after": self.rule.after.value,
                "why": self.rule.why,
            },
            "trigger_date": self.trigger_date.isoformat(),
            "due_date": self.due_date.isoformat(),
        }


@dataclass(frozen=True)
class CustomerDue:
    customer_id: UUID
    categories: tuple[DueCategory, ...]
    whole_customer: bool  # every personal category due or destroyed: erase the customer
    held: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": str(self.customer_id),
            "whole_customer": self.whole_customer,
            "legal_hold": self.held,
            "categories": [due.to_json() for due in self.categories],
        }


@dataclass(frozen=True)
class RetentionPlan:
    now: datetime
    policy_version: int
    customers: tuple[CustomerDue, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.now.isoformat(),
            "policy_version": self.policy_version,
            "customers": [due.to_json() for due in self.customers],
        }


def trigger_of(facts: CustomerFacts, trigger: Trigger) -> datetime | None:
    """When a rule's period starts for this customer; None: it has not started."""
    if trigger is Trigger.REGISTRATION:
        return facts.registered_at
    if trigger is Trigger.LAST_CHANGE:
        return facts.last_change_at
    if trigger is Trigger.LAST_ACTIVITY:
        return facts.last_activity_at or facts.last_change_at
    if facts.contract_ended_on is None:  # END_OF_CONTRACT: never due without the record
        return None
    return midnight(facts.contract_ended_on)


def _categories() -> dict[str, tuple[str, ...]]:
    """Each personal category and the profile fields it holds."""
    return {
        category: tuple(entry.field for entry in FIELDS if entry.category == category)
        for category in dict.fromkeys(PERSONAL_CATEGORIES)
    }


def due_for(facts: CustomerFacts, policy: Policy, now: datetime) -> CustomerDue | None:
    if facts.is_erased:
        return None
    due: list[DueCategory] = []
    for category, fields in _categories().items():
        if category in facts.destroyed:
            continue
        rule = policy.rule_for(category)
        if rule is None:
            continue
        start = trigger_of(facts, rule.after)
        if start is None:
            continue
        deadline = start + timedelta(days=rule.keep_for_days)
        if deadline <= now:
            due.append(DueCategory(category, fields, rule, start, deadline))
    if not due:
        return None
    gone = facts.destroyed | {item.category for item in due}
    return CustomerDue(
        facts.customer_id,
        tuple(due),
        whole_customer=set(PERSONAL_CATEGORIES) <= gone,
        held=facts.legal_hold,
    )


def plan(ledger: CustomerLedger, *, now: datetime | None = None) -> RetentionPlan:
    """What is due at `now` (default: the current time) under the current policy."""
    moment = now or datetime.now(UTC)
    version, policy = PolicyLog(ledger).current()
    facts = scan_customers(ledger)
    dues = [due for f in facts.values() if (due := due_for(f, policy, moment)) is not None]
    # Customers merged into another first: erasing a survivor is refused while customers
    # merged into it still hold their data.
    merged = {f.customer_id for f in facts.values() if f.is_merged}
    dues.sort(key=lambda due: (due.customer_id not in merged, str(due.customer_id)))
    return RetentionPlan(moment, version, tuple(dues))


@dataclass(frozen=True)
class Destruction:
    customer_id: UUID
    categories: tuple[str, ...]
    whole_customer: bool
    certificate: SignedCertificate

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": str(self.customer_id),
            "categories": list(self.categories),
            "whole_customer": self.whole_customer,
            "certificate": json.loads(self.certificate.to_json()),
        }


@dataclass
class RetentionReport:
    policy_version: int
    destroyed: list[Destruction] = field(default_factory=list)
    held: list[UUID] = field(default_factory=list)
    # Partial dues that cannot be destroyed one category at a time: no destroyer given, or a
    # customer with a single key (registered before category keys).
    pending: list[UUID] = field(default_factory=list)
    # Refused for a reason of the customer's state (e.g. customers merged into it alive).
    failed: dict[UUID, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "destroyed": [d.to_json() for d in self.destroyed],
            "held": [str(c) for c in self.held],
            "pending": [str(c) for c in self.pending],
            "failed": {str(c): why for c, why in self.failed.items()},
        }


def legal_basis_of(due: CustomerDue, version: int) -> str:
    rules = sorted({f"{d.rule.category} {d.rule.keep_for_days}d after {d.rule.after.value}"
                    for d in due.categories})  # fmt: skip
    return f"GDPR Art. 5(1)(e) storage limitation; policy v{version} retention: {'; '.join(rules)}"


def apply(
    ledger: CustomerLedger,
    *,
    actor: str,
    now: datetime | None = None,
    destroyer: CategoryDestroyer | None = None,
    progress: Progress | None = None,
    on_destroyed: Callable[[Destruction], None] | None = None,
) -> RetentionReport:
    """Destroy what is due at `now`. `on_destroyed` is called after each destruction is in
    the log (the CLI prints or saves its certificate there)."""
    current = plan(ledger, now=now)
    report = RetentionReport(current.policy_version)
    total = len(current.customers)
    if progress is not None:
        progress(0, total)
    for done, due in enumerate(current.customers, start=1):
        _destroy_one(ledger, due, current.policy_version, actor, destroyer, report, on_destroyed)
        if progress is not None:
            progress(done, total)
    return report


def _destroy_one(
    ledger: CustomerLedger,
    due: CustomerDue,
    version: int,
    actor: str,
    destroyer: CategoryDestroyer | None,
    report: RetentionReport,
    on_destroyed: Callable[[Destruction], None] | None,
) -> None:
    customer_id = due.customer_id
    if due.held:
        report.held.append(customer_id)
        log.info("retention skipped customer %s: legal hold", customer_id)
        return
    categories = [item.category for item in due.categories]
    basis = legal_basis_of(due, version)
    try:
        if due.whole_customer:
            certificate = ledger.erase(
                customer_id, actor=actor, legal_basis=basis, reason=RETENTION_REASON
            )
        elif destroyer is None:  # planning tools and tests: whole customers only
            report.pending.append(customer_id)
            return
        else:
            certificate = destroyer(
                ledger,
                customer_id,
                categories,
                actor=actor,
                reason=RETENTION_REASON,
                legal_basis=basis,
            )
    except CustomerOnHold:  # held since the plan was made
        report.held.append(customer_id)
        return
    except CustomerErasedError:  # erased since the plan was made: nothing left to do
        return
    except ValidationFailed as exc:
        # A customer registered before category keys has one key: its categories cannot
        # go one by one, only all together once every one is due.
        report.pending.append(customer_id)
        log.info("retention left customer %s pending: %s", customer_id, exc)
        return
    except LedgerError as exc:
        report.failed[customer_id] = str(exc)  # domain errors name ids and fields only
        log.warning("retention could not destroy customer %s: %s", customer_id, exc)
        return
    destruction = Destruction(customer_id, tuple(categories), due.whole_customer, certificate)
    report.destroyed.append(destruction)
    log.info("retention destroyed customer %s categories=%s", customer_id, ",".join(categories))
    if on_destroyed is not None:
        on_destroyed(destruction)
