"""Flagging a principal that reads far more customers than usual in a short window.

An insider copying the customer base out through a legitimate account looks, call by call,
like normal work; what gives it away is breadth. `ReadRateMonitor` counts, per principal,
the distinct customers whose personal data it received within a sliding window
(LEDGER_READ_ALERT_WINDOW seconds) and raises an alert once that count goes past
LEDGER_READ_ALERT_RATE. The alert is an `AccessAlert.Raised` event in the ledger's own log,
stored in the same transaction as the access record that crossed the threshold, so it is
durable before the read's response is sent and covered by the same tamper evidence.

One alert per principal per window: after an alert, the principal is not flagged again
until a full window has passed (a bulk reader produces one alert a window, not one a read).

An alert holds no personal data: the principal, counts, the window, the first and last read
times and the ids of the customers read (at most MAX_ALERT_CUSTOMERS, the latest).

The monitor counts what this process served; with several API processes in front of one
store each counts its own share (documented in the README as a limit of the rule).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

if TYPE_CHECKING:
    from eventsourcing.application import Application

MAX_ALERT_CUSTOMERS = 1_000
PAGE = 1_000


class AccessAlert(Aggregate):
    """One alert: a principal read more distinct customers than the rate allows."""

    class Raised(Aggregate.Created):
        principal: str
        distinct_customers: int
        threshold: int
        window_seconds: float
        first_access: str  # ISO-8601, UTC
        last_access: str
        customer_ids: list[str]
        personal_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        principal: str,
        distinct_customers: int,
        threshold: int,
        window_seconds: float,
        first_access: str,
        last_access: str,
        customer_ids: list[str],
    ) -> None:
        self.principal = principal
        self.distinct_customers = distinct_customers
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.first_access = first_access
        self.last_access = last_access
        self.customer_ids = customer_ids

    @classmethod
    def raise_alert(cls, **attributes: Any) -> AccessAlert:
        return cls._create(cls.Raised, id=uuid4(), **attributes)


RAISED_TOPIC = get_topic(AccessAlert.Raised)


@dataclass
class _Reads:
    """One principal's reads within the window: customer id -> last read, oldest first."""

    seen: OrderedDict[str, datetime]
    quiet_until: datetime | None = None


class ReadRateMonitor:
    """Thread-safe; `observe` costs O(customers in the call + reads that left the window)."""

    def __init__(self, rate: int, window_seconds: float) -> None:
        self.rate = rate
        self.window = timedelta(seconds=window_seconds)
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._principals: dict[str, _Reads] = {}
        self.raised = 0  # alerts raised since start (the metrics' counter)

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.window_seconds > 0

    def observe(
        self, principal: str, customer_ids: Iterable[str], now: datetime | None = None
    ) -> AccessAlert | None:
        """Count a read; returns the alert (not yet stored) when this read crosses the rate."""
        if not self.enabled:
            return None
        moment = now or datetime.now(UTC)
        with self._lock:
            reads = self._principals.get(principal)
            if reads is None:
                reads = self._principals[principal] = _Reads(OrderedDict())
            seen = reads.seen
            for customer in customer_ids:
                seen[customer] = moment
                seen.move_to_end(customer)
            horizon = moment - self.window
            while seen and next(iter(seen.values())) < horizon:
                seen.popitem(last=False)
            self._forget_idle(moment)
            if len(seen) <= self.rate:
                return None
            if reads.quiet_until is not None and moment < reads.quiet_until:
                return None
            reads.quiet_until = moment + self.window
            self.raised += 1
            first = next(iter(seen.values()))
            latest = list(seen)[-MAX_ALERT_CUSTOMERS:]
            return AccessAlert.raise_alert(
                principal=principal,
                distinct_customers=len(seen),
                threshold=self.rate,
                window_seconds=self.window_seconds,
                first_access=first.isoformat(),
                last_access=moment.isoformat(),
                customer_ids=latest,
            )

    def rearm(self, principal: str) -> None:
        """The alert just raised for `principal` could not be stored: raise it again next."""
        with self._lock:
            reads = self._principals.get(principal)
            if reads is not None:
                reads.quiet_until = None

    def active(self, now: datetime | None = None) -> int:
        """Principals alerted on within the last window (still in their quiet period)."""
        moment = now or datetime.now(UTC)
        with self._lock:
            return sum(
                1
                for reads in self._principals.values()
                if reads.quiet_until is not None and moment < reads.quiet_until
            )

    def _forget_idle(self, moment: datetime) -> None:
        """Drop principals with nothing in the window (keeps memory bounded by activity)."""
        if len(self._principals) < 1_000:
            return
        horizon = moment - self.window
        for name in [
            name
            for name, reads in self._principals.items()
            if (not reads.seen or next(reversed(reads.seen.values())) < horizon)
            and (reads.quiet_until is None or reads.quiet_until < moment)
        ]:
            del self._principals[name]


@dataclass(frozen=True)
class AlertEntry:
    position: int
    alert_id: UUID
    at: datetime
    principal: str
    distinct_customers: int
    threshold: int
    window_seconds: float
    first_access: datetime
    last_access: datetime
    customer_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "alert_id": str(self.alert_id),
            "at": self.at.isoformat(),
            "principal": self.principal,
            "distinct_customers": self.distinct_customers,
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "first_access": self.first_access.isoformat(),
            "last_access": self.last_access.isoformat(),
            "customer_ids": self.customer_ids,
        }


def alert_entry(position: int, event: AccessAlert.Raised) -> AlertEntry:
    return AlertEntry(
        position=position,
        alert_id=event.originator_id,
        at=event.timestamp,
        principal=event.principal,
        distinct_customers=int(event.distinct_customers),
        threshold=int(event.threshold),
        window_seconds=float(event.window_seconds),
        first_access=datetime.fromisoformat(event.first_access),
        last_access=datetime.fromisoformat(event.last_access),
        customer_ids=list(event.customer_ids),
    )


def alerts(
    app: Application[UUID], *, principal: str | None = None, after_position: int = 0
) -> Iterator[AlertEntry]:
    """Alerts in log order (a scan of the log's alert events, which are few)."""
    position = after_position
    while True:
        batch = app.recorder.select_notifications(
            start=position, limit=PAGE, topics=[RAISED_TOPIC], inclusive_of_start=False
        )
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            assert isinstance(event, AccessAlert.Raised)
            if principal is None or event.principal == principal:
                yield alert_entry(notification.id, event)
        if len(batch) < PAGE:
            return
        position = batch[-1].id
