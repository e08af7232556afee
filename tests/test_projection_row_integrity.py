"""Access decisions never rest on a projection row nobody can check: someone who can write
to the database, and nothing else, edits the columns ownership, status and merges are read
from — and the ledger refuses the row (DATA_LOSS, PROJECTION_ROW_TAMPERED, naming the
customer id only) instead of handing the customer to a caller it does not belong to. A
rebuild repairs it. Real server on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from ledger.cli.main import main
from ledger.projections.queries import ListFilter
from ledger.projections.row_mac import ProjectionRowTampered
from ledger.projections.runner import POSITIONS
from ledger.projections.wiring import customer_queries, runner_of
from ledger.v1 import resources_pb2
from tests.api_support import Api, api, customer, fails
from tests.helpers import StoreHandle

__all__ = ["api"]  # the fixture
Code = grpc.StatusCode
PERSONAL = ("Ada", "Lovelace", "ada@example.org", "7946")


def uid(name: str) -> str:
    return name.removeprefix("customers/")


def tampered_details(call: Any, customer_id: str) -> dict[str, Any]:
    details = fails(call, Code.DATA_LOSS)
    assert details["reason"] == "PROJECTION_ROW_TAMPERED"
    assert details["metadata"]["customer"] == f"customers/{customer_id}"
    assert not any(value in str(details) for value in PERSONAL)  # ids, never data
    return details


def bobs_and_alices(api: Api) -> tuple[str, str]:
    admin = api.client("root", "admin")
    bobs = admin.create_customer(customer(owner="sales.bob"))
    alice = api.client("sales.alice", "sales")
    alices = alice.create_customer(
        customer(given_name="Grace", family_name="Hopper", emails=["grace@example.com"],
                 phones=[], external_ids={})
    )  # fmt: skip
    return uid(bobs.name), uid(alices.name)


def test_an_edited_owner_does_not_give_a_salesperson_another_owners_customer(
    api: Api, store: StoreHandle
) -> None:
    bob_id, alice_id = bobs_and_alices(api)
    alice = api.client("sales.alice", "sales")
    admin = api.client("root", "admin")
    assert [uid(c.name) for c in alice.list_customers()] == [alice_id]

    store.execute(f"UPDATE current_view SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
                  (bob_id,))  # fmt: skip

    # The projection alone now says Bob's customer is Alice's: neither she nor anyone else
    # gets it from a list; GetCustomer (from the log) still refuses her.
    tampered_details(lambda: list(alice.list_customers()), bob_id)
    tampered_details(lambda: list(alice.list_customers(filter="state = ANY")), bob_id)
    tampered_details(lambda: list(admin.list_customers()), bob_id)
    fails(lambda: alice.get_customer(bob_id), Code.PERMISSION_DENIED)
    runner = runner_of(api.ledger)
    assert ("current_view", "current_view", bob_id) in runner.tampered()

    runner.rebuild()
    assert runner.tampered() == []
    assert [uid(c.name) for c in alice.list_customers()] == [alice_id]
    owners = {uid(c.name): c.owner for c in admin.list_customers()}
    assert owners == {bob_id: "sales.bob", alice_id: "sales.alice"}


def test_the_next_event_of_an_edited_customer_heals_its_rows_from_the_log(
    api: Api, store: StoreHandle
) -> None:
    """Folding an edited row would launder the edit under a fresh MAC, and refusing to fold
    it would stall every projection (leaving everyone's rows stale): the catch-up replaces
    it with the customer's state folded from the log instead."""
    bob_id, alice_id = bobs_and_alices(api)
    admin = api.client("root", "admin")
    alice = api.client("sales.alice", "sales")
    for table in ("current_view", "duplicate_records"):
        store.execute(f"UPDATE {table} SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
                      (bob_id,))  # fmt: skip
    admin.update_customer(bob_id, customer(given_name="Augusta"), update_mask=["given_name"])

    runner = runner_of(api.ledger)
    assert runner.tampered() == []
    assert [uid(c.name) for c in alice.list_customers()] == [alice_id]
    (bobs,) = admin.list_customers(filter='owner = "sales.bob"')
    assert (bobs.given_name, bobs.owner) == ("Augusta", "sales.bob")
    assert runner.positions() == dict.fromkeys(runner.names, runner.head())


def test_a_row_put_back_from_an_older_state_is_found_and_healed(
    api: Api, store: StoreHandle
) -> None:
    """A whole row copied back from before a reassignment has a sound MAC. The log tells:
    `--check` names it, and the customer's next event replaces it rather than folding onto
    it (which would keep the old owner under a fresh MAC)."""
    _, alice_id = bobs_and_alices(api)
    alice = api.client("sales.alice", "sales")
    ph = store.ph
    saved = {
        table: store.execute(f"SELECT * FROM {table} WHERE customer_id = {ph}", (alice_id,))[0]
        for table in ("current_view", "duplicate_records")
    }
    service = api.client("crm-sync", "service")
    service.assign_owner(alice_id, "sales.bob")
    assert list(alice.list_customers()) == []
    for table, row in saved.items():
        store.execute(f"DELETE FROM {table} WHERE customer_id = {ph}", (alice_id,))
        store.execute(f"INSERT INTO {table} VALUES ({', '.join([ph] * len(row))})", row)
    runner = runner_of(api.ledger)
    assert {(table, c) for _, table, c in runner.tampered()} == {
        ("current_view", alice_id),
        ("duplicate_records", alice_id),
    }

    service.update_customer(alice_id, customer(given_name="Gracie"), update_mask=["given_name"])
    assert runner.tampered() == []
    assert list(alice.list_customers()) == []
    assert alice.find_duplicates(customer(given_name="Gracie", family_name="Hopper")) == []
    moved = {c.name: c.given_name for c in service.list_customers(filter='owner = "sales.bob"')}
    assert moved[f"customers/{alice_id}"] == "Gracie"


def test_an_erasure_replaces_an_edited_row(api: Api, store: StoreHandle) -> None:
    bob_id, alice_id = bobs_and_alices(api)
    store.execute(f"UPDATE current_view SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
                  (bob_id,))  # fmt: skip
    api.client("dpo", "compliance").erase_customer(
        bob_id, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
    )
    assert runner_of(api.ledger).tampered() == []
    alice = api.client("sales.alice", "sales")
    assert [uid(c.name) for c in alice.list_customers(filter="state = ANY")] == [alice_id]


def test_an_edited_status_or_merge_flag_unmasks_nothing(api: Api, store: StoreHandle) -> None:
    alice = api.client("sales.alice", "sales")
    kept = alice.create_customer(customer())
    merged = alice.create_customer(customer(emails=["ada.l@example.org"]))
    alice.merge_customers(kept.name, merged.name)
    erased = alice.create_customer(customer(given_name="Grace", emails=[], phones=[],
                                            external_ids={}))  # fmt: skip
    api.client("dpo", "compliance").erase_customer(
        erased.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
    )
    assert [c.name for c in alice.list_customers()] == [kept.name]

    ph = store.ph
    # A merged customer made to look active again, hidden no more:
    store.execute(
        f"UPDATE current_view SET status = 'active', merged_into = NULL WHERE customer_id = {ph}",
        (uid(merged.name),),
    )
    tampered_details(lambda: list(alice.list_customers()), uid(merged.name))
    # An erased customer's tombstone brought back and given to Alice:
    runner_of(api.ledger).rebuild(["current_view"])
    store.execute(
        "UPDATE current_view SET status = 'active', owner = 'sales.alice'"
        f" WHERE customer_id = {ph}",
        (uid(erased.name),),
    )
    tampered_details(lambda: list(alice.list_customers()), uid(erased.name))

    runner_of(api.ledger).rebuild()
    assert [c.name for c in alice.list_customers()] == [kept.name]
    everything = {c.name: c.state for c in alice.list_customers(filter="state = ANY")}
    assert everything[merged.name] == resources_pb2.Customer.MERGED
    assert erased.name not in everything  # a tombstone keeps no owner
    admin = api.client("root", "admin")
    states = {c.name: c.state for c in admin.list_customers(filter="state = ANY")}
    assert states[erased.name] == resources_pb2.Customer.ERASED


def test_duplicate_search_never_rests_on_an_edited_owner(api: Api, store: StoreHandle) -> None:
    bob_id, _ = bobs_and_alices(api)
    alice = api.client("sales.alice", "sales")
    ada = customer(emails=["someone@example.org"])
    assert alice.find_duplicates(ada) == []  # Bob's Ada is not Alice's to see

    store.execute(
        f"UPDATE duplicate_records SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
        (bob_id,),
    )
    tampered_details(lambda: alice.find_duplicates(ada), bob_id)
    # Registering a look-alike must not name Bob's customer (LEDGER_DUPLICATE_POLICY=warn).
    tampered_details(lambda: alice.create_customer_checked(ada), bob_id)

    runner_of(api.ledger).rebuild(["duplicate_index"])
    assert alice.find_duplicates(ada) == []
    assert alice.create_customer_checked(ada).likely_duplicates == []


def test_index_tables_lead_only_to_rows_that_hold_what_they_claim(
    api: Api, store: StoreHandle
) -> None:
    bob_id, alice_id = bobs_and_alices(api)
    admin = api.client("root", "admin")
    ph = store.ph
    # Bob's customer filed under a tag it does not have:
    store.execute(f"INSERT INTO current_view_tags (tag, customer_id) VALUES ('vip', {ph})",
                  (bob_id,))  # fmt: skip
    tampered_details(lambda: list(admin.list_customers(filter='tags = "vip"')), bob_id)
    # ... and under Grace's email, so a look-up by it would lead to him:
    store.execute(
        f"INSERT INTO current_view_lookup (digest, customer_id) SELECT digest, {ph}"
        f" FROM current_view_lookup WHERE customer_id = {ph}",
        (bob_id, alice_id),
    )
    queries = customer_queries(api.ledger)
    with pytest.raises(ProjectionRowTampered) as caught:
        queries.lookup(email="grace@example.com")
    assert caught.value.customer_id == bob_id
    found = {(table, c) for _, table, c in runner_of(api.ledger).tampered()}
    assert found == {("current_view_tags", bob_id), ("current_view_lookup", bob_id)}

    runner_of(api.ledger).rebuild(["current_view"])
    assert [str(r.id) for r in queries.lookup(email="grace@example.com")] == [alice_id]
    assert list(admin.list_customers(filter='tags = "vip"')) == []


def _cli(monkeypatch: pytest.MonkeyPatch, store: StoreHandle, *args: str) -> int:
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("LEDGER_ACTOR", "cli-test")
    return main(list(args))


def test_cli_list_and_check_report_an_edited_row_and_rebuild_repairs_it(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        bobs = ledger.register({"given_name": "Ada", "owner": "sales.bob"}, actor="t")
        alices = ledger.register({"given_name": "Grace", "owner": "sales.alice"}, actor="t")
    store.execute(f"UPDATE current_view SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
                  (str(bobs),))  # fmt: skip
    capsys.readouterr()

    assert _cli(monkeypatch, store, "list", "--owner", "sales.alice", "--json") == 4
    captured = capsys.readouterr()
    assert str(bobs) in captured.err and "Ada" not in captured.out + captured.err
    assert _cli(monkeypatch, store, "projections", "--check", "--json") == 4
    report = json.loads(capsys.readouterr().out)
    assert report["tampered"] == [
        {"projection": "current_view", "table": "current_view", "customer_id": str(bobs)}
    ]

    assert _cli(monkeypatch, store, "rebuild", "--json") == 0
    assert _cli(monkeypatch, store, "projections", "--check", "--json") == 0
    capsys.readouterr()
    assert _cli(monkeypatch, store, "list", "--owner", "sales.alice", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["customers"]
    assert [c["id"] for c in listed] == [str(alices)]


def test_a_store_written_before_row_macs_is_rebuilt_on_open(store: StoreHandle) -> None:
    with store.open() as ledger:
        bobs = ledger.register({"given_name": "Ada", "owner": "sales.bob"}, actor="t")
    # As an older version left it: its projections at schema version 1, and a row edited
    # while nothing could tell.
    store.execute(f"UPDATE {POSITIONS} SET schema_version = 1")
    store.execute(f"UPDATE current_view SET owner = 'sales.alice' WHERE customer_id = {store.ph}",
                  (str(bobs),))  # fmt: skip
    with store.open() as ledger:
        runner = runner_of(ledger)
        runner.catch_up()
        assert runner.tampered() == []
        page = customer_queries(ledger).list_customers(ListFilter(owner="sales.alice"))
        assert page.records == []
        (record,) = customer_queries(ledger).list_customers(ListFilter(owner="sales.bob")).records
        assert record.id == bobs
