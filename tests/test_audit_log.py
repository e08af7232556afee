"""The Merkle log as the application writes it, on both stores: leaves in the events' own
transaction (one per event, also for a batch), tree heads, proofs checked by the auditor's
standalone checker, the access log, field history, and erasure leaving the tree untouched."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from ledger.application import CustomerLedger
from ledger.audit import client_check, merkle
from ledger.audit import recorders as recorders_module
from ledger.audit.proofs import ProofUnavailable, consistency_proof, inclusion_proof
from ledger.audit.storage import AuditStore
from ledger.audit.tree_heads import RefusedToSign, issue_tree_head
from ledger.audit.verifier import verify
from ledger.domain.customer import Customer
from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS, validate_registration
from tests.helpers import StoreHandle, person


def audit(store: StoreHandle) -> AuditStore:
    return AuditStore.open(store.settings)


def tree(store: StoreHandle) -> tuple[list[Any], list[Any]]:
    """(events, leaves as (leaf index, position, hash)) straight from the store."""
    with audit(store) as view, view.snapshot():
        events = list(view.events())
        leaves = [(r[0], r[1], bytes(r[2])) for r in view.tree_rows()]
    return events, leaves


def assert_log_matches(store: StoreHandle) -> None:
    events, leaves = tree(store)
    assert [(i, e.position, merkle.leaf_hash(e.leaf())) for i, e in enumerate(events)] == leaves
    with audit(store) as view:
        assert view.root(len(leaves)) == merkle.root_of(h for _, _, h in leaves)


def test_every_event_gets_its_leaf_in_the_same_transaction(store: StoreHandle) -> None:
    with store.open() as ledger:
        first = ledger.register(person(), actor="t")
        ledger.change(first, {"tags": ["vip"]}, actor="t")
        ledger.read(first, principal="t", purpose="test")
    assert_log_matches(store)
    events, leaves = tree(store)
    assert len(events) == len(leaves) == 3


def test_a_batch_of_events_from_many_commands_appends_one_leaf_each_in_order(
    store: StoreHandle,
) -> None:
    """What group commit will do: several aggregates' events in one insert."""
    with store.open() as ledger:
        ledger.register(person(), actor="t")  # an odd-sized tree to start from
        customers = []
        for n in range(6):
            customer_id = uuid4()
            ledger.keys.create(customer_id)
            profile = validate_registration(person(given_name=f"Batch{n}"), default_region=None)
            customer = Customer.register(customer_id, profile, "t", None)
            customer.assign_owner("team.b", "t", None)
            customers.append(customer)
        recordings = ledger.save(*customers)  # one insert_events call, 12 events
    assert len(recordings) == 12
    assert_log_matches(store)
    assert len(tree(store)[1]) == 13


def test_leaves_never_commit_without_their_events_nor_the_reverse(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.open() as ledger:
        ledger.register(person(), actor="t")

        def fail(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("appending leaves failed")

        monkeypatch.setattr(recorders_module, "append_leaves", fail)
        with pytest.raises(RuntimeError):
            ledger.register(person(), actor="t")
        monkeypatch.undo()
        ledger.register(person(), actor="t")
    events, leaves = tree(store)
    assert len(events) == len(leaves) == 2
    assert_log_matches(store)


def test_concurrent_writers_keep_leaf_order_equal_to_log_order(store: StoreHandle) -> None:
    # Opened one after the other: the library's own table creation is not safe to run
    # concurrently on PostgreSQL (CREATE OR REPLACE FUNCTION races); writing is.
    ledgers = [store.open() for _ in range(3)]

    def write(ledger: CustomerLedger) -> None:
        for _ in range(4):
            ledger.register(person(), actor="t")

    threads = [threading.Thread(target=write, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.close()
    assert_log_matches(store)
    with store.open() as ledger:
        public_key = ledger.signer.public_key_pem()
    with audit(store) as view:
        report = verify(view, public_key)
    assert report.ok, report.to_json()
    assert report.events == 12


def test_tree_heads_are_issued_as_the_log_grows_and_kept(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = ledger.register(person(), actor="t")
    with store.open():
        pass  # nothing written: no new head
    with store.open() as ledger:
        ledger.change(customer_id, {"tags": ["x"]}, actor="t")
        public_key = ledger.signer.public_key_pem()
        again = ledger.issue_tree_head()
    with audit(store) as view:
        heads = view.tree_heads()
    assert [h.tree_size for h in heads] == [1, 2]
    assert again == heads[-1]
    assert all(h.verify(public_key) for h in heads)
    with audit(store) as view:
        assert heads[-1].root_hash == view.root(2)


def test_proofs_for_every_event_check_out_with_only_the_public_key(store: StoreHandle) -> None:
    with store.open() as ledger:
        ids = [ledger.register(person(), actor="t") for _ in range(3)]
    with store.open() as ledger:
        ledger.change(ids[1], {"tags": ["x"]}, actor="t")
        ledger.erase(ids[2], actor="t", legal_basis="GDPR Art. 17", reason="request")
        public_key = ledger.signer.public_key_pem()
    with audit(store) as view:
        for customer_id, version in [(ids[0], 1), (ids[1], 1), (ids[1], 2), (ids[2], 2)]:
            document = inclusion_proof(view, customer_id, version).to_json()
            client_check.check_inclusion_document(document, public_key)
            # against an older head too, while it covers the event
            if version == 1 and customer_id != ids[2]:
                old = inclusion_proof(view, customer_id, version, tree_size=3).to_json()
                client_check.check_inclusion_document(old, public_key)
        assert [h.tree_size for h in view.tree_heads()] == [3, 5]  # one per session
        for old_size in (3, 5):
            client_check.check_consistency_document(
                consistency_proof(view, old_size).to_json(), public_key
            )
        with pytest.raises(ProofUnavailable):
            inclusion_proof(view, ids[1], 2, tree_size=3)  # not yet in that head
        with pytest.raises(ProofUnavailable):
            inclusion_proof(view, ids[0], 9)
        with pytest.raises(ProofUnavailable):
            consistency_proof(view, 4)  # no signed head of that size


def test_a_tampered_proof_document_is_refused(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = ledger.register(person(), actor="t")
        ledger.register(person(), actor="t")
        public_key = ledger.signer.public_key_pem()
    with audit(store) as view:
        document = inclusion_proof(view, customer_id, 1).to_json()
    forged = dict(document, position=99)
    with pytest.raises(client_check.CheckFailed):
        client_check.check_inclusion_document(forged, public_key)
    head = dict(document["tree_head"], tree_size=5)
    with pytest.raises(client_check.CheckFailed):
        client_check.verify_tree_head(head, public_key)


def test_reads_of_personal_data_are_recorded_without_personal_data(store: StoreHandle) -> None:
    with store.open() as ledger:
        first = ledger.register(person(), actor="clerk")
        second = ledger.register(person(), actor="clerk")
        ledger.read(first, principal="alice", purpose="kyc-review")
        ledger.read_history(second, principal="bob", purpose="support")
        ledger.read_as_of(first, principal="bob", purpose="dispute", version=1)
        ledger.read_field_history(first, "emails", principal="carol", purpose="audit")
        ledger.read_field_history(first, "owner", principal="carol", purpose="audit")  # public
        entries = list(ledger.access_log.entries())
        assert [(e.principal, e.purpose) for e in entries] == [
            ("alice", "kyc-review"),
            ("bob", "support"),
            ("bob", "dispute"),
            ("carol", "audit"),
        ]
        assert entries[0].fields == sorted(PERSONAL_FIELDS)
        assert entries[3].fields == ["emails"]
        assert [e.principal for e in ledger.access_log.entries(customer_id=first)] == [
            "alice",
            "bob",
            "carol",
        ]
        assert [e.purpose for e in ledger.access_log.entries(principal="bob")] == [
            "support",
            "dispute",
        ]
        since = entries[2].at
        assert len(list(ledger.access_log.entries(since=since))) == 2
        assert len(list(ledger.access_log.entries(until=entries[0].at))) == 1
        with pytest.raises(ValidationFailed) as refused:
            ledger.read(first, principal=" ", purpose="")
        assert {v.field for v in refused.value.violations} == {"principal", "purpose"}
        assert len(list(ledger.access_log.entries())) == 4  # nothing written
    dump = store.dump_bytes()
    for secret in (b"Testa", b"testa.person@example.org", b"Hauptstra"):
        assert secret not in dump
    assert_log_matches(store)


def test_field_history_follows_one_field_through_erasure(store: StoreHandle) -> None:
    with store.open() as ledger:
        customer_id = ledger.register(person(), actor="clerk")
        ledger.change(customer_id, {"emails": ["new@example.org"]}, actor="clerk", reason="move")
        ledger.change(customer_id, {"tags": ["vip"]}, actor="clerk")
        ledger.change(customer_id, {"external_id:CRM": "C-2"}, actor="clerk")
        ledger.assign_owner(customer_id, "sales.apac", actor="boss")
        emails = ledger.read_field_history(customer_id, "emails", principal="a", purpose="p")
        assert [(c.version, c.value, c.reason) for c in emails] == [
            (1, ["testa.person@example.org"], None),
            (2, ["new@example.org"], "move"),
        ]
        crm = ledger.read_field_history(customer_id, "external_id:CRM", principal="a", purpose="p")
        assert [(c.version, c.value) for c in crm] == [(1, "C-1"), (4, "C-2")]
        owner = ledger.read_field_history(customer_id, "owner", principal="a", purpose="p")
        assert [(c.version, c.value, c.actor) for c in owner] == [
            (1, "sales.emea", "clerk"),
            (5, "sales.apac", "boss"),
        ]
        with pytest.raises(ValidationFailed) as refused:
            ledger.read_field_history(customer_id, "shoe_size", principal="a", purpose="p")
        assert refused.value.violations[0].field == "field"
        ledger.erase(customer_id, actor="dpo", legal_basis="GDPR Art. 17", reason="request")
        after = ledger.read_field_history(customer_id, "emails", principal="a", purpose="p")
        assert [(c.version, c.erased, c.value) for c in after] == [
            (1, True, None),
            (2, True, None),
            (6, True, None),
        ]
        assert after[2].event_type == "Erased"


def test_erasure_changes_no_leaf_and_old_heads_stay_consistent(store: StoreHandle) -> None:
    with store.open() as ledger:
        ids = [ledger.register(person(), actor="t") for _ in range(3)]
        public_key = ledger.signer.public_key_pem()
    events_before, leaves_before = tree(store)
    with audit(store) as view:
        saved = view.latest_tree_head()
        assert verify(view, public_key).ok
    with store.open() as ledger:
        ledger.erase(ids[1], actor="dpo", legal_basis="GDPR Art. 17", reason="request")
        ledger.read_history(ids[1], principal="auditor", purpose="check")
    events_after, leaves_after = tree(store)
    assert leaves_after[: len(leaves_before)] == leaves_before
    assert events_after[: len(events_before)] == events_before
    with audit(store) as view:
        report = verify(view, public_key, saved_head=saved)
        assert report.ok, report.to_json()
        assert saved is not None
        client_check.check_consistency_document(
            consistency_proof(view, saved.tree_size).to_json(), public_key
        )


def test_the_ledger_refuses_to_sign_a_truncated_or_forked_tree(store: StoreHandle) -> None:
    with store.open() as ledger:
        for _ in range(3):
            ledger.register(person(), actor="t")
        signer = ledger.signer
    store.execute("DELETE FROM ledger_merkle_leaves WHERE leaf_index = 2")
    with audit(store) as view, pytest.raises(RefusedToSign):
        issue_tree_head(view, signer)
    with store.open() as ledger:
        ledger.register(person(), actor="t")  # appends leaf 2 again, with another event
    with audit(store) as view, pytest.raises(RefusedToSign, match="no longer has the root"):
        issue_tree_head(view, signer)  # size 3 again, but not the signed size-3 tree
    with store.open() as ledger:
        ledger.register(person(), actor="t")
    with audit(store) as view, pytest.raises(RefusedToSign, match="does not extend"):
        issue_tree_head(view, signer)  # size 4 does not extend the signed size-3 root


def test_events_written_before_the_audit_layer_are_adopted_once(
    store: StoreHandle, tmp_path: Path
) -> None:
    with store.open() as ledger:
        first = ledger.register(person(), actor="t")
        ledger.change(first, {"tags": ["a"]}, actor="t")
        public_key = ledger.signer.public_key_pem()
    # As a store from before the audit layer: no tree, no heads.
    store.execute("DELETE FROM ledger_merkle_leaves")
    store.execute("DELETE FROM ledger_tree_heads")
    with store.open() as ledger:
        ledger.register(person(), actor="t")
    assert_log_matches(store)
    with audit(store) as view:
        assert verify(view, public_key).ok


def test_verify_on_a_store_without_audit_tables_says_so(tmp_path: Path) -> None:
    import sqlite3

    from ledger.audit.storage import NotALedgerStore, SQLiteAuditStore

    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    with SQLiteAuditStore(path) as view, pytest.raises(NotALedgerStore, match="no stored_events"):
        view.check_tables()
