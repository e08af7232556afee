"""Erased stays erased: whether a customer is erased is the log's answer, never the key
store's. A key store restored from before an erasure (while running, or rows only after a
restart) never brings the customer's data back, and its key is destroyed again; a key gone
without an erasure in the log is an integrity failure (DATA_LOSS, exit 4, `ledger verify`),
not an erasure; a lost key store is named as such."""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

import grpc
import pytest

from ledger.application import CustomerLedger
from ledger.crypto_shred.keyring import KeyMissing
from ledger.crypto_shred.keystore import KeyStoreLost
from ledger.domain.erased import ERASED
from ledger.v1 import resources_pb2
from tests.api_support import ADA, customer, fails, start_api
from tests.helpers import PostgresStore, StoreHandle, person, run_cli, use_store_in_cli

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState
ACTOR = "test-suite"
PERSONAL_VALUES = ["Erin", "Erased", "erin@example.org", "+4930123456"]


def key_rows(store: StoreHandle) -> list[tuple[Any, ...]]:
    return store.execute(f"SELECT * FROM {store.keys_table}")


def restore_key_rows(store: StoreHandle, rows: list[tuple[Any, ...]]) -> None:
    """Put back a copy of the data-key rows only (not the watermarks kept beside them)."""
    store.execute(f"DELETE FROM {store.keys_table}")
    for row in rows:
        marks = ",".join([store.ph] * len(row))
        store.execute(f"INSERT INTO {store.keys_table} VALUES ({marks})", tuple(row))


def key_id(store: StoreHandle, customer_id: UUID) -> Any:
    return customer_id if isinstance(store, PostgresStore) else str(customer_id)


def live_key_in_store(store: StoreHandle, customer_id: UUID) -> bool:
    rows = store.execute(
        f"SELECT wrapped_key FROM {store.keys_table} WHERE customer_id = {store.ph}",
        (key_id(store, customer_id),),
    )
    return bool(rows) and rows[0][0] is not None


def check_erased(ledger: CustomerLedger, erased: UUID, kept: UUID) -> None:
    assert ledger.get(erased).personal is ERASED
    history = ledger.history(erased)
    assert [h.event_type for h in history] == ["Registered", "ProfileChanged", "Erased"]
    assert all(h.personal is ERASED for h in history[:2])
    assert ledger.as_of(erased, version=1).personal is ERASED
    assert ledger.as_of(erased, version=2).personal is ERASED
    for field in ("given_name", "phones"):
        changes = ledger.read_field_history(erased, field, principal=ACTOR, purpose="audit")
        assert changes and all(c.erased and c.value is None for c in changes)
    personal = ledger.get(kept).personal
    assert isinstance(personal, dict) and personal["given_name"] == "Kai"


def test_key_store_restored_after_an_erasure_never_brings_the_customer_back(
    store: StoreHandle, caplog: pytest.LogCaptureFixture
) -> None:
    with store.open() as ledger:
        erased = ledger.register(
            person(given_name="Erin", family_name="Erased", emails=["erin@example.org"]),
            actor=ACTOR,
        )
        ledger.change(erased, {"phones": ["+4930123456"]}, actor=ACTOR)
        kept = ledger.register(person(given_name="Kai"), actor=ACTOR)
        before = key_rows(store)
        ledger.erase(erased, actor="dpo", legal_basis="GDPR Art. 17(1)(a)")
        restore_key_rows(store, before)  # while the ledger runs: the key is live again
        assert live_key_in_store(store, erased)
        check_erased(ledger, erased, kept)
        ledger.keys.clear()  # as once the cache's few seconds are over
        check_erased(ledger, erased, kept)
    with caplog.at_level(logging.WARNING, logger="ledger"), store.open() as ledger:
        assert not live_key_in_store(store, erased)  # destroyed again at the start
        check_erased(ledger, erased, kept)
    assert f"re-shredded key of erased customer {erased}" in caplog.text
    # A restart has scanned the log past the erasure; now only the key rows come back.
    restore_key_rows(store, before)
    with store.open() as ledger:
        assert not live_key_in_store(store, erased)
        check_erased(ledger, erased, kept)


def test_restored_key_store_through_the_api_gives_erased_results(store: StoreHandle) -> None:
    api = start_api(store)
    try:
        service = api.client("crm-sync", "service")
        dpo = api.client("dpo", "compliance")
        auditor = api.client("root", "admin")
        created = service.create_customer(customer(owner="sales.uk"))
        service.update_customer(created.name, resources_pb2.Customer(emails=["ada@work.example"]))
        kept = service.create_customer(customer(given_name="Kai", emails=["kai@example.org"]))
        before = key_rows(store)
        dpo.erase_customer(created.name, legal_basis="GDPR Art. 17(1)(a)", reason="request")
        restore_key_rows(store, before)
        erased_id = UUID(created.name.rsplit("/", 1)[-1])
        assert live_key_in_store(store, erased_id)

        shown = service.get_customer(created.name)
        assert shown.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
        assert not shown.given_name
        for version in (1, 2):
            past = auditor.get_customer_as_of(created.name, version=version)
            assert past.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
            assert not past.given_name and not past.emails
        events = list(auditor.list_customer_events(created.name))
        assert [e.event_type for e in events] == ["Registered", "ProfileChanged", "Erased"]
        assert all(e.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED for e in events[:2])
        replayed = [e for e in auditor.stream_events() if e.stream_id == str(erased_id)]
        assert [e.event_type for e in replayed] == ["Registered", "ProfileChanged", "Erased"]
        assert all(e.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED for e in replayed[:2])
        emails = auditor.get_field_history(created.name, "emails")
        assert [c.value_state for c in emails] == [PDS.PERSONAL_DATA_STATE_ERASED] * 3
        raw = dpo.export_customer_data(created.name)
        document = json.loads(raw)
        assert document["customer"]["personal_data"] == "erased"
        assert {e.get("personal") for e in document["history"]} <= {"erased", None}
        assert document["data_key"]["status"] == "destroyed"  # and destroyed again
        text = raw.decode("utf-8")
        for value in ["Ada", "Lovelace", "ada@work.example", *ADA["emails"], "A-1001"]:
            assert json.dumps(value) not in text
        assert not live_key_in_store(store, erased_id)
        assert service.get_customer(kept.name).given_name == "Kai"
    finally:
        api.close()


@pytest.fixture
def cli_env(store: StoreHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    use_store_in_cli(store, monkeypatch, ACTOR)


def test_a_key_gone_without_an_erasure_is_data_loss_not_an_erasure(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    api = start_api(store)
    try:
        service = api.client("crm-sync", "service")
        lost = service.create_customer(customer())
        shredded = service.create_customer(customer(given_name="Bea"))
        kept = service.create_customer(customer(given_name="Kai"))
        lost_id, shredded_id = (UUID(c.name.rsplit("/", 1)[-1]) for c in (lost, shredded))
        store.execute(
            f"DELETE FROM {store.keys_table} WHERE customer_id = {store.ph}",
            (key_id(store, lost_id),),
        )
        api.ledger.keys.store.destroy(shredded_id)  # destroyed, but no Erased event
        api.ledger.keys.clear()  # as once the cache's few seconds are over
        for name, customer_id in ((lost.name, lost_id), (shredded.name, shredded_id)):
            details = fails(lambda n=name: service.get_customer(n), Code.DATA_LOSS)
            assert details["reason"] == "DATA_KEY_MISSING"
            assert details["metadata"]["customer"] == name
            details = fails(
                lambda n=name: service.update_customer(
                    n, resources_pb2.Customer(emails=["new@example.org"])
                ),
                Code.DATA_LOSS,
            )
            assert details["reason"] == "DATA_KEY_MISSING"
            with pytest.raises(KeyMissing):
                api.ledger.history(customer_id)
        assert service.get_customer(kept.name).given_name == "Kai"
    finally:
        api.close()

    code, err, out = run_cli(capsys, "show", str(lost_id))
    assert code == 4 and "integrity error" in err and str(lost_id) in err
    assert len(err.strip().splitlines()) == 1
    code, err, out = run_cli(capsys, "change", str(shredded_id), "--set", "tags=x")
    assert code == 4 and str(shredded_id) in err
    code, err, out = run_cli(capsys, "verify")
    assert code == 4 and err.startswith("ledger: verification FAILED at log: the data key")
    for customer_id in (lost_id, shredded_id):  # every one named in the report
        assert f"the data key of customer {customer_id} is missing" in out
    assert run_cli(capsys, "verify", "--skip-keys")[0] == 0


def test_verify_names_a_live_key_of_an_erased_customer(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        erased = ledger.register(person(), actor=ACTOR)
        before = key_rows(store)
        ledger.erase(erased, actor="dpo", legal_basis="GDPR Art. 17")
    assert run_cli(capsys, "verify")[0] == 0
    restore_key_rows(store, before)
    code, err, _ = run_cli(capsys, "verify")
    assert code == 4 and f"customer {erased} is erased in the log" in err


def test_a_lost_key_store_is_an_integrity_error_not_every_customer_erased(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        customer_id = ledger.register(person(), actor=ACTOR)
    keys_file = store.workdir / "keys.db"
    if isinstance(store, PostgresStore):
        store.execute(f"DELETE FROM {store.keys_table}")  # every key row gone
        where = f'table "{store.keys_table}"'
    else:
        keys_file.unlink()
        where = str(keys_file)
    with pytest.raises(KeyStoreLost, match="holds no data key") as raised:
        store.open()
    assert where in str(raised.value)
    assert isinstance(store, PostgresStore) or not keys_file.exists()  # not made anew
    code, err, _ = run_cli(capsys, "show", str(customer_id))
    assert code == 4 and "integrity error" in err and where in err
    code, err, _ = run_cli(capsys, "verify")
    assert code == 4
    if isinstance(store, PostgresStore):
        assert f"the data key of customer {customer_id} is missing" in err
    else:
        assert f"the key store {keys_file} is missing" in err


def test_erasure_registry_reads_only_new_erased_events(store: StoreHandle) -> None:
    """The refresh on every trip to the key store costs one query over the Erased events
    after the last one seen; the partial index keeps the first full read cheap."""
    with store.open() as ledger:
        ids = [ledger.register(person(), actor=ACTOR) for _ in range(3)]
        ledger.erase(ids[0], actor="dpo", legal_basis="GDPR Art. 17")
        scan = ledger.recorder.select_all_erasures  # type: ignore[attr-defined]
        found = scan(0)
        assert [customer_id for _, customer_id, _ in found] == [ids[0]]
        assert scan(found[-1][0]) == []
    with store.open() as reopened:
        assert reopened.erasures.erased_ids() == {ids[0]}
        assert reopened.erasures.position == found[-1][0]


def test_a_customer_whose_key_was_lost_can_still_be_erased(store: StoreHandle) -> None:
    """An erasure is owed whatever happened to the key, and recording it needs none."""
    with store.open() as ledger:
        lost = ledger.register(person(), actor=ACTOR)
        store.execute(
            f"DELETE FROM {store.keys_table} WHERE customer_id = {store.ph}",
            (key_id(store, lost),),
        )
        ledger.keys.clear()
        with pytest.raises(KeyMissing):
            ledger.get(lost)
        signed = ledger.erase(lost, actor="dpo", legal_basis="GDPR Art. 17")
        assert signed.certificate.customer_id == str(lost)
        assert signed.certificate.last_version == 2
        view = ledger.get(lost)
        assert (view.status, view.personal) == ("erased", ERASED)
    with store.open() as reopened:
        assert reopened.get(lost).personal is ERASED
        assert reopened.keys.record(lost).status.value == "destroyed"  # a tombstone now
