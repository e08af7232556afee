"""Access audit through the API, end to end on both stores: every response carrying personal
data is in the access log (who, which method, why, which customers and fields) before the
caller has it; the log is listed page by page and filtered; a principal reading far more
customers than usual is flagged; refusals are recorded too."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc
import pytest
from google.protobuf import field_mask_pb2

from ledger.audit.access_log import RECORDED_TOPIC, AccessRecord
from ledger.audit.storage import AuditStore
from ledger.client import LedgerClient
from ledger.v1 import audit_service_pb2 as audit
from ledger.v1 import resources_pb2
from tests.api_support import Api, api, customer, fails, start_api
from tests.helpers import StoreHandle
from tests.test_cli import run_json

__all__ = ["api"]

Code = grpc.StatusCode
CUSTOMERS = "/ledger.v1.CustomerService/"
AUDIT = "/ledger.v1.AuditService/"
COMPLIANCE = "/ledger.v1.ComplianceService/"


def records(api: Api, filter: str = "") -> list[audit.AccessRecord]:
    return list(api.client("auditor.ann", "auditor").list_access_log(filter))


def test_every_personal_data_response_is_recorded_with_method_principal_purpose_and_ids(
    api: Api,
) -> None:
    admin = api.client("root", "admin")
    name = admin.create_customer(customer(owner="sales.uk")).name
    other = admin.create_customer(customer(given_name="Grace")).name
    crm = api.client("crm-sync", "service", purpose="kyc-refresh")
    compliance = api.client("dpo", "compliance", purpose="dsar-2026-17")

    calls: dict[str, Callable[[], object]] = {
        CUSTOMERS + "GetCustomer": lambda: crm.get_customer(name),
        CUSTOMERS + "ListCustomers": lambda: list(crm.list_customers()),
        CUSTOMERS + "UpdateCustomer": lambda: crm.update_customer(
            name, resources_pb2.Customer(emails=["ada@example.net"])
        ),
        CUSTOMERS + "AssignOwner": lambda: crm.assign_owner(name, "sales.de"),
        CUSTOMERS + "MarkVerified": lambda: crm.mark_verified(name),
        AUDIT + "GetCustomerAsOf": lambda: crm.get_customer_as_of(name, version=1),
        AUDIT + "GetFieldHistory": lambda: crm.get_field_history(name, "emails"),
        AUDIT + "ListCustomerEvents": lambda: list(crm.list_customer_events(name)),
        AUDIT + "StreamEvents": lambda: list(crm.stream_events()),
    }
    for method, call in calls.items():
        before = records(api, f'principal = "crm-sync" AND method = "{method}"')
        call()
        after = records(api, f'principal = "crm-sync" AND method = "{method}"')
        assert len(after) == len(before) + 1, method
        record = after[-1]
        assert record.outcome == audit.AccessRecord.GRANTED
        assert record.purpose == "kyc-refresh"
        assert name in record.customers, method
        assert record.fields, method
    # The stream names every customer whose personal data it carried.
    streamed = records(api, f'method = "{AUDIT}StreamEvents"')[-1]
    assert {name, other} <= set(streamed.customers)
    assert "given_name" in streamed.fields and "emails" in streamed.fields

    compliance.export_customer_data(name)
    (export,) = records(api, 'principal = "dpo"')
    assert export.method == COMPLIANCE + "ExportCustomerData"
    assert (list(export.customers), export.purpose) == ([name], "dsar-2026-17")
    assert "given_name" in export.fields

    # A read mask narrows the recorded fields to what was sent.
    crm.get_customer(name, read_mask=["emails", "tags"])
    assert list(records(api, 'principal = "crm-sync"')[-1].fields) == ["emails"]


def test_responses_without_personal_data_are_not_recorded(api: Api) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    crm = api.client("crm-sync", "service")
    auditor = api.client("auditor.ann", "auditor")
    before = len(records(api))
    crm.get_field_history(name, "tags")  # not a personal field
    crm.get_customer(name, read_mask=["tags", "owner"])
    auditor.get_customer(name)  # masked for auditors: no personal data sent
    list(auditor.list_customer_events(name))
    auditor.get_tree_head()
    assert len(records(api)) == before


def test_the_record_is_committed_before_the_caller_has_the_response(
    api: Api, store: StoreHandle
) -> None:
    admin = api.client("root", "admin")
    names = [admin.create_customer(customer()).name for _ in range(5)]
    reader = api.client("crm-sync", "service")
    for name in names:
        reader.get_customer(name)
        # Straight away, through a connection of its own, the store holds the record.
        with AuditStore.open(store.settings) as other, other.snapshot():
            last = list(other.events(after=0))[-1]
        assert last.topic == RECORDED_TOPIC
        assert name.removeprefix("customers/").encode() in last.state
        assert b"crm-sync" in last.state and b"GetCustomer" in last.state


def test_concurrent_reads_are_each_recorded(api: Api) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    clients = [api.client(f"svc-{n}", "service") for n in range(8)]
    errors: list[BaseException] = []

    def read(client: LedgerClient) -> None:
        try:
            for _ in range(5):
                client.get_customer(name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    got = records(api, f'method = "GetCustomer" AND customer = "{name}"')
    assert sorted(r.principal for r in got) == sorted(
        f"svc-{n}" for n in range(8) for _ in range(5)
    )


def test_denied_attempts_are_listed_as_denied(api: Api) -> None:
    bobs = api.client("root", "admin").create_customer(customer(owner="sales.bob")).name
    alice = api.client("sales.alice", "sales", purpose="prospecting")
    fails(lambda: alice.get_customer(bobs), Code.PERMISSION_DENIED)
    fails(lambda: list(alice.list_access_log()), Code.PERMISSION_DENIED)
    denied = records(api, "outcome = DENIED")
    assert [(r.principal, r.method) for r in denied] == [
        ("sales.alice", CUSTOMERS + "GetCustomer"),
        ("sales.alice", AUDIT + "ListAccessLog"),
    ]
    assert list(denied[0].customers) == [bobs] and denied[0].reason
    assert denied[0].purpose == "prospecting" and not denied[0].fields
    assert all(r.outcome == audit.AccessRecord.GRANTED for r in records(api, "outcome = GRANTED"))


# ListAccessLog: paging and filters -----------------------------------------------------------


@pytest.fixture
def busy(api: Api) -> Iterator[tuple[Api, list[str]]]:
    admin = api.client("root", "admin")
    names = [admin.create_customer(customer()).name for _ in range(3)]
    alice = api.client("alice", "service", purpose="billing")
    bob = api.client("bob", "service", purpose="support")
    for n in range(7):
        alice.get_customer(names[n % 2])
    for _ in range(5):
        bob.get_customer_as_of(names[2], version=1)
    yield api, names


def test_list_access_log_pages_with_tokens(busy: tuple[Api, list[str]]) -> None:
    api, _ = busy
    client = api.client("auditor.ann", "auditor")
    everything = records(api)
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = client.audit.ListAccessLog(
            audit.ListAccessLogRequest(page_size=4, page_token=token), **client.call_options
        )
        assert len(page.records) <= 4
        seen += [r.position for r in page.records]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [r.position for r in everything] and seen == sorted(seen)
    assert pages == -(-len(everything) // 4)
    # A token belongs to its filter.
    first = client.audit.ListAccessLog(
        audit.ListAccessLogRequest(page_size=1, filter='principal = "alice"'),
        **client.call_options,
    )
    details = fails(
        lambda: client.audit.ListAccessLog(
            audit.ListAccessLogRequest(
                page_token=first.next_page_token, filter='principal = "bob"'
            ),
            **client.call_options,
        ),
        Code.INVALID_ARGUMENT,
    )
    assert "page_token" in details["field_violations"]


def test_list_access_log_filters(busy: tuple[Api, list[str]]) -> None:
    api, names = busy
    alice = records(api, 'principal = "alice"')
    assert len(alice) == 7 and {r.purpose for r in alice} == {"billing"}
    assert len(records(api, f'customer = "{names[0]}"')) == 4 + 1  # + the admin's create
    bare = names[2].removeprefix("customers/")
    assert len(records(api, f'customer = "{bare}" AND principal = "bob"')) == 5
    assert len(records(api, 'method = "GetCustomerAsOf"')) == 5
    assert len(records(api, f'method = "{AUDIT}GetCustomerAsOf" AND purpose = "support"')) == 5
    assert records(api, 'principal = "alice" AND principal = "bob"') == []
    middle = alice[3].access_time.ToJsonString()
    later = records(api, f'principal = "alice" AND access_time >= "{middle}"')
    assert [r.position for r in later] == [r.position for r in alice[3:]]
    masked = list(
        api.client("auditor.ann", "auditor").list_access_log(
            'principal = "bob"', read_mask=["principal", "customers"]
        )
    )
    assert masked[0].principal == "bob" and not masked[0].method and not masked[0].position


@pytest.mark.parametrize(
    "bad",
    [
        'principal ~ "x"',
        'colour = "red"',
        'principal = "a" OR principal = "b"',
        'NOT principal = "a"',
        '(principal = "a")',
        'principal = "a" AND',
        'principal = "unterminated',
        'customer = "not-a-customer"',
        "outcome = MAYBE",
        'access_time >= "yesterday"',
        'access_time = "2026-01-01T00:00:00Z"',
        'access_time > "2026-01-01T00:00:00"',
        "x" * 1001,
    ],
)
def test_bad_filters_are_invalid_argument_naming_the_filter(api: Api, bad: str) -> None:
    client = api.client("auditor.ann", "auditor")
    details = fails(lambda: list(client.list_access_log(bad)), Code.INVALID_ARGUMENT)
    assert set(details["field_violations"]) == {"filter"}
    details = fails(lambda: list(client.list_access_alerts(bad)), Code.INVALID_ARGUMENT)
    assert set(details["field_violations"]) == {"filter"}


def test_bad_page_sizes_and_masks_are_invalid_argument(api: Api) -> None:
    client = api.client("auditor.ann", "auditor")
    for request, field in (
        (audit.ListAccessLogRequest(page_size=-1), "page_size"),
        (audit.ListAccessLogRequest(page_token="garbage"), "page_token"),
        (
            audit.ListAccessLogRequest(read_mask=field_mask_pb2.FieldMask(paths=["nope"])),
            "read_mask",
        ),
    ):
        details = fails(
            lambda r=request: client.audit.ListAccessLog(r, **client.call_options),
            Code.INVALID_ARGUMENT,
        )
        assert field in details["field_violations"]


# Read-rate alerts -------------------------------------------------------------------------------


@pytest.fixture
def watched(store: StoreHandle) -> Iterator[Api]:
    settings = replace(store.settings, read_alert_rate=3, read_alert_window_seconds=3600)
    started = start_api(store, settings)
    try:
        yield started
    finally:
        started.close()


def test_alert_fires_past_the_rate_and_not_below(watched: Api, store: StoreHandle) -> None:
    api = watched
    admin = api.client("root", "admin")  # creates: responses to admin, counted for admin
    names = [admin.create_customer(customer(given_name=f"P{n}")).name for n in range(6)]
    auditor = api.client("auditor.ann", "auditor")
    admin_alerts = list(auditor.list_access_alerts('principal = "root"'))
    assert len(admin_alerts) == 1  # its own 4th distinct customer crossed the rate

    reader = api.client("crm-sync", "service")
    for name in names[:3]:
        reader.get_customer(name)
    for _ in range(5):  # the same customers again: still 3 distinct
        reader.get_customer(names[0])
    assert list(auditor.list_access_alerts('principal = "crm-sync"')) == []

    reader.get_customer(names[3])  # the 4th distinct customer: past the rate of 3
    # The alert is in the log as soon as the response that crossed the threshold is back.
    (alert,) = auditor.list_access_alerts('principal = "crm-sync"')
    assert (alert.distinct_customers, alert.threshold) == (4, 3)
    assert alert.window.seconds == 3600
    assert set(alert.customers) == set(names[:4])
    assert alert.first_access_time.ToDatetime() <= alert.last_access_time.ToDatetime()
    assert b"P0" not in alert.SerializeToString() and b"example.org" not in (
        alert.SerializeToString()
    )

    reader.get_customer(names[4])  # still within the same window: no second alert
    reader.get_customer(names[5])
    assert len(list(auditor.list_access_alerts('principal = "crm-sync"'))) == 1
    assert len(list(auditor.list_access_alerts())) == 2

    # The CLI shows the same alerts, from the store.
    shown = run_json(store, "access-alerts", "--principal", "crm-sync")
    assert [(a["principal"], a["distinct_customers"], a["threshold"]) for a in shown] == [
        ("crm-sync", 4, 3)
    ]
    assert set(shown[0]["customer_ids"]) == {n.removeprefix("customers/") for n in names[:4]}


def test_only_auditors_and_admins_list_alerts(watched: Api) -> None:
    for principal, role in (("svc", "service"), ("sales.a", "sales"), ("dpo", "compliance")):
        client = watched.client(principal, role)
        fails(lambda c=client: list(c.list_access_alerts()), Code.PERMISSION_DENIED)
    assert list(watched.client("root", "admin").list_access_alerts()) == []
    denied = records(watched, "outcome = DENIED")
    assert {r.principal for r in denied} == {"svc", "sales.a", "dpo"}
    assert {r.method for r in denied} == {AUDIT + "ListAccessAlerts"}


def test_list_access_log_roles(api: Api) -> None:
    for principal, role in (("svc", "service"), ("sales.a", "sales")):
        client = api.client(principal, role)
        fails(lambda c=client: list(c.list_access_log()), Code.PERMISSION_DENIED)
    for principal, role in (("aud", "auditor"), ("dpo", "compliance"), ("root", "admin")):
        list(api.client(principal, role).list_access_log())


def test_records_written_before_methods_were_recorded_read_with_an_empty_method(
    api: Api,
) -> None:
    """Access records of version 1 (no `method`) are upcast, not refused."""
    ledger = api.ledger
    name = api.client("root", "admin").create_customer(customer()).name
    (stored,) = ledger.recorder.select_notifications(start=1, limit=10, topics=[RECORDED_TOPIC])
    state = ledger.mapper.transcoder.decode(stored.state)
    assert state.pop("method") == CUSTOMERS + "CreateCustomer"
    state.pop("class_version")
    old = dataclasses.replace(stored, state=ledger.mapper.transcoder.encode(state))
    event = ledger.mapper.to_domain_event(old)
    assert isinstance(event, AccessRecord.Recorded)
    assert event.method == "" and event.customer_ids == [name.removeprefix("customers/")]


def test_create_customer_records_its_answer_in_the_same_commit_as_the_customer(
    api: Api,
) -> None:
    """The creator reads back the customer it wrote: that read is recorded in the very
    transaction that stores the customer (one commit, not two), and a create that fails
    leaves no record of a read that never happened."""
    ledger = api.ledger
    admin = api.client("root", "admin")
    admin.create_customer(customer(given_name="Warm"))  # the first call opens connections
    batches = ledger.committer.batches
    name = admin.create_customer(customer(given_name="Once")).name
    assert ledger.committer.batches == batches + 1
    customer_id = name.removeprefix("customers/")
    registered = [
        n.id
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if str(n.originator_id) == customer_id
    ]
    (record,) = records(api, f'customer = "{name}"')
    assert list(record.customers) == [name] and record.method == CUSTOMERS + "CreateCustomer"
    assert record.position == registered[0] + 1  # stored in the same save, right after it
    before = len(ledger.recorder.select_notifications(start=1, limit=10_000))
    fails(lambda: admin.create_customer(customer(emails=["not an email"])), Code.INVALID_ARGUMENT)
    assert len(ledger.recorder.select_notifications(start=1, limit=10_000)) == before
