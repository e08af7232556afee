"""AuditService end to end: replay of the whole log, one customer's events page by page, past
states, and one field's history."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from uuid import UUID

import grpc

from ledger.api.paging import query_key
from ledger.application import CustomerLedger
from ledger.domain.customer import Customer
from ledger.domain.profile import validate_changes
from ledger.v1 import audit_service_pb2 as audit
from ledger.v1 import resources_pb2
from tests.api_support import Api, api, customer, fails
from tests.helpers import person

__all__ = ["api"]

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState


def fill_log(ledger: CustomerLedger, customers: int, events_each: int) -> list[UUID]:
    """`customers * events_each` events, saved one customer (one transaction) at a time."""
    changes = [validate_changes({"tags": ["odd"]}), validate_changes({"tags": ["even"]})]
    ids = []
    for _ in range(customers):
        customer_id = ledger.register(person(), actor="bulk")
        aggregate = ledger.repository.get(customer_id)
        assert isinstance(aggregate, Customer)
        for n in range(events_each - 1):
            aggregate.change(changes[n % 2], "bulk", None)
        ledger.save(aggregate)
        ids.append(customer_id)
    return ids


def test_stream_events_replays_a_10000_event_log_complete_and_in_order(api: Api) -> None:
    ids = fill_log(api.ledger, customers=20, events_each=500)
    client = api.client("replica", "service")
    seen: dict[str, int] = {}
    positions = []
    reads = []
    for event in client.stream_events():
        if event.event_type == "Recorded":  # the replay's own reads, logged as it streams
            reads.append(event)
            continue
        positions.append(event.position)
        assert event.stream_version == seen.get(event.stream_id, 0) + 1  # per stream in order
        seen[event.stream_id] = event.stream_version
    assert positions == list(range(1, 10_001))
    assert set(seen) == {str(i) for i in ids} and set(seen.values()) == {500}
    assert reads and all(r.position > 10_000 for r in reads)
    # Resuming from a position gives the rest, and the type filter works.
    resumed = [e.position for e in client.stream_events(9_990) if e.event_type != "Recorded"]
    assert resumed == list(range(9_990, 10_001))
    registered = list(client.stream_events(event_types=["Registered"]))
    assert len(registered) == 20 and registered[0].personal_data.fields["given_name"]


def test_stream_events_carries_metadata_and_decrypted_personal_data(api: Api) -> None:
    client = api.client("root", "admin")
    created = client.create_customer(customer(owner="sales.uk"), reason="onboarding")
    client.update_customer(created.name, resources_pb2.Customer(emails=["new@example.org"]))
    client.assign_owner(created.name, "sales.de")
    client.erase_customer(created.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")
    # Every response above carried personal data, so the log also holds their access records.
    events = [e for e in client.stream_events() if e.event_type != "Recorded"]
    assert [e.event_type for e in events] == [
        "Registered",
        "ProfileChanged",
        "OwnerAssigned",
        "Erased",
    ]
    registered, changed, assigned, erased = events
    assert registered.name == f"{created.name}/events/1" and registered.customer == created.name
    assert (
        registered.reason == "onboarding"
        and registered.details.fields["owner"].string_value == "sales.uk"
    )
    assert changed.details.fields["changed_fields"].list_value.values[0].string_value == "emails"
    assert assigned.personal_data_state == PDS.PERSONAL_DATA_STATE_NONE
    assert assigned.details.fields["previous_owner"].string_value == "sales.uk"
    assert erased.details.fields["legal_basis"].string_value == "GDPR Art. 17(1)(a)"
    # After erasure, replay still works and says which personal data is gone.
    assert registered.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
    assert not registered.HasField("personal_data")


def test_stream_events_follow_sends_new_events_until_cancelled(api: Api) -> None:
    client = api.client("replica", "service")
    writer = api.client("crm-sync", "service")
    writer.create_customer(customer())
    request = audit.StreamEventsRequest(start_position=1, follow=True)
    stream = client.audit.StreamEvents(request, metadata=client.metadata)
    received: list[int] = []

    def read() -> None:
        try:
            for response in stream:
                received.extend(e.position for e in response.events if e.event_type == "Registered")
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    writer.create_customer(customer())
    deadline = time.monotonic() + 10
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stream.cancel()
    reader.join(10)
    # Both registrations, in order; access records (of the create responses and of the
    # stream's own reads) sit between them in the log.
    assert len(received) == 2 and received[0] == 1 and received[1] > 2


def test_list_customer_events_pages(api: Api) -> None:
    (customer_id,) = fill_log(api.ledger, customers=1, events_each=25)
    client = api.client("auditor.eve", "auditor")
    name = f"customers/{customer_id}"
    pages = []
    token = ""
    while True:
        response = client.audit.ListCustomerEvents(
            audit.ListCustomerEventsRequest(parent=name, page_size=10, page_token=token),
            **client.call_options,
        )
        pages.append([e.stream_version for e in response.events])
        token = response.next_page_token
        if not token:
            break
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [e.stream_version for e in client.list_customer_events(name)] == list(range(1, 26))
    other = f"customers/{uuid.uuid4()}"
    foreign = audit.ListCustomerEventsRequest(
        parent=other, page_token=response.next_page_token or "eyJ4IjoxfQ"
    )
    details = fails(
        lambda: client.audit.ListCustomerEvents(foreign, **client.call_options),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"page_token"}
    fails(
        lambda: client.audit.ListCustomerEvents(
            audit.ListCustomerEventsRequest(parent=name, page_size=-1), **client.call_options
        ),
        Code.INVALID_ARGUMENT,
    )


def test_forged_page_tokens_are_invalid_argument(api: Api) -> None:
    client = api.client("auditor.eve", "auditor")
    name = api.client("root", "admin").create_customer(customer()).name
    key = query_key("ListCustomerEvents", name)
    forged = [
        json.dumps({"q": key, "p": position}).encode() for position in (10**30, 2**63, -1, True)
    ]
    forged.append(b"[" * 100)  # deeply nested JSON
    for body in forged:
        token = base64.urlsafe_b64encode(body).decode()
        request = audit.ListCustomerEventsRequest(parent=name, page_token=token)
        details = fails(
            lambda r=request: client.audit.ListCustomerEvents(r, **client.call_options),
            Code.INVALID_ARGUMENT,
        )
        assert set(details["field_violations"]) == {"page_token"}
    assert list(client.stream_events(2**63 - 1)) == []


def test_get_customer_as_of_version_and_time(api: Api) -> None:
    client = api.client("root", "admin")
    created = client.create_customer(customer(tags=["first"]))
    between = datetime.now(UTC)
    client.update_customer(
        created.name, resources_pb2.Customer(tags=["second"], given_name="Augusta")
    )
    assert list(client.get_customer_as_of(created.name, version=1).tags) == ["first"]
    at_time = client.get_customer_as_of(created.name, at=between)
    assert (at_time.given_name, at_time.version) == ("Ada", 1)
    assert client.get_customer_as_of(created.name, version=2).given_name == "Augusta"
    details = fails(
        lambda: client.audit.GetCustomerAsOf(
            audit.GetCustomerAsOfRequest(name=created.name), **client.call_options
        ),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"point"}
    fails(lambda: client.get_customer_as_of(created.name, version=0), Code.INVALID_ARGUMENT)
    early = datetime(2000, 1, 1, tzinfo=UTC)
    fails(lambda: client.get_customer_as_of(created.name, at=early), Code.NOT_FOUND)


def test_field_history_follows_changed_fields(api: Api) -> None:
    client = api.client("root", "admin")
    created = client.create_customer(customer(owner="sales.uk"))
    client.update_customer(created.name, resources_pb2.Customer(emails=["two@example.org"]))
    client.update_customer(created.name, resources_pb2.Customer(tags=["vip"]))
    client.update_customer(
        created.name, resources_pb2.Customer(), update_mask=["emails"]
    )  # cleared
    client.assign_owner(created.name, "sales.de")

    emails = client.get_field_history(created.name, "emails")
    assert [(c.version, c.event_type) for c in emails] == [
        (1, "Registered"),
        (2, "ProfileChanged"),
        (4, "ProfileChanged"),
    ]
    assert [v.string_value for v in emails[1].value.list_value.values] == ["two@example.org"]
    assert emails[2].value.HasField("null_value")
    owners = client.get_field_history(created.name, "owner")
    assert [c.value.string_value for c in owners] == ["sales.uk", "sales.de"]

    client.erase_customer(created.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")
    after = client.get_field_history(created.name, "emails")
    assert [c.value_state for c in after] == [PDS.PERSONAL_DATA_STATE_ERASED] * 4
    assert after[-1].event_type == "Erased"
    details = fails(
        lambda: client.get_field_history(created.name, "password"), Code.INVALID_ARGUMENT
    )
    assert set(details["field_violations"]) == {"field"}
