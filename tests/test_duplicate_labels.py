"""Labels on both stores: "not a duplicate" is an audited event on both customers, honoured
by every way duplicates are reported (look-ups of either customer, the batch report, the
CLI), refused cleanly when it makes no sense, and gone with an erased customer; merges and
unmerges are labelled pairs too, and a rebuild from 0 gives the same label rows."""

from __future__ import annotations

import json
import random
from typing import Any
from uuid import UUID

import grpc
import pytest

from ledger.application import CustomerLedger
from ledger.domain.errors import CustomerMergedError, CustomerNotFound, MergeRefused
from ledger.projections.dedup import Cluster, DuplicateReport, ScoredPair, starting_model
from ledger.projections.duplicate_index import DuplicateIndexProjection
from ledger.projections.duplicate_labels import LABELS, pair_of
from ledger.projections.duplicates import without_pairs
from ledger.projections.wiring import duplicate_queries, runner_of
from ledger.v1 import audit_service_pb2 as audit_pb2
from ledger.v1 import customer_service_pb2 as pb
from tests.api_support import Api, api, customer, fails
from tests.helpers import StoreHandle, person
from tests.namesake_samples import chinese_person, returning
from tests.projection_support import dump_tables
from tests.test_duplicate_search import as_json, ledger_cli

__all__ = ["api"]  # the fixture
ACTOR = "test-suite"
Code = grpc.StatusCode


def _twins(ledger: CustomerLedger) -> tuple[UUID, UUID]:
    """Two customers every path reports as likely duplicates of each other."""
    first = ledger.register(person(), actor=ACTOR)
    second = ledger.register(person(emails=["t.person@example.org"]), actor=ACTOR)
    queries = duplicate_queries(ledger)
    assert [m.customer_id for m in queries.candidates_of(first)] == [str(second)]
    return first, second


def _reported_pairs(ledger: CustomerLedger) -> set[tuple[str, str]]:
    report = duplicate_queries(ledger).report(0.5).report
    return {pair_of(p.first, p.second) for p in report.pairs}


def test_dismissal_is_an_audited_event_on_both_and_honoured_by_every_path(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
        assert pair_of(first, second) in _reported_pairs(ledger)
        ledger.dismiss_duplicate(first, second, actor="reviewer", reason="twins")

        for one, other in ((first, second), (second, first)):
            last = ledger.history(one)[-1]
            assert last.event_type == "DuplicateDismissed"
            assert last.actor == "reviewer" and last.reason == "twins"
            stored = store.state_of(one, ledger.get(one).version)
            assert str(other).encode() in stored  # readable: ids, actor and reason only
            assert b"Testa" not in stored and b"example.org" not in stored

        queries = duplicate_queries(ledger)
        assert queries.candidates_of(first) == [] and queries.candidates_of(second) == []
        assert pair_of(first, second) not in _reported_pairs(ledger)
        clusters = queries.report(0.5).report.clusters
        assert not any({str(first), str(second)} <= set(c.customer_ids) for c in clusters)
        assert queries.labels().non_matches == {pair_of(first, second)}

        # A third record of the same person is still reported with each of them.
        third = ledger.register(person(emails=["testa@example.org"]), actor=ACTOR)
        assert {m.customer_id for m in queries.candidates_of(third)} == {str(first), str(second)}
        assert [m.customer_id for m in queries.candidates_of(first)] == [str(third)]


def test_dismissal_through_the_cli(store: StoreHandle) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
    done = as_json(ledger_cli(store, "dismiss-duplicate", str(first), str(second), "--json",
                              "--reason", "checked by phone"))  # fmt: skip
    assert done == {"customer_ids": [str(first), str(second)], "dismissed": True}
    found = as_json(ledger_cli(store, "duplicates", "--of", str(second), "--min-score", "0",
                               "--json"))  # fmt: skip
    assert found["matches"] == []
    report = as_json(ledger_cli(store, "duplicates", "--min-score", "0", "--json"))
    assert [str(first), str(second)] not in [sorted(p["customer_ids"]) for p in report["pairs"]]
    refused = ledger_cli(store, "dismiss-duplicate", str(first), str(first), code=3)
    assert "its own duplicate" in refused.stderr
    unknown = ledger_cli(store, "dismiss-duplicate", str(first), "not-an-id", code=2)
    assert "not-an-id" in unknown.stderr or "customer id" in unknown.stderr


def test_dismissal_refused_without_writing_anything(store: StoreHandle) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
        merged = ledger.register(person(emails=["m@example.org"]), actor=ACTOR)
        ledger.merge(first, merged, actor=ACTOR)
        versions = {c: ledger.get(c).version for c in (first, second, merged)}
        events = len(store.event_rows())
        with pytest.raises(MergeRefused, match="its own duplicate"):
            ledger.dismiss_duplicate(first, first, actor=ACTOR)
        with pytest.raises(CustomerMergedError):
            ledger.dismiss_duplicate(second, merged, actor=ACTOR)
        with pytest.raises(CustomerNotFound):
            ledger.dismiss_duplicate(second, UUID(int=7), actor=ACTOR)
        assert {c: ledger.get(c).version for c in versions} == versions
        assert len(store.event_rows()) == events
        assert duplicate_queries(ledger).labels().non_matches == frozenset()


def test_erasing_one_side_of_a_dismissed_pair(store: StoreHandle) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
        ledger.dismiss_duplicate(first, second, actor=ACTOR)
        ledger.erase(first, actor="dpo", legal_basis="GDPR Art. 17")
        queries = duplicate_queries(ledger)
        assert queries.labels().non_matches == frozenset()
        rows = store.execute(f"SELECT first_id, second_id FROM {LABELS}")
        assert not any(str(first) in row for row in rows)
        assert ledger.history(second)[-1].event_type == "DuplicateDismissed"  # still audited
        # The survivor is looked up and reported as before; a new twin is found again.
        again = ledger.register(person(emails=["again@example.org"]), actor=ACTOR)
        assert [m.customer_id for m in queries.candidates_of(second)] == [str(again)]
        with pytest.raises(Exception, match="erased"):
            ledger.dismiss_duplicate(first, second, actor=ACTOR)


def test_merges_and_unmerges_are_labels_and_survive_a_rebuild(store: StoreHandle) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
        third = ledger.register(person(emails=["third@example.org"]), actor=ACTOR)
        fourth = ledger.register(person(emails=["fourth@example.org"]), actor=ACTOR)
        ledger.merge(first, second, actor=ACTOR)
        ledger.merge(first, third, actor=ACTOR)
        ledger.unmerge(third, actor=ACTOR)
        ledger.dismiss_duplicate(third, fourth, actor=ACTOR)
        queries = duplicate_queries(ledger)
        labels = queries.labels()
        assert labels.matches == {pair_of(first, second)}
        assert labels.non_matches == {pair_of(first, third), pair_of(third, fourth)}
        assert queries.dismissed_partners(str(third)) == {str(first), str(fourth)}
        assert str(third) not in {m.customer_id for m in queries.candidates_of(first)}

        tables = ("duplicate_keys", "duplicate_records", LABELS)
        incremental = dump_tables(store, tables)
        runner = runner_of(ledger)
        runner.rebuild([DuplicateIndexProjection.name])
        assert dump_tables(store, tables) == incremental
        runner.rebuild_batch_size = 1
        runner.rebuild([DuplicateIndexProjection.name])
        assert dump_tables(store, tables) == incremental


def test_an_edited_label_row_is_an_integrity_failure(store: StoreHandle) -> None:
    with store.open() as ledger:
        first, second = _twins(ledger)
        ledger.dismiss_duplicate(first, second, actor=ACTOR)
        store.execute(f"UPDATE {LABELS} SET label = 'match'")
        tampered: list[Any] = runner_of(ledger).tampered()
        assert [t[:2] for t in tampered] == [(DuplicateIndexProjection.name, LABELS)]
        with pytest.raises(Exception, match="altered outside the ledger"):
            duplicate_queries(ledger).candidates_of(first)
    assert json.dumps([str(t) for t in tampered]).count("Testa") == 0


def test_dismiss_duplicate_through_the_api(api: Api) -> None:
    admin = api.client("root", "admin")
    alices = admin.create_customer(customer(owner="sales.alice"))
    again = admin.create_customer(customer(owner="sales.alice", emails=["ada.l@example.org"]))
    bobs = admin.create_customer(customer(owner="sales.bob", emails=["ada.b@example.org"]))
    service = api.client("crm-sync", "service")

    def found_for(name: str) -> set[str]:
        request = pb.FindDuplicatesRequest(name=name)
        return {m.customer.name for m in service.customers.FindDuplicates(
            request, **service.call_options).matches}  # fmt: skip

    assert found_for(alices.name) == {again.name, bobs.name}
    alice = api.client("sales.alice", "sales")
    fails(lambda: alice.dismiss_duplicate(alices.name, bobs.name), Code.PERMISSION_DENIED)
    details = fails(lambda: alice.dismiss_duplicate(alices.name, alices.name),
                    Code.INVALID_ARGUMENT)  # fmt: skip
    assert "other" in json.dumps(details)
    returned = alice.dismiss_duplicate(alices.name, again.name, reason="siblings")
    assert returned.name == alices.name
    assert found_for(alices.name) == {bobs.name}
    assert found_for(again.name) == {bobs.name}
    candidate = pb.FindDuplicatesRequest(candidate=customer(emails=["new@example.org"]))
    assert len(service.customers.FindDuplicates(candidate, **service.call_options).matches) == 3
    events = admin.audit.ListCustomerEvents(
        audit_pb2.ListCustomerEventsRequest(parent=again.name), **admin.call_options
    )
    assert events.events[-1].event_type == "DuplicateDismissed"
    assert events.events[-1].actor == "sales.alice"


def test_the_model_fit_learns_from_merges_and_dismissals(store: StoreHandle) -> None:
    rng = random.Random(17)
    people = [chinese_person(rng, n) for n in range(300)]
    with store.open() as ledger:
        ids = ledger.register_many([(p, []) for p in people], actor=ACTOR)
        again = ledger.register_many(
            [(returning(rng, people[n], n), []) for n in range(4)], actor=ACTOR
        )
        for n in range(3):  # three confirmed pairs: the second records merged away
            ledger.merge(ids[n], again[n], actor=ACTOR)
        ledger.dismiss_duplicate(ids[10], ids[11], actor=ACTOR)
        ledger.dismiss_duplicate(ids[12], ids[13], actor=ACTOR)
        queries = duplicate_queries(ledger)
        labels = queries.labels()
        assert len(labels.matches) == 3 and len(labels.non_matches) == 2
        model = queries.refit()
        assert model.labels == 5  # merged sources are held for the fit though inactive
        result = queries.report(0.5)
        assert result.report.model.labels == 5
        shown = {pair_of(p.first, p.second) for p in result.report.pairs}
        assert not shown & labels.non_matches
        assert str(again[0]) not in result.customer_ids  # merged: never reported


def test_a_report_never_clusters_a_dismissed_pair() -> None:
    a, b, c, d = "a" * 8, "b" * 8, "c" * 8, "d" * 8
    pairs = (ScoredPair(a, b, 0.9, ()), ScoredPair(b, c, 0.8, ()), ScoredPair(a, c, 0.7, ()),
             ScoredPair(c, d, 0.6, ()))  # fmt: skip
    report = DuplicateReport(
        customers=4,
        candidate_pairs=4,
        pairs=pairs,
        clusters=(Cluster((a, b, c, d), 0.6, 0.9),),
        model=starting_model(),
    )
    kept = without_pairs(report, [(c, a)])
    assert [(p.first, p.second) for p in kept.pairs] == [(a, b), (b, c), (c, d)]
    # Strongest first: a-b joins; b-c would put c with a, which the dismissal forbids.
    assert [(k.customer_ids, k.min_score, k.max_score) for k in kept.clusters] == [
        ((a, b), 0.9, 0.9),
        ((c, d), 0.6, 0.6),
    ]
    assert without_pairs(report, []) is report
