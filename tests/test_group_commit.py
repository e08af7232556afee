"""Group commit keeps every guarantee of one-command-per-transaction writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.crypto_shred.keystore import KeyAlreadyExists
from ledger.domain.errors import StaleVersion
from tests.helpers import StoreHandle, person


class Gate:
    """Holds the committer inside its first transaction until the test has queued more
    commands, so the next batch provably holds all of them."""

    def __init__(self, ledger: CustomerLedger) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []
        save: Callable[[Sequence[Any], Sequence[Any]], object] = ledger.committer._save
        self._first = True

        def gated(events: Sequence[Any], new_keys: Sequence[Any]) -> object:
            self.sizes.append(len(events))
            if self._first:
                self._first = False
                self.entered.set()
                assert self.release.wait(30)
            return save(events, new_keys)

        ledger.committer._save = gated


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_queued(ledger: CustomerLedger, count: int) -> None:
    deadline = time.monotonic() + 10
    while ledger.committer.ready() < count:
        assert time.monotonic() < deadline, "commands did not queue"
        time.sleep(0.005)


def test_concurrent_commands_share_a_transaction_and_a_conflict_fails_alone(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        target = ledger.register(person(), actor="t")
        gate = Gate(ledger)
        blocker, _ = in_thread(lambda: ledger.register(person(), actor="t"))
        assert gate.entered.wait(10)

        registrations = [
            in_thread(lambda i=i: ledger.register(person(given_name=f"Batch{i}"), actor="t"))
            for i in range(6)
        ]
        first_change = in_thread(
            lambda: ledger.change(target, {"tags": ["first"]}, actor="t", expected_version=1)
        )
        wait_queued(ledger, 7)
        second_change = in_thread(
            lambda: ledger.change(target, {"tags": ["second"]}, actor="t", expected_version=1)
        )
        wait_queued(ledger, 8)
        gate.release.set()
        for thread, _ in [*registrations, first_change, second_change]:
            thread.join(30)
        blocker.join(30)

        # One transaction for the first command, one attempt for all eight queued ones,
        # then (after the conflict) one at a time.
        assert gate.sizes[0] == 1
        assert gate.sizes[1] == 8
        assert "error" not in first_change[1]
        assert isinstance(second_change[1]["error"], StaleVersion)
        ids = [outcome["value"] for _, outcome in registrations]
        assert all(isinstance(i, UUID) for i in ids)
        for customer_id in ids:
            assert ledger.get(customer_id).version == 1
        view = ledger.get(target)
        assert (view.version, view.tags) == (2, ["first"])


def test_lone_caller_is_committed_without_waiting(store: StoreHandle) -> None:
    with store.open() as ledger:
        for _ in range(5):
            ledger.register(person(), actor="t")
        assert ledger.committer.batches == ledger.committer.writes == 5


LOADER = r"""
import sys, threading
from ledger.bootstrap import open_ledger
from ledger.config import Settings
from tests.helpers import person
settings = Settings(store_url=sys.argv[1], data_dir=__import__("pathlib").Path(sys.argv[2]))
ledger = open_ledger(settings)
lock = threading.Lock()
def work(n):
    for i in range(10_000):
        cid = ledger.register(person(given_name=f"Load{n}x{i}"), actor="load")
        with lock:
            print(cid, flush=True)
threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_sigkill_during_load_loses_no_acknowledged_command(store: StoreHandle) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    loader = subprocess.Popen(
        [sys.executable, "-c", LOADER, store.settings.store_url, str(store.workdir)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert loader.stdout is not None
    acknowledged: list[str] = []
    while len(acknowledged) < 300:
        line = loader.stdout.readline()
        assert line, "the loader stopped early"
        acknowledged.append(line.strip())
    loader.send_signal(signal.SIGKILL)
    loader.wait(30)

    with store.open() as ledger:
        for customer_id in acknowledged:
            view = ledger.get(UUID(customer_id))
            assert isinstance(view.personal, dict)
            assert view.personal["given_name"].startswith("Load")
        # No partial batch: every stored event opens (its key exists) and every stored
        # customer is complete (a Registered event at version 1).
        rows = store.event_rows()
        assert len(rows) >= len(acknowledged)
        for row in rows:
            customer = ledger.get(UUID(str(row[0])))
            assert isinstance(customer.personal, dict)
    print(json.dumps({"acknowledged": len(acknowledged), "stored": len(rows)}))


def test_a_bad_command_in_a_batch_fails_alone(store: StoreHandle) -> None:
    """A registration under a reserved id whose key was destroyed (an erased customer) is
    refused by the key store inside the batch: it alone fails, with a clear error, and
    leaves nothing behind; its batch-mates commit."""
    with store.open() as ledger:
        erased = ledger.register(person(), actor="t")
        ledger.erase(erased, actor="t", legal_basis="test")
        events_before = len(store.event_rows())
        gate = Gate(ledger)
        blocker, _ = in_thread(lambda: ledger.register(person(), actor="t"))
        assert gate.entered.wait(10)

        bad = in_thread(lambda: ledger.register(person(), actor="t", customer_id=erased))
        good = [
            in_thread(lambda i=i: ledger.register(person(given_name=f"Mate{i}"), actor="t"))
            for i in range(4)
        ]
        bad[0].join(30)
        wait_queued(ledger, 4)
        gate.release.set()
        for thread, _ in good:
            thread.join(30)
        blocker.join(30)

        assert isinstance(bad[1]["error"], KeyAlreadyExists)
        assert str(erased) in str(bad[1]["error"])
        assert gate.sizes[1] == 4
        for _, outcome in good:
            assert ledger.get(outcome["value"]).version == 1
        assert ledger.get(erased).is_erased
        assert len(store.event_rows()) == events_before + 5


def test_a_write_meeting_its_own_committed_events_succeeds_once(store: StoreHandle) -> None:
    """A connection lost after the store committed but before it said so: the save is
    tried again (the event-sourcing library retries on connection errors) and meets its
    own rows. That is the write succeeding, not a conflict: under a PostgreSQL restart it
    answered ConflictingWrite (INTERNAL) although the customer was stored."""
    with store.open() as ledger:
        save: Callable[[Sequence[Any], Sequence[Any]], object] = ledger.committer._save
        attempts: list[int] = []

        def committed_then_retried(events: Sequence[Any], new_keys: Sequence[Any]) -> object:
            attempts.append(len(events))
            save(events, new_keys)  # commits; its acknowledgement is "lost" ...
            return save(events, new_keys)  # ... so the same save runs again

        ledger.committer._save = committed_then_retried
        before = len(store.event_rows())
        customer_id = ledger.register(person(given_name="Once"), actor="t")
        changed_to = ledger.change(customer_id, {"tags": ["vip"]}, actor="t", expected_version=1)
        ledger.committer._save = save
        assert attempts
        assert changed_to
        view = ledger.get(customer_id)
        assert (view.version, view.tags) == (2, ["vip"])
        assert isinstance(view.personal, dict) and view.personal["given_name"] == "Once"
        assert len(store.event_rows()) == before + 2  # each event stored once

        # A real conflict is still one: see the StaleVersion in the first test here.
