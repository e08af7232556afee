"""What retention and handover need to know about every customer, read from the log's
readable metadata only: when it was registered, when its profile last changed, its owner,
status, legal hold, contract end, and which categories are destroyed already.

No key is looked up and nothing personal is decrypted (events are decoded as if erased), so
a plan over a million customers touches no data key. One pass over the customers' events in
log order (paged); a projection can index these facts when the log grows large.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.crypto_shred.mapper import EncryptingMapper
from ledger.domain.customer import ACTIVE, ERASED_STATUS, MERGED_STATUS, Customer

if TYPE_CHECKING:
    from eventsourcing.application import Application

PAGE = 1_000
# Events that change the profile: the `last_change` retention trigger counts from the last.
PROFILE_EVENTS = (
    Customer.Registered,
    Customer.ProfileChanged,
    Customer.MergeAbsorbed,
    Customer.MergeUndone,
)


def customer_topics() -> list[str]:
    return [
        get_topic(kind)
        for kind in vars(Customer).values()
        if isinstance(kind, type) and issubclass(kind, Customer.Event)
    ]


@dataclass
class CustomerFacts:
    customer_id: UUID
    registered_at: datetime
    last_change_at: datetime
    owner: str | None = None
    status: str = ACTIVE
    legal_hold: bool = False
    contract_ended_on: date | None = None
    destroyed: set[str] = field(default_factory=set)
    # No activity records exist yet: `last_activity` falls back to the last change.
    last_activity_at: datetime | None = None

    @property
    def is_erased(self) -> bool:
        return self.status == ERASED_STATUS

    @property
    def is_merged(self) -> bool:
        return self.status == MERGED_STATUS


def _fold(facts: dict[UUID, CustomerFacts], event: Any) -> None:
    customer_id = event.originator_id
    if isinstance(event, Customer.Registered):
        facts[customer_id] = CustomerFacts(
            customer_id, event.timestamp, event.timestamp, owner=event.owner
        )
        return
    found = facts.get(customer_id)
    if found is None:
        return
    if isinstance(event, PROFILE_EVENTS):
        found.last_change_at = event.timestamp
    if isinstance(event, Customer.OwnerAssigned):
        found.owner = event.owner
    elif isinstance(event, Customer.Erased):
        found.status = ERASED_STATUS
    elif isinstance(event, Customer.MergedInto):
        found.status = MERGED_STATUS
    elif isinstance(event, Customer.Unmerged):
        found.status = ACTIVE
    elif isinstance(event, Customer.LegalHoldPlaced):
        found.legal_hold = True
    elif isinstance(event, Customer.LegalHoldReleased):
        found.legal_hold = False
    elif isinstance(event, Customer.ContractEnded):
        found.contract_ended_on = date.fromisoformat(event.ended_on)
    elif isinstance(event, Customer.CategoriesErased):
        found.destroyed.update(event.categories)


def scan_customers(app: Application[UUID]) -> dict[UUID, CustomerFacts]:
    """Every customer's facts as the log says now (erased ones included, marked)."""
    facts: dict[UUID, CustomerFacts] = {}
    for event in _customer_events(app):
        _fold(facts, event)
    return facts


def _customer_events(app: Application[UUID]) -> Iterator[Any]:
    mapper = app.mapper
    assert isinstance(mapper, EncryptingMapper)
    topics = customer_topics()
    position = 0
    while True:
        batch = app.recorder.select_notifications(
            start=position, limit=PAGE, topics=topics, inclusive_of_start=False
        )
        for notification in batch:
            yield mapper.to_domain_event(notification, erased=True)
        if len(batch) < PAGE:
            return
        position = batch[-1].id


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def facts_from(events: Iterable[Any]) -> CustomerFacts | None:
    """One customer's facts from its own events (the subject-access export states the same
    retention dates as `ledger retention plan`)."""
    facts: dict[UUID, CustomerFacts] = {}
    for event in events:
        _fold(facts, event)
    return next(iter(facts.values()), None)
