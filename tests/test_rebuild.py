"""Rebuilds on both stores: larger batches and a read-ahead thread, yet the same rows as
incremental catch-up (erased and merged customers included); a rebuild interrupted part-way
resumes to the same rows; a runner racing a rebuild applies nothing twice; what a batch
preloads or shares (decrypted states, canonical JSON) does not outlive it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest

from ledger.application import CustomerLedger
from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.keystore import DataKey
from ledger.projections import base, sealed_rows
from ledger.projections.base import (
    PositionedEvent,
    batch_scope,
    keep_preloaded,
    take_preloaded,
)
from ledger.projections.runner import ProjectionRunner
from ledger.projections.sealed_rows import RowSealer, shared_plaintexts
from ledger.projections.store import ProjectionDatabase, Tx
from ledger.projections.wiring import runner_of
from tests.helpers import StoreHandle, person
from tests.projection_support import Crash, Trail, dump_tables
from tests.test_projections import ACTOR, build_history


def _longer_history(ledger: CustomerLedger) -> None:
    """Every kind of event (merges, an unmerge, an erasure), then customers whose later
    events fall in other batches than their registration."""
    build_history(ledger)
    ids = [
        ledger.register(person(given_name=f"R{i}", emails=[f"r{i}@example.org"]), actor=ACTOR)
        for i in range(12)
    ]
    for i, customer_id in enumerate(ids):
        if i % 2 == 0:
            ledger.change(customer_id, {"phones": [f"+49301234{i:03d}"]}, actor=ACTOR)
    ledger.merge(ids[0], ids[1], actor=ACTOR)
    ledger.erase(ids[2], actor="dpo", legal_basis="GDPR Art. 17")
    ledger.change(ids[3], {"tags": ["late"]}, actor=ACTOR)


def test_rebuild_in_any_batch_size_gives_the_rows_of_incremental_catch_up(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:  # inline: projections caught up after every command
        _longer_history(ledger)
        incremental = dump_tables(store)
        assert any(r[2] == "erased" for r in incremental["current_view"])
        assert any(r[2] == "merged" for r in incremental["current_view"])
        runner = runner_of(ledger)
        for size in (1, 4, 7, 2_000):
            runner.rebuild_batch_size = size
            assert runner.rebuild() == runner.head()
            assert dump_tables(store) == incremental, size


class _FailOnce:
    """Wraps a projection's apply so that its `nth` batch fails (rolling back that batch's
    transaction for every projection in it)."""

    def __init__(self, apply: object, nth: int) -> None:
        self.apply = apply
        self.nth = nth
        self.calls = 0

    def __call__(self, tx: Tx, events: Sequence[PositionedEvent]) -> None:
        self.calls += 1
        if self.calls == self.nth:
            raise Crash(f"injected in batch {self.calls}")
        self.apply(tx, events)  # type: ignore[operator]


def test_interrupted_rebuild_resumes_to_the_same_rows(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.open() as ledger:
        _longer_history(ledger)
        incremental = dump_tables(store)
        runner = runner_of(ledger)
        runner.rebuild_batch_size = 5
        quality = runner.get("data_quality")
        monkeypatch.setattr(quality, "apply", _FailOnce(quality.apply, nth=4))
        with pytest.raises(Crash):
            runner.rebuild()
        monkeypatch.undo()
        positions = runner.positions()
        assert set(positions.values()) == {15}  # three batches of five committed
        assert dump_tables(store) != incremental
    with store.open() as reopened:  # another process resumes: nothing held in memory
        resumed = runner_of(reopened)
        assert resumed.catch_up() == resumed.head() - 15
        assert dump_tables(store) == incremental
        # And a second interrupted rebuild, finished by rebuilding again.
        resumed.rebuild_batch_size = 3
        data_quality = resumed.get("data_quality")
        monkeypatch.setattr(data_quality, "apply", _FailOnce(data_quality.apply, nth=2))
        with pytest.raises(Crash):
            resumed.rebuild()
        monkeypatch.undo()
        resumed.rebuild()
        assert dump_tables(store) == incremental


def _trail(store: StoreHandle) -> list[int]:
    return sorted(int(r[0]) for r in store.execute("SELECT position FROM test_trail"))


def test_a_runner_racing_a_rebuild_applies_each_event_once(store: StoreHandle) -> None:
    with store.open() as ledger:
        for i in range(40):
            ledger.register(person(given_name=f"C{i}"), actor=ACTOR)
        expected = [n.id for n in ledger.recorder.select_notifications(start=1, limit=10_000)]
        databases = [ProjectionDatabase.open(store.settings) for _ in range(2)]
        runners = [
            ProjectionRunner(ledger, db, [Trail()], batch_size=3, rebuild_batch_size=4)
            for db in databases
        ]
        runners[0].setup()
        runners[0].catch_up()
        errors: list[BaseException] = []

        def rebuild() -> None:
            try:
                for _ in range(3):
                    runners[0].rebuild()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def catch_up() -> None:
            try:
                for _ in range(20):
                    runners[1].catch_up()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=rebuild), threading.Thread(target=catch_up)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        runners[1].catch_up()
        assert _trail(store) == expected  # a second application would break the key
        for db in databases:
            db.close()


class _OneKey:
    def __init__(self, key: DataKey) -> None:
        self.key = key

    def get(self, customer_id: UUID) -> DataKey | None:
        return self.key if customer_id == self.key.customer_id else None


def test_shared_plaintexts_seal_the_same_bytes_and_end_with_the_batch() -> None:
    customer_id = uuid4()
    keys = KeyRing(_OneKey(DataKey(customer_id, "k1", bytes(range(32)))), ttl=0)  # type: ignore[arg-type]
    view, records = RowSealer(keys, "current_view"), RowSealer(keys, "duplicate_records")
    data = {"given_name": "Ada", "emails": ["ada@example.org"], "tags": [1, 1.0, True]}
    alone = (view.seal(customer_id, 3, data), records.seal(customer_id, 3, data))
    with shared_plaintexts():
        shared = (view.seal(customer_id, 3, dict(data)), records.seal(customer_id, 3, data))
        # Other data under the same customer and version is encoded afresh, not reused.
        other = view.seal(customer_id, 3, {"given_name": "Bea"})
    assert shared == alone
    assert other == view.seal(customer_id, 3, {"given_name": "Bea"})
    assert view.open(customer_id, 3, other) == {"given_name": "Bea"}
    assert sealed_rows._PLAINTEXTS.get() is None  # nothing held after the batch


def test_preloaded_rows_serve_only_their_own_batch_and_end_with_it() -> None:
    projection, events, other = object(), [1], [1]
    keep_preloaded(projection, events, {"a": 1})  # outside a batch: nothing is kept
    assert take_preloaded(projection, events) is None
    with batch_scope():
        keep_preloaded(projection, events, {"a": 1})
        assert take_preloaded(projection, other) is None  # another batch's events
        assert take_preloaded(object(), events) is None  # another projection
        assert take_preloaded(projection, events) == {"a": 1}
        assert take_preloaded(projection, events) is None  # handed over once
        keep_preloaded(projection, events, {"b": 2})
    assert base._PRELOADED.get() is None  # dropped with the batch
    assert sealed_rows._PLAINTEXTS.get() is None
