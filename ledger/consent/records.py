"""Consents as they stand, read from the customer's own events.

Read straight from the log on every call (consent events are small and carry no personal
data, so no key is needed): a withdrawal takes effect on the very next read, with no cache
to go stale in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from ledger.domain.customer import Customer

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

GIVEN_TOPIC = get_topic(Customer.ConsentGiven)
WITHDRAWN_TOPIC = get_topic(Customer.ConsentWithdrawn)
CONSENT_TOPICS = frozenset({GIVEN_TOPIC, WITHDRAWN_TOPIC})


@dataclass(frozen=True)
class ConsentEntry:
    """One consent event: given or withdrawn, when, through which channel, with which form
    (or version) and proof reference, and the purposes asked for in the same act."""

    purpose: str
    given: bool
    at: datetime
    channel: str
    actor: str
    version: int
    form: str = ""
    proof: str = ""
    bundle: tuple[str, ...] = ()
    reason: str | None = None

    @classmethod
    def of(cls, event: Customer.ConsentGiven | Customer.ConsentWithdrawn) -> ConsentEntry:
        given = isinstance(event, Customer.ConsentGiven)
        return cls(
            purpose=event.purpose,
            given=given,
            at=event.timestamp,
            channel=event.channel,
            actor=event.actor,
            version=event.originator_version,
            form=event.form if isinstance(event, Customer.ConsentGiven) else "",
            proof=event.proof if isinstance(event, Customer.ConsentGiven) else "",
            bundle=tuple(event.bundle) if isinstance(event, Customer.ConsentGiven) else (),
            reason=event.reason,
        )

    @property
    def separate(self) -> bool:
        """Given on its own, not bundled with other purposes (PIPL's separate consent)."""
        return self.given and self.bundle == (self.purpose,)

    def to_json(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "state": "given" if self.given else "withdrawn",
            "at": self.at.isoformat(),
            "channel": self.channel,
            "form": self.form,
            "proof": self.proof,
            "bundle": list(self.bundle),
            "separate": self.separate,
            "actor": self.actor,
            "reason": self.reason,
            "version": self.version,
        }


def consent_history(events: Iterable[object]) -> list[ConsentEntry]:
    """Every consent event among a customer's events, oldest first."""
    return [
        ConsentEntry.of(event)
        for event in events
        if isinstance(event, Customer.ConsentGiven | Customer.ConsentWithdrawn)
    ]


def in_force(history: Iterable[ConsentEntry]) -> dict[str, ConsentEntry]:
    """The latest entry per purpose (given or withdrawn)."""
    latest: dict[str, ConsentEntry] = {}
    for entry in history:
        latest[entry.purpose] = entry
    return latest


def read_history(ledger: CustomerLedger, customer_id: UUID) -> list[ConsentEntry]:
    """A customer's consent events, decoded without its key (they carry no personal data)."""
    mapper = ledger.mapper
    return consent_history(
        mapper.to_domain_event(stored)
        for stored in ledger.recorder.select_events(customer_id)
        if stored.topic in CONSENT_TOPICS
    )


def consents_of(
    ledger: CustomerLedger, customer_ids: Iterable[UUID]
) -> Mapping[UUID, dict[str, ConsentEntry]]:
    """The consents in force of many customers (a page read for a consent-based purpose):
    one query for the page on either store (its primary key leads with the customer id),
    instead of one stream read per customer."""
    ids = list(dict.fromkeys(customer_ids))
    stored = _consent_events(ledger.recorder, ids)
    if stored is None:  # another recorder: one stream read per customer
        return {customer_id: in_force(read_history(ledger, customer_id)) for customer_id in ids}
    events: dict[UUID, list[object]] = {customer_id: [] for customer_id in ids}
    for record in stored:
        event = ledger.mapper.to_domain_event(record)
        events.setdefault(UUID(str(event.originator_id)), []).append(event)
    return {customer_id: in_force(consent_history(found)) for customer_id, found in events.items()}


BATCH = 500


def _consent_events(recorder: object, ids: Sequence[UUID]) -> list[StoredEvent] | None:
    """Every consent event of `ids`, per customer in version order; None when the recorder
    is not one of the two stores' (then the caller reads stream by stream)."""
    topics = sorted(CONSENT_TOPICS)
    found: list[StoredEvent] = []
    if isinstance(recorder, PostgresAggregateRecorder):
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) AND topic = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        for start in range(0, len(ids), BATCH):
            with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(statement, (list(ids[start : start + BATCH]), topics))
                found += [
                    StoredEvent(
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                    for row in cursor.fetchall()
                ]
        return found
    if isinstance(recorder, SQLiteAggregateRecorder):
        for start in range(0, len(ids), BATCH):
            chunk = [customer_id.hex for customer_id in ids[start : start + BATCH]]
            query = (
                "SELECT originator_id, originator_version, topic, state "  # noqa: S608
                f"FROM {recorder.events_table_name} "
                f"WHERE originator_id IN ({','.join('?' * len(chunk))}) "
                f"AND topic IN ({','.join('?' * len(topics))}) "
                "ORDER BY originator_id, originator_version"
            )
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, [*chunk, *topics])
                found += [
                    StoredEvent(
                        originator_id=recorder.convert_originator_id(row["originator_id"]),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=row["state"],
                    )
                    for row in cursor.fetchall()
                ]
        return found
    return None
