"""ListCustomers, MergeCustomers and UnmergeCustomer end to end: a real server on a loopback
port, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from ledger.api.server import build_server
from ledger.audit.access_log import RECORDED_TOPIC
from ledger.v1 import customer_service_pb2, resources_pb2
from tests.api_support import Api, api, customer, fails
from tests.helpers import StoreHandle

__all__ = ["api"]  # the fixture

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState
State = resources_pb2.Customer


def events_written(api: Api) -> int:
    """Events other than access records (a retried call's response is itself a read)."""
    notifications = api.ledger.recorder.select_notifications(start=1, limit=1_000_000)
    return sum(1 for n in notifications if n.topic != RECORDED_TOPIC)


def names(customers: object) -> list[str]:
    return [c.name for c in customers]  # type: ignore[attr-defined]


# ListCustomers ----------------------------------------------------------------------------


def test_list_filters_by_owner_country_tag_state_and_update_time(api: Api) -> None:
    client = api.client("crm-sync", "service")
    uk_vip = client.create_customer(customer(owner="sales.uk", tags=["vip"]))
    uk = client.create_customer(customer(owner="sales.uk"))
    fr = client.create_customer(
        customer(owner="sales.fr", addresses=[resources_pb2.Address(country="FR")], phones=[])
    )
    everyone = {uk_vip.name, uk.name, fr.name}

    assert set(names(client.list_customers())) == everyone
    assert set(names(client.list_customers(filter='owner = "sales.uk"'))) == {
        uk_vip.name,
        uk.name,
    }
    assert names(client.list_customers(filter='owner = "sales.uk" AND tags:"vip"')) == [uk_vip.name]
    assert names(client.list_customers(filter="tags = vip")) == [uk_vip.name]
    assert names(client.list_customers(filter='country = "fr"')) == [fr.name]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert names(client.list_customers(filter=f'update_time >= "{later.isoformat()}"')) == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert set(names(client.list_customers(filter=f'update_time >= "{earlier}"'))) == everyone

    listed = next(iter(client.list_customers(filter='tags = "vip"')))
    assert listed.given_name == "Ada" and listed.etag == "1"
    assert listed.personal_data_state == PDS.PERSONAL_DATA_STATE_AVAILABLE
    trimmed = next(iter(client.list_customers(filter="tags:vip", read_mask=["name", "owner"])))
    assert (trimmed.name, trimmed.owner, trimmed.given_name) == (uk_vip.name, "sales.uk", "")


def test_list_orders_and_pages_with_tokens(api: Api) -> None:
    client = api.client("crm-sync", "service")
    created = [client.create_customer(customer(tags=[f"t{i}"])).name for i in range(7)]
    pages = list(client.list_customer_pages(order_by="name", page_size=3))
    assert [len(p.customers) for p in pages] == [3, 3, 1]
    assert pages[-1].next_page_token == ""
    by_name = [c.name for p in pages for c in p.customers]
    assert by_name == sorted(created)
    assert names(client.list_customers(order_by="name desc", page_size=2)) == sorted(
        created, reverse=True
    )
    assert names(client.list_customers(order_by="create_time")) == created
    assert names(client.list_customers(order_by="update_time desc"))[0] == created[-1]
    # A change moves a customer to the end of the update_time order.
    client.update_customer(created[0], resources_pb2.Customer(tags=["moved"]))
    assert names(client.list_customers(order_by="update_time"))[-1] == created[0]


def test_bad_filter_order_page_size_and_page_token_are_invalid_argument(api: Api) -> None:
    client = api.client("crm-sync", "service")
    for _ in range(3):
        client.create_customer(customer(owner="sales.uk"))
    stub, options = client.customers, client.call_options

    def listing(**fields: object) -> object:
        request = customer_service_pb2.ListCustomersRequest(**fields)  # type: ignore[arg-type]
        return stub.ListCustomers(request, **options)

    for bad in (
        "given_name = Ada",  # personal fields cannot be filtered on
        'owner = "a" OR owner = "b"',
        'owner = "a" AND owner = "b"',
        "owner >= a",
        "state = GONE",
        'update_time >= "yesterday"',
        'update_time >= "2026-01-01T00:00:00"',
        'update_time >= "9999-12-31T23:59:59-23:59"',
        'owner = "a\x00b"',
        'country = "Britain"',
        "owner =",
        "(owner = a)",
    ):
        details = fails(lambda b=bad: listing(filter=b), Code.INVALID_ARGUMENT)
        assert set(details["field_violations"]) == {"filter"}, bad
    for bad_order in ("given_name", "update_time sideways", "name, update_time"):
        details = fails(lambda o=bad_order: listing(order_by=o), Code.INVALID_ARGUMENT)
        assert set(details["field_violations"]) == {"order_by"}
    fails(lambda: listing(page_size=-1), Code.INVALID_ARGUMENT)
    fails(lambda: listing(read_mask={"paths": ["nope"]}), Code.INVALID_ARGUMENT)

    first = listing(filter='owner = "sales.uk"', page_size=1)
    token = first.next_page_token  # type: ignore[attr-defined]
    assert token
    # The token continues its own query...
    assert listing(filter='owner = "sales.uk"', page_size=1, page_token=token)
    # ...and no other: another filter, another order, or a forged token.
    for other in (
        {"filter": 'owner = "sales.fr"'},
        {"filter": 'owner = "sales.uk"', "order_by": "name"},
        {"filter": 'owner = "sales.uk"', "show_erased": True},
    ):
        details = fails(lambda o=other: listing(page_token=token, **o), Code.INVALID_ARGUMENT)
        assert set(details["field_violations"]) == {"page_token"}
    for forged in ("nonsense", "e30", "x" * 5000, token[:-2]):
        fails(lambda f=forged: listing(page_token=f), Code.INVALID_ARGUMENT)


def test_merged_are_hidden_and_erased_are_tombstones_unless_asked_for(api: Api) -> None:
    client = api.client("root", "admin")
    kept = client.create_customer(customer()).name
    merged = client.create_customer(customer(given_name="Adah")).name
    erased = client.create_customer(customer(given_name="Eve")).name
    client.merge_customers(kept, merged)
    client.erase_customer(erased, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")

    assert names(client.list_customers()) == [kept]
    assert names(client.list_customers(filter="state = MERGED")) == [merged]
    assert set(names(client.list_customers(filter="state = ANY"))) == {kept, merged, erased}
    assert set(names(client.list_customers(show_erased=True))) == {kept, erased}
    (tombstone,) = client.list_customers(filter="state = ERASED")
    assert tombstone.name == erased and tombstone.state == State.ERASED
    assert tombstone.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
    assert tombstone.given_name == "" and not tombstone.emails and not tombstone.phones
    (hidden,) = client.list_customers(filter="state = MERGED")
    assert hidden.state == State.MERGED and hidden.merged_into == kept


def test_sales_lists_only_its_own_customers(api: Api) -> None:
    admin = api.client("root", "admin")
    bobs = {admin.create_customer(customer(owner="sales.bob")).name for _ in range(3)}
    alice = api.client("sales.alice", "sales")
    mine = {alice.create_customer(customer()).name for _ in range(2)}

    assert set(names(alice.list_customers())) == mine
    assert set(names(alice.list_customers(filter='owner = "sales.alice"'))) == mine
    assert set(names(alice.list_customers(filter="state = ANY", page_size=1))) == mine
    details = fails(
        lambda: list(alice.list_customers(filter='owner = "sales.bob"')), Code.PERMISSION_DENIED
    )
    assert not any(b.removeprefix("customers/") in str(details) for b in bobs)
    assert set(names(admin.list_customers(filter='owner = "sales.bob"'))) == bobs
    # An auditor lists everyone, masked.
    auditor = api.client("auditor.eve", "auditor")
    listed = list(auditor.list_customers())
    assert {c.name for c in listed} == mine | bobs
    assert {c.personal_data_state for c in listed} == {PDS.PERSONAL_DATA_STATE_REDACTED}
    assert all(c.given_name == "" and not c.emails for c in listed)


class RecordingAccessLog:
    """The access-log hook the servicers call (the audit log's implementation stands behind
    it in production): here it keeps what it was asked to record."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, list[str], list[str]]] = []

    def record_access(self, **entry: Any) -> None:
        self.reads.append((entry["method"], list(entry["customer_ids"]), list(entry["fields"])))

    def record_denied(self, **entry: Any) -> None:
        pass


def test_a_listing_with_personal_data_is_recorded_once_per_page(store: StoreHandle) -> None:
    recorder = RecordingAccessLog()
    ledger = store.open()
    server = build_server(ledger, store.settings, listen="127.0.0.1:0", access_log=recorder)
    api = Api(ledger=ledger, server=server, settings=store.settings)
    try:
        admin = api.client("root", "admin")
        created = [admin.create_customer(customer(phones=[])).name for _ in range(3)]
        recorder.reads.clear()
        listed = list(admin.list_customers(order_by="create_time", page_size=2))
        assert [c.name for c in listed] == created
        assert [(m, ids) for m, ids, _ in recorder.reads] == [
            ("/ledger.v1.CustomerService/ListCustomers", created[:2]),
            ("/ledger.v1.CustomerService/ListCustomers", created[2:]),
        ]
        assert recorder.reads[0][2] == [
            "addresses",
            "emails",
            "external_ids",
            "family_name",
            "given_name",
        ]
        recorder.reads.clear()
        list(api.client("auditor.eve", "auditor").list_customers())  # masked: nothing read
        list(admin.list_customers(read_mask=["name", "owner", "tags"]))  # no personal field
        assert recorder.reads == []
    finally:
        api.close()


# MergeCustomers / UnmergeCustomer ----------------------------------------------------------


def test_merge_then_unmerge_restores_both_exactly(api: Api) -> None:
    client = api.client("crm-sync", "service")
    survivor = client.create_customer(
        customer(tags=["vip"], phones=[], external_ids={"CRM": "A-1"})
    )
    duplicate = client.create_customer(
        customer(
            given_name="Augusta",
            emails=["augusta@example.org"],
            phones=["+44 20 7946 0999"],
            external_ids={"CRM": "B-2", "ERP": "9"},
            tags=["newsletter"],
        )
    )
    merged = client.merge_customers(
        survivor.name,
        duplicate.name,
        etag=survivor.etag,
        source_etag=duplicate.etag,
        take_from_source=["given_name"],
        reason="duplicate",
    )
    assert merged.name == survivor.name and merged.version == 2
    assert merged.given_name == "Augusta"  # taken
    assert list(merged.phones) == ["+442079460999"]  # filled in
    assert set(merged.emails) == {"ada@example.org", "augusta@example.org"}  # united
    assert dict(merged.external_ids) == {"CRM": "A-1", "ERP": "9"}  # its own CRM id wins
    assert set(merged.tags) == {"vip", "newsletter"}

    source = client.get_customer(duplicate.name)
    assert source.state == State.MERGED and source.merged_into == survivor.name
    assert source.given_name == "Augusta"  # nothing is lost
    details = fails(
        lambda: client.update_customer(duplicate.name, resources_pb2.Customer(tags=["x"])),
        Code.FAILED_PRECONDITION,
    )
    assert details["reason"] == "CUSTOMER_MERGED"
    assert details["metadata"]["merged_into"] == survivor.name

    restored = client.unmerge_customer(duplicate.name, etag=merged.etag, reason="not-the-same")
    assert restored.name == duplicate.name and restored.state == State.ACTIVE
    assert restored.merged_into == ""
    after = client.get_customer(survivor.name)

    def content(message: resources_pb2.Customer) -> resources_pb2.Customer:
        copy = resources_pb2.Customer()
        copy.CopyFrom(message)
        for name in ("version", "etag", "update_time"):
            copy.ClearField(name)
        return copy

    assert content(after) == content(survivor)
    assert content(restored) == content(duplicate)
    assert (after.version, restored.version) == (3, 3)


def test_stale_etags_are_aborted_and_write_nothing(api: Api) -> None:
    client = api.client("crm-sync", "service")
    a = client.create_customer(customer())
    b = client.create_customer(customer(given_name="Bea"))
    client.update_customer(a.name, resources_pb2.Customer(tags=["a"]))
    client.update_customer(b.name, resources_pb2.Customer(tags=["b"]))
    before = events_written(api)
    details = fails(lambda: client.merge_customers(a.name, b.name, etag="1"), Code.ABORTED)
    assert details["reason"] == "STALE_ETAG"
    assert details["metadata"]["customer"] == a.name
    details = fails(
        lambda: client.merge_customers(a.name, b.name, etag="2", source_etag="1"), Code.ABORTED
    )
    assert details["metadata"]["customer"] == b.name
    assert events_written(api) == before
    merged = client.merge_customers(a.name, b.name, etag="2", source_etag="2")
    client.update_customer(a.name, resources_pb2.Customer(locale="en-US"))
    before = events_written(api)
    fails(lambda: client.unmerge_customer(b.name, etag=merged.etag), Code.ABORTED)
    assert events_written(api) == before


def test_merge_preconditions_fail_with_error_info_and_write_nothing(api: Api) -> None:
    client = api.client("root", "admin")
    a = client.create_customer(customer()).name
    b = client.create_customer(customer(given_name="Bea")).name
    c = client.create_customer(customer(given_name="Cy")).name
    gone = client.create_customer(customer(given_name="Gone")).name
    client.erase_customer(gone, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")
    client.merge_customers(a, b)
    before = events_written(api)

    def reason(call: object) -> str:
        return str(fails(call, Code.FAILED_PRECONDITION)["reason"])

    assert reason(lambda: client.merge_customers(a, a)) == "MERGE_INTO_ITSELF"
    assert reason(lambda: client.merge_customers(gone, c)) == "CUSTOMER_ERASED"
    assert reason(lambda: client.merge_customers(c, gone)) == "CUSTOMER_ERASED"
    assert reason(lambda: client.merge_customers(b, c)) == "CUSTOMER_MERGED"  # into a merged one
    assert reason(lambda: client.merge_customers(c, b)) == "CUSTOMER_MERGED"  # already merged
    assert reason(lambda: client.unmerge_customer(c)) == "NOT_MERGED"
    assert reason(lambda: client.unmerge_customer(gone)) == "CUSTOMER_ERASED"
    # Erasing a survivor while a merged customer hides behind it is refused, not INTERNAL.
    assert reason(lambda: client.erase_customer(a, legal_basis="x", reason="y")) == (
        "MERGE_REFUSED"
    )
    details = fails(
        lambda: client.merge_customers(a, c, take_from_source=["owner", "version"]),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"take_from_source.paths[0]"}
    details = fails(
        lambda: client.merge_customers(a, c, take_from_source=["birth_date"]),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"take_from_source"}
    fails(lambda: client.merge_customers(a, "customers/x"), Code.INVALID_ARGUMENT)
    fails(lambda: client.merge_customers(a, f"customers/{uuid.uuid4()}"), Code.NOT_FOUND)
    assert events_written(api) == before


def test_merge_retry_with_the_same_request_id_returns_the_survivor(api: Api) -> None:
    client = api.client("crm-sync", "service")
    a = client.create_customer(customer()).name
    b = client.create_customer(customer(given_name="Bea")).name
    c = client.create_customer(customer(given_name="Cy")).name
    first = client.merge_customers(a, b, request_id="m-1")
    before = events_written(api)
    assert client.merge_customers(a, b, request_id="m-1") == first
    assert events_written(api) == before
    fails(lambda: client.merge_customers(a, b), Code.FAILED_PRECONDITION)  # no id: refused
    details = fails(lambda: client.merge_customers(a, c, request_id="m-1"), Code.INVALID_ARGUMENT)
    assert set(details["field_violations"]) == {"request_id"}


def test_sales_merges_only_customers_it_owns(api: Api) -> None:
    admin = api.client("root", "admin")
    alice = api.client("sales.alice", "sales")
    mine = alice.create_customer(customer()).name
    also_mine = alice.create_customer(customer(given_name="Bea")).name
    bobs = admin.create_customer(customer(owner="sales.bob")).name
    before = events_written(api)
    fails(lambda: alice.merge_customers(mine, bobs), Code.PERMISSION_DENIED)
    fails(lambda: alice.merge_customers(bobs, mine), Code.PERMISSION_DENIED)
    assert events_written(api) == before + 2  # only the two recorded refusals
    alice.merge_customers(mine, also_mine)
    # Bob's customer absorbs one of Alice's only through someone who reaches both.
    admin.unmerge_customer(also_mine)
    admin.merge_customers(bobs, also_mine)
    fails(lambda: alice.unmerge_customer(also_mine), Code.PERMISSION_DENIED)
    for role in ("auditor", "compliance"):
        other = api.client(f"{role}.one", role)
        fails(lambda o=other: o.merge_customers(mine, bobs), Code.PERMISSION_DENIED)
        fails(lambda o=other: o.unmerge_customer(also_mine), Code.PERMISSION_DENIED)
