"""ListAccessLog and ListAccessAlerts: the access log and its alerts, read from the ledger's
own log, oldest first, a page at a time, filtered (AIP-160 subset, ledger.api.filters).

The access log holds three kinds of events: `AccessRecord.Recorded` (granted reads of personal
data, outcome GRANTED), `AccessAttempt.Denied` (refusals, outcome DENIED) and
`AuthenticationRefusal.Refused` (refused credentials, outcome DENIED, reason
"UNAUTHENTICATED: <code>", peer and count in `details`). None holds
personal data, so listing them records nothing and needs no customer key: events are
decoded without unsealing.

A page scans at most SCAN_BUDGET events of the log; a sparse filter over a long log may
therefore return a short (even empty) page with a `next_page_token` (AIP-158 allows it), so
no single call runs unbounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic
from google.protobuf import field_mask_pb2

from ledger.api.access import AccessAttempt, AuthenticationRefusal
from ledger.api.convert import customer_name, timestamp
from ledger.api.errors import ApiError
from ledger.api.filters import Comparison, invalid, parse_filter
from ledger.api.paging import decode_token, encode_token, page_size
from ledger.application import CustomerLedger
from ledger.audit.access_log import RECORDED_TOPIC, AccessRecord
from ledger.audit.read_alerts import RAISED_TOPIC, AccessAlert, alert_entry
from ledger.v1 import audit_service_pb2 as pb

DENIED_TOPIC = get_topic(AccessAttempt.Denied)
REFUSED_TOPIC = get_topic(AuthenticationRefusal.Refused)
SCAN_BUDGET = 20_000
BATCH = 1_000
EQUALS = frozenset({"="})
ORDERED = frozenset({"<", "<=", ">", ">="})
ACCESS_FIELDS = {
    "principal": EQUALS,
    "customer": EQUALS,
    "method": EQUALS,
    "purpose": EQUALS,
    "outcome": EQUALS,
    "access_time": ORDERED,
}
ALERT_FIELDS = {"principal": EQUALS}
Outcome = pb.AccessRecord.Outcome

Test = Callable[[pb.AccessRecord], bool]


def _customer_id(value: str) -> str:
    try:
        return str(UUID(value.removeprefix("customers/")))
    except ValueError:
        raise invalid("`customer` must be customers/{id} or a customer id") from None


def _time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("`access_time` must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise invalid("`access_time` needs a UTC offset, e.g. Z")
    return moment


def _test(term: Comparison) -> Test:
    """One comparison as a predicate on a record message (values checked here, once)."""
    value = term.value
    if term.field == "principal":
        return lambda r: r.principal == value
    if term.field == "purpose":
        return lambda r: r.purpose == value
    if term.field == "method":
        short = "/" + value
        return lambda r: r.method == value or r.method.endswith(short)
    if term.field == "customer":
        name = customer_name(_customer_id(value))
        return lambda r: name in r.customers
    if term.field == "outcome":
        if value not in ("GRANTED", "DENIED"):
            raise invalid("`outcome` is GRANTED or DENIED")
        wanted = Outcome.Value(value)
        return lambda r: r.outcome == wanted
    moment = _time(value)
    compare: dict[str, Callable[[datetime, datetime], bool]] = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    check = compare[term.op]
    return lambda r: check(r.access_time.ToDatetime(tzinfo=UTC), moment)


def _topics(terms: list[Comparison]) -> list[str]:
    outcomes = {t.value for t in terms if t.field == "outcome"}
    if outcomes == {"GRANTED"}:
        return [RECORDED_TOPIC]
    if outcomes == {"DENIED"}:
        return [DENIED_TOPIC, REFUSED_TOPIC]
    return [RECORDED_TOPIC, DENIED_TOPIC, REFUSED_TOPIC]


def record_message(position: int, event: Any) -> pb.AccessRecord:
    if isinstance(event, AuthenticationRefusal.Refused):
        refused = pb.AccessRecord(
            position=position,
            access_time=timestamp(event.timestamp),
            principal=event.principal,
            method=event.method,
            outcome=Outcome.DENIED,
            reason=f"UNAUTHENTICATED: {event.reason}",
        )
        refused.details.update({"peer": event.peer, "refusals": event.refusals})
        return refused
    message = pb.AccessRecord(
        position=position,
        access_time=timestamp(event.timestamp),
        principal=event.principal,
        method=event.method,
        customers=[customer_name(c) for c in event.customer_ids],
        purpose=event.purpose,
    )
    if isinstance(event, AccessRecord.Recorded):
        message.outcome = Outcome.GRANTED
        message.fields.extend(event.fields)
        if event.os_user:
            message.details.update({"os_user": event.os_user})
        if event.masked:  # what the data policy left out, and why (ledger.consent.reads)
            message.details.update({"masked": [dict(m) for m in event.masked]})
    else:
        message.outcome = Outcome.DENIED
        message.reason = event.reason
    return message


def _masked(message: pb.AccessRecord, mask: field_mask_pb2.FieldMask | None) -> pb.AccessRecord:
    if mask is None or not mask.paths:
        return message
    trimmed = pb.AccessRecord()
    mask.MergeMessage(message, trimmed)
    return trimmed


class _Scan:
    """(position, event) of the log's events of some topics after a position, decoded
    without unsealing; stops after SCAN_BUDGET events. `complete`: the log's end was reached."""

    def __init__(self, ledger: CustomerLedger, topics: list[str], after: int) -> None:
        self.ledger, self.topics, self.after = ledger, topics, after
        self.complete = False

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        mapper = self.ledger.mapper
        position, scanned = self.after, 0
        while scanned < SCAN_BUDGET:
            batch = self.ledger.recorder.select_notifications(
                start=position, limit=BATCH, topics=self.topics, inclusive_of_start=False
            )
            for notification in batch:
                yield notification.id, Mapper.to_domain_event(mapper, notification)
            scanned += len(batch)
            if len(batch) < BATCH:
                self.complete = True
                return
            position = batch[-1].id


class AccessListing:
    def __init__(self, ledger: CustomerLedger) -> None:
        self.ledger = ledger

    def list_access_log(self, request: pb.ListAccessLogRequest) -> pb.ListAccessLogResponse:
        size = page_size(request.page_size, default=100, maximum=1000)
        terms = parse_filter(request.filter, ACCESS_FIELDS)
        tests = [_test(t) for t in terms]
        mask = request.read_mask if request.HasField("read_mask") else None
        if mask is not None and not mask.IsValidForDescriptor(pb.AccessRecord.DESCRIPTOR):
            raise ApiError.invalid("read_mask", "names a field AccessRecord does not have")
        after = decode_token(request.page_token, "ListAccessLog", request.filter)
        records: list[pb.AccessRecord] = []
        scan = _Scan(self.ledger, _topics(terms), after)
        last, resume = after, None
        for position, event in scan:
            message = record_message(position, event)
            if all(test(message) for test in tests):
                if len(records) == size:
                    resume = records[-1].position
                    break
                records.append(message)
            last = position
        else:
            resume = None if scan.complete else last
        token = "" if resume is None else encode_token("ListAccessLog", request.filter, resume)
        return pb.ListAccessLogResponse(
            records=[_masked(r, mask) for r in records], next_page_token=token
        )

    def list_access_alerts(
        self, request: pb.ListAccessAlertsRequest
    ) -> pb.ListAccessAlertsResponse:
        size = page_size(request.page_size, default=100, maximum=1000)
        principals = {t.value for t in parse_filter(request.filter, ALERT_FIELDS)}
        after = decode_token(request.page_token, "ListAccessAlerts", request.filter)
        alerts: list[pb.AccessAlert] = []
        scan = _Scan(self.ledger, [RAISED_TOPIC], after)
        last, resume = after, None
        for position, event in scan:
            assert isinstance(event, AccessAlert.Raised)
            if all(event.principal == p for p in principals):
                if len(alerts) == size:
                    resume = alerts[-1].position
                    break
                alerts.append(alert_message(position, event))
            last = position
        else:
            resume = None if scan.complete else last
        token = "" if resume is None else encode_token("ListAccessAlerts", request.filter, resume)
        return pb.ListAccessAlertsResponse(alerts=alerts, next_page_token=token)


def alert_message(position: int, event: AccessAlert.Raised) -> pb.AccessAlert:
    entry = alert_entry(position, event)
    message = pb.AccessAlert(
        position=position,
        alert_id=str(entry.alert_id),
        alert_time=timestamp(entry.at),
        principal=entry.principal,
        distinct_customers=entry.distinct_customers,
        threshold=entry.threshold,
        first_access_time=timestamp(entry.first_access),
        last_access_time=timestamp(entry.last_access),
        customers=[customer_name(c) for c in entry.customer_ids],
    )
    message.window.FromNanoseconds(int(entry.window_seconds * 1e9))
    return message
