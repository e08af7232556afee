"""Inline projections are written in the transaction that stores their events (group
commit: events, Merkle leaves and projection rows in one commit), and a projection that
fails there never fails the command: the events are stored on their own and the
projections catch up from the log."""

from __future__ import annotations

import threading
from dataclasses import replace
from uuid import UUID

import pytest

from ledger.application import CustomerLedger
from ledger.audit.storage import TREE_TABLE, AuditStore
from ledger.audit.verifier import verify
from ledger.bootstrap import open_ledger
from ledger.projections.runner import ProjectionRunner
from ledger.projections.store import ProjectionDatabase
from ledger.projections.wiring import customer_queries, runner_of
from tests.helpers import StoreHandle, person
from tests.projection_support import Trail

ACTOR = "test-suite"


def _positions_in_log(ledger: CustomerLedger) -> list[int]:
    return [n.id for n in ledger.recorder.select_notifications(start=1, limit=10_000)]


def _trail(store: StoreHandle) -> list[int]:
    return sorted(int(r[0]) for r in store.execute("SELECT position FROM test_trail"))


def _leaves(store: StoreHandle) -> int:
    return int(store.execute(f"SELECT COUNT(*) FROM {TREE_TABLE}")[0][0])


def test_projection_rows_commit_with_their_events(store: StoreHandle) -> None:
    with store.open() as ledger:
        runner = runner_of(ledger)
        first = ledger.register(person(given_name="Ada"), actor=ACTOR)
        # Already at the head when the command returns: no catch-up was needed for it.
        assert not runner.behind
        head = runner.head()
        assert set(runner.positions().values()) == {head}
        assert customer_queries(ledger).get(first) is not None
        ledger.change(first, {"tags": ["vip"]}, actor=ACTOR)
        assert not runner.behind
        record = customer_queries(ledger).get(first)
        assert record is not None and record.tags == ["vip"]
        assert set(runner.positions().values()) == {runner.head()}


def test_concurrent_commands_share_commits_and_all_reach_the_projections(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        ids: list[UUID] = []
        lock = threading.Lock()

        def register(n: int) -> None:
            for i in range(10):
                customer = ledger.register(person(given_name=f"T{n}x{i}"), actor=ACTOR)
                with lock:
                    ids.append(customer)

        threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(ids) == 80
        assert ledger.committer.batches < 80  # some commands did share a transaction
        queries = customer_queries(ledger)
        assert all(queries.get(customer) is not None for customer in ids)
        assert set(runner_of(ledger).positions().values()) == {runner_of(ledger).head()}


def test_a_failing_projection_never_fails_the_command_nor_half_writes(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        ledger.register(person(given_name="Before"), actor=ACTOR)
        db = ProjectionDatabase.open(store.settings)
        try:
            trail = Trail()
            runner = ProjectionRunner(ledger, db, [trail])
            runner.setup()
            runner.catch_up()
            assert _trail(store) == _positions_in_log(ledger)
            trail.fail_at = 1  # the next apply raises `Crash`, once
            ledger.inline_projections = runner
            ledger.after_save = [runner.catch_up_quietly]
            leaves_before = _leaves(store)
            customer = ledger.register(person(given_name="During"), actor=ACTOR)
            # Stored once (the aborted attempt left no event and no leaf behind) ...
            log = _positions_in_log(ledger)
            assert [
                n.originator_id for n in ledger.recorder.select_notifications(start=1, limit=10_000)
            ].count(customer) == 1
            assert _leaves(store) == leaves_before + 1 == len(log)
            # ... and projected by the catch-up after the save, before the command returned.
            assert _trail(store) == log
            assert runner.positions()["test_trail"] == log[-1]
            assert trail.fail_at is None  # it did fail, inside the events' transaction
            assert not runner.behind
            # The aborted attempt had appended Merkle leaves too (then rolled back): the
            # next writes must build on the stored tree, not on the abandoned one.
            for i in range(3):
                ledger.register(person(given_name=f"After{i}"), actor=ACTOR)
            with AuditStore.open(store.settings) as audit:
                report = verify(audit, ledger.signer.public_key_pem())
            assert report.ok and report.leaves == len(_positions_in_log(ledger))
        finally:
            db.close()


def test_events_another_process_wrote_are_caught_up_before_the_next_command_returns(
    store: StoreHandle,
) -> None:
    worker_settings = replace(store.settings, projection_mode="worker")
    with open_ledger(worker_settings) as elsewhere:
        unseen = elsewhere.register(person(given_name="Elsewhere"), actor=ACTOR)
    with store.open() as ledger:
        runner = runner_of(ledger)
        mine = ledger.register(person(given_name="Mine"), actor=ACTOR)
        queries = customer_queries(ledger)
        assert queries.get(unseen) is not None
        assert queries.get(mine) is not None
        assert set(runner.positions().values()) == {runner.head()}
        assert not runner.behind


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_new_keys_commit_with_their_events_or_not_at_all(store: StoreHandle) -> None:
    """With the key store in the event store's database, a new customer's data key is
    stored in the transaction that stores its events: an event insert that fails inside
    the database leaves no key behind (no orphan), and a success stores both at once."""
    with store.open() as ledger:
        assert ledger.keys_with_events
        batches = ledger.committer.batches
        first = ledger.register(person(given_name="Keyed"), actor=ACTOR)
        assert ledger.committer.batches == batches + 1  # one transaction: key and events
        assert ledger.keys.store.get(first) is not None
        keys_before = store.execute("SELECT COUNT(*) FROM ledger_data_keys")[0][0]
        store.execute(
            "CREATE FUNCTION refuse_event() RETURNS trigger AS"
            " $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql"
        )
        store.execute(
            "CREATE TRIGGER refuse_event BEFORE INSERT ON ledger_events"
            " FOR EACH ROW EXECUTE FUNCTION refuse_event()"
        )
        try:
            with pytest.raises(Exception, match="injected failure"):
                ledger.register(person(given_name="Refused"), actor=ACTOR)
        finally:
            store.execute("DROP TRIGGER refuse_event ON ledger_events")
            store.execute("DROP FUNCTION refuse_event()")
        assert store.execute("SELECT COUNT(*) FROM ledger_data_keys")[0][0] == keys_before
        later = ledger.register(person(given_name="Later"), actor=ACTOR)
        personal = ledger.get(later).personal
        assert isinstance(personal, dict) and personal["given_name"] == "Later"


def test_two_writers_on_one_store_keep_one_valid_merkle_tree(store: StoreHandle) -> None:
    """Each writer remembers the tree's right edge it left; another writer appending in
    between must make it read the edge again (several server processes, or the CLI
    beside a server, write to one store)."""
    with store.open() as one, store.open() as two:
        for i in range(6):
            (one if i % 3 else two).register(person(given_name=f"W{i}"), actor=ACTOR)
        one.change(
            one.register(person(given_name="Both"), actor=ACTOR), {"tags": ["x"]}, actor=ACTOR
        )
        with AuditStore.open(store.settings) as audit:
            report = verify(audit, one.signer.public_key_pem())
        assert report.ok and report.leaves == len(_positions_in_log(one))


def test_access_records_move_the_positions_so_the_next_command_applies_inline(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        runner = runner_of(ledger)
        customer = ledger.register(person(given_name="Read"), actor=ACTOR)
        ledger.access_log.record("auditor", "audit", [customer], ["given_name"])
        # No projection reads access records, yet every position is past them ...
        assert set(runner.positions().values()) == {runner.head()}
        skipped_before = runner._skipped_through
        ledger.change(customer, {"tags": ["after-read"]}, actor=ACTOR)
        # ... so the next command was applied in its own transaction, not caught up after.
        assert runner._skipped_through == skipped_before and not runner.behind
        record = customer_queries(ledger).get(customer)
        assert record is not None and record.tags == ["after-read"]
