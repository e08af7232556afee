"""AuditService: the log in order, one customer's events, its past states, one field's
history, the Merkle log's signed tree heads and proofs, the access log and its alerts.

Auditors get every event's metadata; personal data only with a role that reads it. Replay
decodes events without unsealing them when the caller may not see personal data, so an
auditor's replay never even opens a customer's key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import get_topic

from ledger.api import convert
from ledger.api.access import AccessAttempt, AuthenticationRefusal
from ledger.api.access_listing import AccessListing
from ledger.api.customer_access import CustomerAccess
from ledger.api.errors import ApiError, renamed
from ledger.api.paging import decode_token, encode_token, page_size
from ledger.api.proofs_api import Proofs
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.audit.access_log import AccessRecord
from ledger.audit.read_alerts import AccessAlert
from ledger.consent.reads import masked_record
from ledger.domain.customer import Customer
from ledger.domain.erased import ErasedValue
from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS, PUBLIC_FIELDS
from ledger.policy.handover import StaffHandover
from ledger.policy.log import DataPolicy
from ledger.v1 import audit_service_pb2 as pb
from ledger.v1 import resources_pb2
from ledger.views import HistoryEntry

STREAM_BATCH = 500
FOLLOW_POLL_SECONDS = 0.2
HISTORY_FIELDS = (*PERSONAL_FIELDS, *PUBLIC_FIELDS, "owner")
PDS = resources_pb2.PersonalDataState


def _event_classes() -> list[type]:
    """Every event type that can be in the log; new aggregates add theirs here."""
    customer_events = [
        c for c in vars(Customer).values() if isinstance(c, type) and issubclass(c, Customer.Event)
    ]
    return [
        *customer_events,
        AccessAttempt.Denied,
        AuthenticationRefusal.Refused,
        AccessRecord.Recorded,
        AccessAlert.Raised,
        DataPolicy.Adopted,
        DataPolicy.Applied,
        StaffHandover.Performed,
    ]


EVENT_TOPICS: dict[str, str] = {cls.__name__: get_topic(cls) for cls in _event_classes()}


class AuditService:
    def __init__(self, ledger: CustomerLedger, stopping: threading.Event) -> None:
        self.ledger = ledger
        self.access = CustomerAccess(ledger)
        self.stopping = stopping
        self.proofs = Proofs(ledger)
        self.listing = AccessListing(ledger)

    # Replay -------------------------------------------------------------------------------

    def StreamEvents(
        self, request: pb.StreamEventsRequest, call: Call
    ) -> Iterator[pb.StreamEventsResponse]:
        if request.start_position < 0:
            raise ApiError.invalid("start_position", "must not be negative")
        topics = []
        for index, name in enumerate(request.event_types):
            if name not in EVENT_TOPICS:
                raise ApiError.invalid(f"event_types[{index}]", "not an event type of the log")
            topics.append(EVENT_TOPICS[name])
        show = call.grant.may_read_personal_anywhere
        decode = self._decoder(show)
        position = max(request.start_position, 1) - 1  # the last position already sent
        recorder = self.ledger.recorder
        while True:
            call.check_credentials()  # nothing is read, recorded or sent for a dead credential
            batch = recorder.select_notifications(
                start=position, limit=STREAM_BATCH, topics=topics, inclusive_of_start=False
            )
            if batch:
                events = [
                    convert.event_message(decode(n), position=n.id, show_personal=show)
                    for n in batch
                ]
                self._record(call, events)
                yield pb.StreamEventsResponse(events=events)
                position = batch[-1].id
            caught_up = len(batch) < STREAM_BATCH
            if caught_up and (not request.follow or not self._wait_for_more(call)):
                return

    def _decoder(self, show_personal: bool) -> Callable[[Notification], Any]:
        mapper = self.ledger.mapper
        if show_personal:
            return mapper.to_domain_event
        return lambda notification: Mapper.to_domain_event(mapper, notification)

    def _wait_for_more(self, call: Call) -> bool:
        """Following the log: poll until the caller leaves, the server stops or the
        caller's credential expires or is revoked (then TokenError: UNAUTHENTICATED)."""
        if self.stopping.wait(FOLLOW_POLL_SECONDS):
            return False
        call.check_credentials()
        return call.context.is_active()

    @staticmethod
    def _record(call: Call, events: list[resources_pb2.LedgerEvent]) -> None:
        """Mask what the call's purpose may not see of each event's personal data, then
        record what is sent, and what was masked and why."""
        ids = {UUID(e.stream_id) for e in events if e.HasField("personal_data")}
        masks = call.masks(ids) if ids else {}
        for event in events:
            hidden = masks.get(UUID(event.stream_id), {}) if event.HasField("personal_data") else {}
            for field in hidden:
                if field in event.personal_data.fields:
                    del event.personal_data.fields[field]
        customers = sorted(convert.customer_name(c) for c in ids)
        fields = {f for e in events for f in convert.personal_fields_in_event(e)}
        masked = masked_record({c: h for c, h in masks.items() if h}, ids)
        call.record_access(customers, sorted(fields), masked)

    # One customer's history -------------------------------------------------------------------

    def ListCustomerEvents(
        self, request: pb.ListCustomerEventsRequest, call: Call
    ) -> pb.ListCustomerEventsResponse:
        customer_id = convert.parse_name(request.parent, "parent")
        size = page_size(request.page_size, default=100, maximum=1000)
        after = decode_token(request.page_token, "ListCustomerEvents", request.parent)
        view = self.access.load(call, customer_id)
        show = call.grant.may_read_personal(view.owner)
        found = [
            e
            for e in self.ledger.events.get(customer_id, gt=after, limit=size + 1)
            if isinstance(e, Customer.Event)
        ]
        page = found[:size]
        events = [convert.event_message(e, show_personal=show) for e in page]
        self._record(call, events)
        token = ""
        if len(found) > size:
            token = encode_token("ListCustomerEvents", request.parent, page[-1].originator_version)
        return pb.ListCustomerEventsResponse(events=events, next_page_token=token)

    def GetCustomerAsOf(
        self, request: pb.GetCustomerAsOfRequest, call: Call
    ) -> resources_pb2.Customer:
        customer_id = convert.parse_name(request.name)
        point = request.WhichOneof("point")
        if point is None:
            raise ApiError.invalid("point", "give exactly one of version or read_time")
        self.access.load(call, customer_id)  # the record-level check (current owner)
        try:
            if point == "version":
                past = self.ledger.as_of(customer_id, version=request.version)
            else:
                at = convert.from_timestamp(request.read_time, "read_time")
                past = self.ledger.as_of(customer_id, at=at)
        except ValidationFailed as error:
            names = {"time": "read_time", "as_of": "point"}
            raise renamed(error, lambda f: names.get(f, f)) from None
        mask = request.read_mask if request.HasField("read_mask") else None
        return self.access.respond(call, past, mask)

    def GetFieldHistory(
        self, request: pb.GetFieldHistoryRequest, call: Call
    ) -> pb.GetFieldHistoryResponse:
        customer_id = convert.parse_name(request.name)
        if request.field not in HISTORY_FIELDS:
            raise ApiError.invalid("field", f"must be one of {', '.join(HISTORY_FIELDS)}")
        size = page_size(request.page_size, default=100, maximum=1000)
        query = f"{request.name}|{request.field}"
        offset = decode_token(request.page_token, "GetFieldHistory", query)
        view = self.access.load(call, customer_id)
        show = call.grant.may_read_personal(view.owner)
        hidden: dict[str, str] = {}
        if show and request.field in PERSONAL_FIELDS:
            reason = call.masks([customer_id])[customer_id].get(request.field)
            hidden = {request.field: reason} if reason else {}
            show = not hidden  # masked for this purpose: shown as to a caller without the role
        history = self.ledger.history(customer_id)
        if not show:  # what the caller may not see cannot shape the answer (see field_changes)
            history = [_sealed(entry) for entry in history]
        changes = field_changes(history, request.field, show)
        page = changes[offset : offset + size]
        if request.field in PERSONAL_FIELDS and any(
            c.value_state == PDS.PERSONAL_DATA_STATE_AVAILABLE for c in page
        ):
            call.record_access([convert.customer_name(customer_id)], [request.field])
        elif hidden:
            call.record_access(
                [convert.customer_name(customer_id)], [], masked_record({customer_id: hidden})
            )
        token = ""
        if offset + size < len(changes):
            token = encode_token("GetFieldHistory", query, offset + size)
        return pb.GetFieldHistoryResponse(changes=page, next_page_token=token)

    # Tamper evidence (ledger.api.proofs_api) -------------------------------------------------

    def GetTreeHead(self, request: pb.GetTreeHeadRequest, call: Call) -> pb.TreeHead:
        return self.proofs.tree_head(request)

    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, call: Call
    ) -> pb.GetInclusionProofResponse:
        return self.proofs.inclusion(request)

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, call: Call
    ) -> pb.GetConsistencyProofResponse:
        return self.proofs.consistency(request)

    # The access log and its alerts (ledger.api.access_listing) ----------------------------------

    def ListAccessLog(
        self, request: pb.ListAccessLogRequest, call: Call
    ) -> pb.ListAccessLogResponse:
        return self.listing.list_access_log(request)

    def ListAccessAlerts(
        self, request: pb.ListAccessAlertsRequest, call: Call
    ) -> pb.ListAccessAlertsResponse:
        return self.listing.list_access_alerts(request)


def _sealed(entry: HistoryEntry) -> HistoryEntry:
    """The entry as a caller who may not read personal data knows it: without its personal
    data (an erased one stays erased: erasure is public)."""
    if isinstance(entry.personal, ErasedValue):
        return entry
    return replace(entry, personal=None)


def field_changes(
    history: list[HistoryEntry], field: str, show_personal: bool
) -> list[pb.FieldChange]:
    """Every event that set, changed, cleared or erased `field`, oldest first, read from the
    events' readable metadata (`changed_fields`, owner) and, where allowed, their personal
    data. A registration whose personal data cannot be read (erased, or hidden from the
    caller) is listed as a change whose value is REDACTED or ERASED, whatever it held: whether
    it set the field is sealed with the value, so a caller who may not see the value must
    not learn it from whether the registration is listed."""
    personal_field = field in PERSONAL_FIELDS
    changes = []
    for entry in history:
        kind = entry.event_type
        if kind == "Registered":
            if not personal_field:
                touched = bool(entry.details.get(field))
            elif show_personal and isinstance(entry.personal, dict):
                touched = field in entry.personal
            else:
                touched = True
        elif kind in ("ProfileChanged", "MergeAbsorbed", "MergeUndone"):
            touched = field in (entry.details.get("changed_fields") or [])
        elif kind == "OwnerAssigned":
            touched = field == "owner"
        elif kind == "Erased":
            touched = personal_field
        else:
            touched = False
        if touched:
            changes.append(_change(entry, field, personal_field, show_personal))
    return changes


def _change(
    entry: HistoryEntry, field: str, personal_field: bool, show_personal: bool
) -> pb.FieldChange:
    change = pb.FieldChange(
        version=entry.version,
        event_type=entry.event_type,
        change_time=convert.timestamp(entry.timestamp),
        actor=entry.actor,
        reason=entry.reason or "",
    )
    if not personal_field:
        change.value_state = PDS.PERSONAL_DATA_STATE_AVAILABLE
        change.value.CopyFrom(convert.value(entry.details.get(field)))
    elif entry.event_type == "Erased" or isinstance(entry.personal, ErasedValue):
        change.value_state = PDS.PERSONAL_DATA_STATE_ERASED
        change.value.CopyFrom(convert.value(None))
    elif not show_personal or not isinstance(entry.personal, dict):
        change.value_state = PDS.PERSONAL_DATA_STATE_REDACTED
    else:
        change.value_state = PDS.PERSONAL_DATA_STATE_AVAILABLE
        change.value.CopyFrom(convert.value(entry.personal.get(field)))
    return change
