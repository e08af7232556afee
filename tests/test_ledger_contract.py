"""The ledger's contract, run against every store adapter (SQLite and PostgreSQL).

Each test gets its own fresh store (a temporary SQLite file, or a new PostgreSQL
database), so the assertions about what is written (and what is not) are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger.application import CustomerLedger
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.crypto_shred.mapper import SealError
from ledger.domain.erased import ERASED
from ledger.domain.errors import (
    CustomerErasedError,
    CustomerNotFound,
    HistoryNotFound,
    StaleVersion,
    ValidationFailed,
)
from tests.helpers import StoreHandle, person

ACTOR = "test-suite"


def register(ledger: CustomerLedger, **overrides: object) -> UUID:
    return ledger.register(person(**overrides), actor=ACTOR)


def test_register_change_history_round_trip(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register(
            ledger,
            given_name="  Ada  ",
            family_name="Lovelace",
            phones=["020 7946 0018"],
            addresses=[{"country": "gb"}],
        )
        view = ledger.get(customer_id)
        assert view.version == 1
        assert view.status == "active"
        assert isinstance(view.personal, dict)
        assert view.personal["given_name"] == "Ada"
        assert view.personal["phones"] == ["+442079460018"]
        assert view.personal["addresses"][0]["country"] == "GB"

        changed = ledger.change(
            customer_id,
            {"emails": ["ada@example.org"], "tags": ["vip"]},
            actor=ACTOR,
            expected_version=1,
            reason="customer-request",
        )
        assert changed == ["emails", "tags"]
        assert ledger.assign_owner(customer_id, "sales.uk", actor=ACTOR)
        ledger.mark_verified(customer_id, actor=ACTOR)

    with store.open() as ledger:  # a new process sees the same thing
        view = ledger.get(customer_id)
        assert view.version == 4
        assert isinstance(view.personal, dict)
        assert view.personal["emails"] == ["ada@example.org"]
        assert view.tags == ["vip"]
        assert view.owner == "sales.uk"
        assert view.verified_at is not None
        history = ledger.history(customer_id)
        assert [h.event_type for h in history] == [
            "Registered",
            "ProfileChanged",
            "OwnerAssigned",
            "Verified",
        ]
        assert history[1].details["changed_fields"] == ["emails", "tags"]
        assert history[1].personal == {"emails": ["ada@example.org"]}
        assert history[1].reason == "customer-request"
        assert all(h.actor == ACTOR for h in history)
        assert history[2].details == {"owner": "sales.uk", "previous_owner": "sales.emea"}

        before_change = ledger.as_of(customer_id, version=1)
        assert isinstance(before_change.personal, dict)
        assert before_change.personal["emails"] == ["testa.person@example.org"]
        at_change = ledger.as_of(customer_id, at=history[1].timestamp)
        assert at_change.version == 2
        with pytest.raises(HistoryNotFound):
            ledger.as_of(customer_id, at=history[0].timestamp - timedelta(seconds=1))


def test_external_id_named_by_scheme_at_registration(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = ledger.register(
            person(external_ids={"CRM": "C-9"}, **{"external_id:VAT": "DE123"}), actor=ACTOR
        )
        view = ledger.get(customer_id)
        assert isinstance(view.personal, dict)
        assert view.personal["external_ids"] == {"CRM": "C-9", "VAT": "DE123"}


def test_change_with_nothing_new_writes_nothing(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register(ledger, emails=["same@example.org"])
        assert ledger.change(customer_id, {"emails": ["same@example.org"]}, actor=ACTOR) == []
        assert ledger.get(customer_id).version == 1


def test_stale_expected_version_is_refused_and_writes_nothing(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register(ledger)
        ledger.change(customer_id, {"tags": ["a"]}, actor=ACTOR, expected_version=1)
        head = ledger.recorder.max_notification_id()
        with pytest.raises(StaleVersion) as info:
            ledger.change(customer_id, {"tags": ["b"]}, actor=ACTOR, expected_version=1)
        assert (info.value.expected, info.value.actual) == (1, 2)
        with pytest.raises(StaleVersion):
            ledger.assign_owner(customer_id, "someone", actor=ACTOR, expected_version=1)
        assert ledger.recorder.max_notification_id() == head
        assert ledger.get(customer_id).tags == ["a"]


def test_concurrent_writers_cannot_both_win(store: StoreHandle) -> None:
    """Two processes decide on the same version; the store refuses the second."""
    with store.open() as first, store.open() as second:
        customer_id = register(first)
        stale = second.repository.get(customer_id)
        first.change(customer_id, {"tags": ["first"]}, actor=ACTOR)
        stale.change({"tags": ["second"]}, ACTOR, None)
        with pytest.raises(StaleVersion):
            second._save(stale, 1)
        assert first.get(customer_id).tags == ["first"]


BAD_INPUTS = [
    ({"emails": ["not-an-email"]}, "emails[0]"),
    ({"phones": ["12"]}, "phones[0]"),
    ({"birth_date": "1990-02-30"}, "birth_date"),
    ({"addresses": [{"country": "XX"}]}, "addresses[0].country"),
    ({"addresses": [{"locality": "Lyon"}]}, "addresses[0].country"),
    ({"favourite_colour": "blue"}, "favourite_colour"),
    # Nobody: no name, no contact, no id (an address and a birth date alone identify no one).
    (
        {"given_name": "", "family_name": "", "emails": [], "phones": [], "external_ids": {}},
        "family_name",
    ),
    ({"tags": ["Not A Tag!"]}, "tags[0]"),
    ({"external_ids": {"": "x"}}, "external_ids"),
    ({"locale": "english please"}, "locale"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
def test_bad_registration_names_the_field_and_writes_nothing(
    store: StoreHandle, bad: dict[str, object], field: str
) -> None:
    with store.open() as ledger:
        head = ledger.recorder.max_notification_id()
        keys_before = store.key_count()
        with pytest.raises(ValidationFailed) as info:
            ledger.register(person(**bad), actor=ACTOR)
        assert any(v.field.startswith(field) for v in info.value.violations), info.value
        assert ledger.recorder.max_notification_id() == head
        assert store.key_count() == keys_before


def test_every_bad_field_is_reported_at_once(store: StoreHandle) -> None:
    with store.open() as ledger:
        with pytest.raises(ValidationFailed) as info:
            ledger.register(
                person(emails=["nope"], birth_date="31/12/1990", phones=["x"]), actor=ACTOR
            )
        fields = {v.field for v in info.value.violations}
        assert {"emails[0]", "birth_date", "phones[0]"} <= fields


def test_bad_change_writes_nothing(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = register(ledger)
        with pytest.raises(ValidationFailed) as info:
            ledger.change(
                customer_id, {"emails": ["ok@example.org", "bad@"], "owner": "x"}, actor=ACTOR
            )
        assert {v.field for v in info.value.violations} >= {"emails[1]", "owner"}
        with pytest.raises(ValidationFailed):
            ledger.change(
                customer_id,
                {
                    "given_name": None,
                    "family_name": None,
                    "emails": None,
                    "phones": None,
                    "external_ids": None,
                },
                actor=ACTOR,
            )
        with pytest.raises(ValidationFailed):
            ledger.assign_owner(customer_id, "no spaces allowed", actor=ACTOR)
        assert ledger.get(customer_id).version == 1


def test_unknown_customer(store: StoreHandle) -> None:
    with store.open() as ledger:
        missing = uuid4()
        with pytest.raises(CustomerNotFound):
            ledger.get(missing)
        with pytest.raises(CustomerNotFound):
            ledger.history(missing)
        with pytest.raises(CustomerNotFound):
            ledger.change(missing, {"tags": ["x"]}, actor=ACTOR)


def test_ciphertext_moved_between_events_does_not_open(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger)
        ledger.change(a, {"emails": ["moved@example.org"]}, actor=ACTOR)
        b = register(ledger)
    # Same customer, another event: the envelope (version, type) no longer matches.
    store.copy_state(src=(a, 2), dst=(a, 1))
    # Another customer's sealed data (and key) in B's first event.
    store.copy_state(src=(a, 2), dst=(b, 1))
    with store.open() as ledger:
        with pytest.raises(SealError) as info:
            ledger.get(a)
        assert "moved@example.org" not in str(info.value)
        with pytest.raises(SealError):
            ledger.history(b)


def test_ciphertext_flipped_byte_does_not_open(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger)
    store.flip_sealed_byte(a, 1)
    with store.open() as ledger, pytest.raises(SealError):
        ledger.get(a)


def test_erasure_of_one_customer(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger, given_name="Erin", family_name="Erased", emails=["erin@example.org"])
        ledger.change(a, {"phones": ["+4930123456"]}, actor=ACTOR)
        b = register(ledger, given_name="Kai", family_name="Kept", emails=["kai@example.org"])
        certificate = ledger.erase(
            a, actor="dpo", legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
        )
        public_key = ledger.signer.public_key_pem()

        assert certificate.verify(public_key)
        assert certificate.certificate.customer_id == str(a)
        assert certificate.certificate.last_version == 3
        assert certificate.certificate.legal_basis == "GDPR Art. 17(1)(a)"
        assert certificate.certificate.key_id

        def check(ledger: CustomerLedger) -> None:
            view = ledger.get(a)
            assert view.status == "erased"
            assert view.personal is ERASED
            assert view.to_json()["given_name"] is None
            history = ledger.history(a)
            assert [h.event_type for h in history] == ["Registered", "ProfileChanged", "Erased"]
            assert history[0].personal is ERASED
            assert history[1].personal is ERASED
            assert history[1].details["changed_fields"] == ["phones"]
            assert history[2].details["legal_basis"] == "GDPR Art. 17(1)(a)"
            assert ledger.as_of(a, version=1).personal is ERASED
            assert ledger.as_of(a, at=datetime.now(tz=UTC)).status == "erased"
            kept = ledger.get(b)
            assert isinstance(kept.personal, dict)
            assert kept.personal["given_name"] == "Kai"
            assert kept.personal["emails"] == ["kai@example.org"]
            with pytest.raises(CustomerErasedError):
                ledger.change(a, {"tags": ["x"]}, actor=ACTOR)
            with pytest.raises(CustomerErasedError):
                ledger.assign_owner(a, "someone", actor=ACTOR)
            with pytest.raises(CustomerErasedError):
                ledger.erase(a, actor="dpo", legal_basis="again")

        check(ledger)
    with store.open() as reopened:  # and in a fresh process, with no cache at all
        check(reopened)
        again = reopened.register(
            person(given_name="Erin", family_name="Erased", emails=["erin@example.org"]),
            actor=ACTOR,
        )
        assert again != a
        assert reopened.get(again).personal != ERASED


def test_erasure_certificate_round_trips_and_detects_any_change(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger)
        signed = ledger.erase(a, actor="dpo", legal_basis="CCPA 1798.105", reason="request")
        public_key = ledger.signer.public_key_pem()
    parsed = SignedCertificate.from_json(signed.to_json())
    assert parsed.verify(public_key)
    text = signed.to_json()
    start = text.index(str(a))
    forged = text[:start] + str(uuid4()) + text[start + 36 :]
    assert not SignedCertificate.from_json(forged).verify(public_key)


def test_restored_key_store_is_shredded_again_before_any_read(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger)
        b = register(ledger)
    backup = store.backup_keys()
    with store.open() as ledger:
        ledger.erase(a, actor="dpo", legal_basis="GDPR Art. 17")
    store.restore_keys(backup)  # the backup still holds A's key
    with store.open() as ledger:
        assert ledger.get(a).personal is ERASED
        assert ledger.keys.store.get(a) is None
        assert isinstance(ledger.get(b).personal, dict)


def test_kek_rotation_rewraps_keys_and_touches_no_event(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = register(ledger)
        before = store.event_rows()
        provider = ledger.keys.store.provider
        old = provider.active_kek_id()
        provider.rotate()
        assert ledger.keys.store.rewrap_all() == 1
        provider.retire(old)
    assert store.event_rows() == before
    with store.open() as ledger:
        assert isinstance(ledger.get(a).personal, dict)
