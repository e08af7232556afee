"""A real `ledger serve` process killed (SIGKILL) under a concurrent CreateCustomer load from
API clients loses no acknowledged customer and leaves no partial batch: after a restart on
the same store every acknowledged customer reads back, every stored event has its Merkle
leaf, `ledger verify` passes, and every customer in the log has its key row."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from uuid import UUID

import grpc

from bench.server_process import LEDGER, ServerProcess, bench_token
from ledger.audit.storage import AuditStore
from ledger.client import LedgerClient
from ledger.domain.customer import Customer
from tests.api_support import customer
from tests.helpers import StoreHandle

CLIENTS = 8
ACKNOWLEDGED_BEFORE_KILL = 150


def _load(target: str, token: str, n: int, acknowledged: list[str], lock: threading.Lock) -> None:
    """Create customers until the server goes away; record each acknowledged one."""
    with LedgerClient(target, token=token, timeout=30) as client:
        for i in range(100_000):
            try:
                reply = client.create_customer(customer(given_name=f"Load{n}x{i}"))
            except grpc.RpcError:
                return
            with lock:
                acknowledged.append(reply.name)


def test_sigkill_of_the_server_process_under_load_loses_no_acknowledged_create(
    store: StoreHandle,
) -> None:
    settings = store.settings
    data_dir = settings.resolved_data_dir
    token = bench_token(data_dir, settings.store_url, ["service"], principal="crash-test")
    acknowledged: list[str] = []
    lock = threading.Lock()
    with ServerProcess(settings.store_url, data_dir) as server:
        clients = [
            threading.Thread(target=_load, args=(server.target, token, n, acknowledged, lock))
            for n in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
            assert time.monotonic() < deadline, "the load did not get going"
            assert all(t.is_alive() for t in clients), "a client stopped before the kill"
            time.sleep(0.01)
        server.kill()  # mid-load: batches are being written at this moment
        for thread in clients:
            thread.join(60)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= ACKNOWLEDGED_BEFORE_KILL

    with ServerProcess(settings.store_url, data_dir) as server:
        with LedgerClient(server.target, token=token) as client:
            for name in acked:
                reply = client.get_customer(name)
                assert reply.given_name.startswith("Load")
        assert server.stop() == 0  # signs a tree head over everything written

    with store.open() as ledger:
        events = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        customer_ids = {n.originator_id for n in events if n.topic.endswith("Customer.Registered")}
        assert {UUID(name.split("/")[1]) for name in acked} <= customer_ids
        # No partial batch: each customer in the log has its key and its whole first event.
        for customer_id in customer_ids:
            assert isinstance(customer_id, UUID)
            assert ledger.keys.get(customer_id) is not None
            view = ledger.get(customer_id)
            assert view.version >= 1 and isinstance(view.personal, dict)
        registered = [n for n in events if n.topic.endswith("Customer.Registered")]
        assert all(n.originator_version == 1 for n in registered)
        assert all(isinstance(ledger.mapper.to_domain_event(n), Customer.Event) for n in registered)
        with AuditStore.open(settings) as audit:
            assert audit.size() == len(events)  # every stored event has its Merkle leaf

    env = {**server.env}
    verified = subprocess.run(
        [*LEDGER, "verify", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    assert report["events"] == report["leaves"] == len(events)
