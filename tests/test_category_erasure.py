"""Destroying one data category of one customer, keeping the rest (issue 14).

On both stores: contact details destroyed while name and birth date still read; history,
as-of, field history and `ledger verify` keep working and show the destroyed fields as
erased; no stored byte holds the values, and no key left alive anywhere (the key store
read with the KEK, as an attacker with every file would) opens what held them; a rebuild
of the projections gives the rows of incremental catch-up; a restored key store or a
re-inserted key row never revives the category (the log decides); customers from before
category keys keep working and can still be erased whole; bad input is refused naming the
field, with nothing written.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest

from ledger.application import CustomerLedger
from ledger.crypto_shred import journal, keystore
from ledger.crypto_shred.category_erasure import REAPPLIED_REASON as CATEGORY_REAPPLIED
from ledger.crypto_shred.category_erasure import (
    category_journal_paths,
    destroy_categories,
    erased_categories,
)
from ledger.crypto_shred.mapper import SEALED, part_envelope
from ledger.crypto_shred.sealing import SealOpenError, open_sealed
from ledger.domain.erased import ERASED
from ledger.domain.errors import CustomerErasedError, ValidationFailed
from ledger.operations import record_restore
from ledger.projections.wiring import runner_of
from ledger.v1 import compliance_service_pb2, resources_pb2
from tests.api_support import customer, fails, start_api
from tests.helpers import PostgresStore, StoreHandle, person, run_cli, use_store_in_cli
from tests.projection_support import dump_tables
from tests.test_restore_journal import backup, log_size, restore, signer_of

ACTOR = "test-suite"
CONTACT = ("emails", "phones", "addresses")
EMAIL = "quorra.vexley@example.org"
PHONE = "+4930987612345"
NEW_PHONE = "+4930555014789"
STREET = "Zwielichtgasse"
KEPT_NAME = "Quorra"


def register_contactable(ledger: CustomerLedger) -> UUID:
    customer_id = ledger.register(
        person(
            given_name=KEPT_NAME,
            family_name="Vexley",
            emails=[EMAIL],
            phones=[PHONE],
            addresses=[{"address_line1": STREET, "postcode": "10115", "country": "DE"}],
        ),
        actor=ACTOR,
    )
    ledger.change(customer_id, {"phones": [NEW_PHONE]}, actor=ACTOR)
    return customer_id


def destroy_contact(ledger: CustomerLedger, customer_id: UUID) -> Any:
    return destroy_categories(
        ledger,
        customer_id,
        ["user.contact"],
        actor="dpo",
        reason="retention",
        legal_basis="GDPR Art. 5(1)(e)",
    )


def needles() -> list[bytes]:
    values = [EMAIL, PHONE, NEW_PHONE, STREET]
    found = {v.encode() for v in values} | {v.lower().encode() for v in values}
    found |= {"".join(c for c in v if c.isdigit()).encode() for v in (PHONE, NEW_PHONE)}
    return sorted(found)


def key_rows(store: StoreHandle) -> list[tuple[Any, ...]]:
    return store.execute(f"SELECT * FROM {store.keys_table}")


def restore_key_rows(store: StoreHandle, rows: list[tuple[Any, ...]]) -> None:
    store.execute(f"DELETE FROM {store.keys_table}")
    for row in rows:
        marks = ",".join([store.ph] * len(row))
        store.execute(f"INSERT INTO {store.keys_table} VALUES ({marks})", tuple(row))


def check_contact_erased(ledger: CustomerLedger, customer_id: UUID) -> None:
    personal = ledger.get(customer_id).personal
    assert isinstance(personal, dict)
    assert all(personal[name] is ERASED for name in CONTACT)
    assert personal["given_name"] == KEPT_NAME and personal["birth_date"] == "1980-05-17"
    history = ledger.history(customer_id)
    assert [h.event_type for h in history] == ["Registered", "ProfileChanged", "CategoriesErased"]
    registered, changed = history[0].personal, history[1].personal
    assert isinstance(registered, dict) and isinstance(changed, dict)
    assert all(registered[name] is ERASED for name in CONTACT)
    assert registered["family_name"] == "Vexley"
    assert changed == {"phones": ERASED}
    for version in (1, 2, 3):
        past = ledger.as_of(customer_id, version=version).personal
        assert isinstance(past, dict) and past["phones"] is ERASED
        assert past["given_name"] == KEPT_NAME
    phones = ledger.read_field_history(customer_id, "phones", principal=ACTOR, purpose="audit")
    assert [c.erased for c in phones] == [True, True, True] and {c.value for c in phones} == {None}
    text = json.dumps([h.to_json() for h in history], default=str)
    text += json.dumps(ledger.get(customer_id).to_json())
    assert not [n for n in needles() if n in text.encode()]


def live_keys(ledger: CustomerLedger) -> list[bytes]:
    """Every key the key store holds alive, unwrapped with the KEK: what an attacker with
    the key store's file (or a restored copy) and the KEK would have."""
    store = ledger.keys.store
    found: list[bytes] = []
    for key in store.get_many(sorted(store.live_ids())).values():
        found.append(key.key)
        found += [k.key for k in key.categories.values()]
    return found


def opens_with_any(keys: list[bytes], blob: bytes, aad: bytes) -> bool:
    for key in keys:
        try:
            open_sealed(key, blob, aad)
        except SealOpenError:
            continue
        return True
    return False


def contact_parts(ledger: CustomerLedger, store: StoreHandle, customer_id: UUID) -> list[Any]:
    """(blob, aad) of every sealed contact part of the customer's events, as stored."""
    parts = []
    for raw_id, version, topic, state in store.event_rows():
        if raw_id != store._id(customer_id):
            continue
        sealed = ledger.mapper.transcoder.decode(bytes(state)).get(SEALED)
        if not sealed:
            continue
        assert sealed["v"] == 2
        for category, part in sealed["parts"].items():
            if category.startswith("user.contact"):
                aad = part_envelope(customer_id, int(version), str(topic), category)
                parts.append((base64.b64decode(part["data"]), aad))
    return parts


def test_one_category_destroyed_is_gone_everywhere_and_the_rest_still_reads(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        other = ledger.register(person(given_name="Kai", emails=["kai@example.org"]), actor=ACTOR)
        parts = contact_parts(ledger, store, customer_id)
        assert len(parts) == 4  # email, phone, address at registration; the changed phone
        assert all(opens_with_any(live_keys(ledger), *part) for part in parts)  # a real check
        old_row = bytes(
            next(r for r in key_rows(store) if str(r[0]) == str(customer_id))[3]
        )  # the wrapped bundle holding the contact keys

        signed = destroy_contact(ledger, customer_id)

        body = signed.certificate
        assert signed.verify(ledger.signer.public_key_pem())
        assert body.category_list == [
            "user.contact.address",
            "user.contact.email",
            "user.contact.phone_number",
        ]
        assert body.customer_id == str(customer_id) and body.legal_basis == "GDPR Art. 5(1)(e)"
        assert all(f"{c}=" in body.key_id for c in body.category_list)
        journaled = category_journal_paths(ledger)[0].read_text()
        assert str(customer_id) in journaled and "user.contact.email" in journaled
        check_contact_erased(ledger, customer_id)
        assert erased_categories(ledger, customer_id) == frozenset(body.category_list)
        assert ledger.get(other).personal["emails"] == ["kai@example.org"]  # type: ignore[index]
        # No key alive anywhere opens what held the contact details.
        assert not any(opens_with_any(live_keys(ledger), *part) for part in parts)
        # Derived copies: the projections' rows hold none of it, and a rebuild gives the
        # same rows as incremental catch-up did.
        rows = dump_tables(store)
        view_row = next(r for r in rows["current_view"] if str(r[0]) == str(customer_id))
        assert view_row is not None
        runner = runner_of(ledger)
        assert runner.rebuild() == runner.head()
        assert dump_tables(store) == rows
        assert runner.tampered() == []
    blob = store.dump_bytes()
    assert [n for n in needles() if n in blob] == []
    assert old_row not in blob  # the old bundle is gone from every file (and the dump)
    with store.open() as ledger:
        check_contact_erased(ledger, customer_id)


def test_the_projections_drop_the_destroyed_fields_and_their_blocking_keys(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        runner = runner_of(ledger)
        keys_before = store.execute("SELECT COUNT(*) FROM duplicate_keys")[0][0]
        destroy_contact(ledger, customer_id)
        keys_after = store.execute("SELECT COUNT(*) FROM duplicate_keys")[0][0]
        assert keys_after < keys_before  # email, phone and address blocks are gone
        view = runner.get("current_view")
        with runner.db.reading() as tx:
            state = view.load(tx, [customer_id])[customer_id]  # type: ignore[attr-defined]
        assert state.personal is not None
        assert not set(CONTACT) & set(state.personal)
        assert state.personal["given_name"] == KEPT_NAME


def test_a_restored_key_store_or_a_reinserted_key_row_does_not_revive_the_category(
    store: StoreHandle, caplog: pytest.LogCaptureFixture
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        before = key_rows(store)
        destroy_contact(ledger, customer_id)
        restore_key_rows(store, before)  # while the ledger runs: the contact keys are back
        ledger.keys.clear()  # as once the cache's few seconds are over
        restored = ledger.keys.store.get(customer_id)
        assert restored is not None and "user.contact.email" in restored.categories
        check_contact_erased(ledger, customer_id)
    with caplog.at_level("WARNING", logger="ledger"), store.open() as ledger:
        # Re-shredded at the start: the key store forgets them again.
        key = ledger.keys.store.get(customer_id)
        assert key is not None and not any(c.startswith("user.contact") for c in key.categories)
        check_contact_erased(ledger, customer_id)
    assert f"category keys of customer {customer_id}" in caplog.text


def test_changing_a_destroyed_field_is_refused_naming_it(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        destroy_contact(ledger, customer_id)
        with pytest.raises(ValidationFailed) as refused:
            ledger.change(customer_id, {"emails": ["new@example.org"]}, actor=ACTOR)
        assert [v.field for v in refused.value.violations] == ["emails"]
        ledger.change(customer_id, {"given_name": "Quinn", "tags": ["vip"]}, actor=ACTOR)
        personal = ledger.get(customer_id).personal
        assert isinstance(personal, dict) and personal["given_name"] == "Quinn"
        assert personal["emails"] is ERASED


@pytest.mark.parametrize(
    ("categories", "field"),
    [
        (["user.nonsense"], "categories[0]"),
        (["user.contact", "system.operations"], "categories[1]"),  # not sealed: no key
        ([], "categories"),
    ],
)
def test_bad_categories_are_refused_naming_the_field_and_nothing_is_written(
    store: StoreHandle, categories: list[str], field: str
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        rows, keys = store.event_rows(), key_rows(store)
        with pytest.raises(ValidationFailed) as refused:
            destroy_categories(
                ledger, customer_id, categories, actor="dpo", reason="r", legal_basis="b"
            )
        assert field in [v.field for v in refused.value.violations]
        with pytest.raises(ValidationFailed) as refused:
            destroy_categories(
                ledger, customer_id, ["user.contact"], actor="dpo", reason="r", legal_basis=" "
            )
        assert [v.field for v in refused.value.violations] == ["legal_basis"]
        assert store.event_rows() == rows and key_rows(store) == keys
        assert not category_journal_paths(ledger)[0].exists()


def test_an_erased_customer_or_a_destroyed_category_is_refused(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        destroy_contact(ledger, customer_id)
        rows = store.event_rows()
        with pytest.raises(ValidationFailed) as refused:
            destroy_categories(
                ledger, customer_id, ["user.contact.email"], actor="d", reason="r", legal_basis="b"
            )
        assert [v.field for v in refused.value.violations] == ["categories"]
        assert store.event_rows() == rows
        # Whole-customer erasure still destroys everything, destroyed categories included.
        ledger.erase(customer_id, actor="dpo", legal_basis="GDPR Art. 17")
        assert ledger.get(customer_id).personal is ERASED
        assert all(h.personal in (ERASED, None) for h in ledger.history(customer_id))
        assert ledger.keys.store.get(customer_id) is None
        with pytest.raises(CustomerErasedError):
            destroy_categories(
                ledger, customer_id, ["user.name"], actor="d", reason="r", legal_basis="b"
            )


def test_a_store_from_before_category_keys_keeps_working(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "CATEGORY_KEYS", False)
    with store.open() as ledger:
        old = register_contactable(ledger)
        old_state = ledger.mapper.transcoder.decode(store.state_of(old, 1))[SEALED]
        assert "v" not in old_state  # the single-key format
    monkeypatch.setattr(keystore, "CATEGORY_KEYS", True)
    with store.open() as ledger:
        new = register_contactable(ledger)
        assert ledger.mapper.transcoder.decode(store.state_of(new, 1))[SEALED]["v"] == 2
        personal = ledger.get(old).personal
        assert isinstance(personal, dict) and personal["emails"] == [EMAIL]
        assert personal["phones"] == [NEW_PHONE]
        ledger.change(old, {"emails": ["later@example.org"]}, actor=ACTOR)
        assert "v" not in ledger.mapper.transcoder.decode(store.state_of(old, 3))[SEALED]
        rows = store.event_rows()
        with pytest.raises(ValidationFailed) as refused:
            destroy_contact(ledger, old)
        assert [v.field for v in refused.value.violations] == ["categories"]
        assert "single data key" in refused.value.violations[0].reason
        assert store.event_rows() == rows
        destroy_contact(ledger, new)
        runner = runner_of(ledger)
        before = dump_tables(store)
        runner.rebuild()
        assert dump_tables(store) == before
        ledger.erase(old, actor="dpo", legal_basis="GDPR Art. 17")
        assert ledger.get(old).personal is ERASED
        assert ledger.get(new).personal["given_name"] == KEPT_NAME  # type: ignore[index]


@pytest.fixture
def cli_env(store: StoreHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    use_store_in_cli(store, monkeypatch, ACTOR)


def test_cli_erase_category_then_show_history_and_verify(
    store: StoreHandle, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
    code, err, out = run_cli(
        capsys,
        "erase",
        str(customer_id),
        "--category",
        "user.contact.email",
        "--category",
        "user.contact.phone_number",
        "--reason",
        "retention",
        "--legal-basis",
        "GDPR Art. 5(1)(e)",
    )
    assert code == 0, err
    certificate = json.loads(out)["certificate"]
    assert certificate["categories"] == "user.contact.email,user.contact.phone_number"
    code, err, out = run_cli(capsys, "show", str(customer_id), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["erased_fields"] == ["emails", "phones"]
    assert shown["emails"] is None and shown["given_name"] == KEPT_NAME
    assert shown["addresses"][0]["address_line1"] == STREET  # not destroyed
    code, err, out = run_cli(capsys, "history", str(customer_id), "--json")
    assert code == 0, err
    assert EMAIL not in out and NEW_PHONE not in out and '"erased"' in out
    assert run_cli(capsys, "verify")[0] == 0
    code, err, _ = run_cli(
        capsys,
        "erase",
        str(customer_id),
        "--category",
        "user.bogus",
        "--reason",
        "r",
        "--legal-basis",
        "b",
    )
    assert code != 0 and "categories[0]" in err and "user.bogus" in err


def test_api_erase_customer_with_categories(store: StoreHandle) -> None:
    api = start_api(store)
    try:
        service = api.client("crm-sync", "service")
        dpo = api.client("dpo", "compliance")
        created = service.create_customer(customer(given_name="Kira", emails=[EMAIL]))
        answer = dpo.erase_customer(
            created.name,
            legal_basis="GDPR Art. 5(1)(e)",
            reason="retention",
            categories=["user.contact.email"],
        )
        assert list(answer.certificate.categories) == ["user.contact.email"]
        shown = service.get_customer(created.name)
        assert shown.given_name == "Kira" and not shown.emails
        assert list(shown.erased_fields) == ["emails"]
        assert shown.personal_data_state == resources_pb2.PersonalDataState.Value(
            "PERSONAL_DATA_STATE_AVAILABLE"
        )
        auditor = api.client("root", "admin")
        events = list(auditor.list_customer_events(created.name))
        assert [e.event_type for e in events] == ["Registered", "CategoriesErased"]
        assert events[0].personal_data["emails"] == "erased"
        assert events[0].personal_data["given_name"] == "Kira"
        assert events[1].details["categories"] == ["user.contact.email"]
        export = dpo.export_customer_data(created.name).decode("utf-8")
        assert EMAIL not in export and "Kira" in export
        assert json.loads(export)["customer"]["erased_fields"] == ["emails"]
        details = fails(
            lambda: dpo.erase_customer(
                created.name, legal_basis="b", reason="r", categories=["nonsense"]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "categories[0]" in json.dumps(details)
    finally:
        api.close()


def test_request_message_has_categories() -> None:
    request = compliance_service_pb2.EraseCustomerRequest(categories=["user.contact"])
    assert list(request.categories) == ["user.contact"]


def test_reading_a_destroyed_category_never_uses_a_key_the_store_still_holds(
    store: StoreHandle,
) -> None:
    """The log decides: a key row put back by hand (not a restore) is filtered out."""
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        before = key_rows(store)
        destroy_contact(ledger, customer_id)
        row = next(r for r in before if str(r[0]) == str(customer_id))
        ident = customer_id if isinstance(store, PostgresStore) else str(customer_id)
        store.execute(
            f"UPDATE {store.keys_table} SET kek_id = {store.ph}, wrapped_key = {store.ph} "
            f"WHERE customer_id = {store.ph}",
            (row[2], row[3], ident),
        )
        ledger.keys.clear()
        key = ledger.keys.get(customer_id)
        assert key is not None and not any(c.startswith("user.contact") for c in key.categories)
        check_contact_erased(ledger, customer_id)


def test_a_restore_from_before_the_destruction_replays_it_from_the_journal(
    store: StoreHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
    snapshot = backup(store, tmp_path)
    with store.open() as ledger:
        signed = destroy_contact(ledger, customer_id)
    restore(store, snapshot)  # events and keys from before: the contact keys live again
    record_restore(store.settings, signer_of(store), log_size(store), "restore drill")
    with caplog.at_level("WARNING", logger="ledger"), store.open() as ledger:
        check_contact_erased(ledger, customer_id)
        last = ledger.history(customer_id)[-1]
        assert last.reason is not None and last.reason.startswith(CATEGORY_REAPPLIED)
        assert last.details["legal_basis"] == signed.certificate.legal_basis
        key = ledger.keys.store.get(customer_id)
        assert key is not None and not any(c.startswith("user.contact") for c in key.categories)
    assert f"re-applied the journaled category erasure of customer {customer_id}" in caplog.text
    with store.open() as ledger:  # nothing left to do
        assert len(ledger.history(customer_id)) == 3


def test_the_category_journal_catches_up_from_the_log(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register_contactable(ledger)
        signed = destroy_contact(ledger, customer_id)
        path = category_journal_paths(ledger)[0]
    path.unlink()  # lost (or never written)
    with store.open() as ledger:
        entries, malformed = journal.read(path).parsed()
        assert not malformed and len(entries) == 1
        assert entries[0].certificate == signed.certificate
        assert entries[0].verify(ledger.signer.public_key_pem())


def test_undoing_a_merge_after_a_destruction_keeps_the_destroyed_fields_erased(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        survivor = ledger.register(
            person(given_name="Sam", emails=["sam@example.org"]), actor=ACTOR
        )
        source = ledger.register(
            person(given_name="Sam", phones=[PHONE], emails=["sam.other@example.org"]),
            actor=ACTOR,
        )
        ledger.merge(survivor, source, take=["phones", "emails"], actor=ACTOR)
        destroy_contact(ledger, survivor)
        ledger.unmerge(source, actor=ACTOR)
        personal = ledger.get(survivor).personal
        assert isinstance(personal, dict) and personal["phones"] is ERASED
        assert personal["given_name"] == "Sam"
        restored = ledger.get(source).personal
        assert isinstance(restored, dict) and restored["phones"] == [PHONE]
