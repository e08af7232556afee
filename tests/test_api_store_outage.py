"""PostgreSQL going away under load (its backends terminated, as a restart or failover
does) is UNAVAILABLE or ABORTED for the calls it hits, never INTERNAL, and retrying a
CreateCustomer with the same request_id creates exactly one customer."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from uuid import UUID

import grpc
import psycopg
import pytest
from eventsourcing import persistence
from google.rpc import code_pb2

from ledger.api.errors import status_of
from ledger.group_commit import ConflictingWrite
from ledger.v1 import customer_service_pb2 as pb
from tests.api_support import Api, api, code_of, customer
from tests.helpers import PostgresStore, StoreHandle

__all__ = ["api"]

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
CALLERS, EACH = 6, 5
KILL_FOR_SECONDS = 2.0


def _terminate_backends(dsn: str, dbname: str, stop: threading.Event, killed: list[int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + KILL_FOR_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
            killed[0] += sum(1 for (done,) in rows if done)
            time.sleep(0.03)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_terminated_backends_during_a_burst_are_retryable_and_create_once(
    api: Api, store: StoreHandle, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(store, PostgresStore)
    admin = api.client("root", "admin")
    admin.create_customer(customer(given_name="Warm"))  # every pool has its connections
    codes: Counter[grpc.StatusCode] = Counter()
    names: dict[str, str] = {}
    lock = threading.Lock()
    failures: list[str] = []

    def create(request_id: str, given_name: str) -> None:
        request = pb.CreateCustomerRequest(
            customer=customer(given_name=given_name), request_id=request_id
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                made = admin.customers.CreateCustomer(request, **admin.call_options)
            except grpc.RpcError as error:
                code = code_of(error)
                with lock:
                    codes[code] += 1
                if code not in RETRYABLE:
                    failures.append(f"{request_id}: {code} {error}")
                    return
                time.sleep(0.02)
                continue
            with lock:
                codes[grpc.StatusCode.OK] += 1
                names[request_id] = made.name
            return
        failures.append(f"{request_id}: no success in time")

    def caller(n: int) -> None:
        for i in range(EACH):
            create(f"burst-{n}-{i}", f"Burst{n}x{i}")

    def without_request_id() -> None:
        """Calls a client cannot safely retry: they only must not get INTERNAL (a write
        whose acknowledgement was lost answered ConflictingWrite as INTERNAL)."""
        for _ in range(EACH * 2):
            request = pb.CreateCustomerRequest(customer=customer(given_name="Plain"))
            try:
                admin.customers.CreateCustomer(request, **admin.call_options)
            except grpc.RpcError as error:
                if code_of(error) not in RETRYABLE:
                    failures.append(f"no request id: {code_of(error)} {error}")

    stop, killed = threading.Event(), [0]
    killer = threading.Thread(
        target=_terminate_backends,
        args=(store.dsn, store.settings.store.dbname, stop, killed),
    )
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    threads += [threading.Thread(target=without_request_id) for _ in range(2)]
    killer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    killer.join(10)

    assert not failures, (failures, dict(codes))
    assert killed[0] > 0, "no backend was terminated: the test proved nothing"
    assert len(names) == CALLERS * EACH
    internal = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert not internal, internal

    # Each request id is bound to one customer: asking again returns it, and the ledger
    # holds exactly one customer per request (plus the warm-up one), none twice.
    for request_id, name in names.items():
        n, i = request_id.split("-")[1:]
        again = admin.customers.CreateCustomer(
            pb.CreateCustomerRequest(
                customer=customer(given_name=f"Burst{n}x{i}"), request_id=request_id
            ),
            **admin.call_options,
        )
        assert again.name == name
    given = Counter()
    for row in store.execute(
        f"SELECT DISTINCT originator_id FROM {store.events_table} WHERE originator_version = 1"
    ):
        try:
            view = api.ledger.get(UUID(str(row[0])))
        except Exception:  # not a customer: an access-log aggregate
            continue
        if isinstance(view.personal, dict):
            given[view.personal.get("given_name")] += 1
    burst = {k: v for k, v in given.items() if isinstance(k, str) and k.startswith("Burst")}
    assert len(burst) == CALLERS * EACH
    assert set(burst.values()) == {1}, {k: v for k, v in burst.items() if v > 1}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (psycopg.OperationalError("server closed the connection"), code_pb2.UNAVAILABLE),
        (psycopg.errors.AdminShutdown("terminating connection"), code_pb2.UNAVAILABLE),
        (psycopg.InterfaceError("the connection is closed"), code_pb2.UNAVAILABLE),
        (persistence.OperationalError("lost"), code_pb2.UNAVAILABLE),
        (persistence.InterfaceError("closed"), code_pb2.UNAVAILABLE),
        (sqlite3.OperationalError("database is locked"), code_pb2.UNAVAILABLE),
        (ConflictingWrite("another command committed first"), code_pb2.ABORTED),
        (persistence.IntegrityError("duplicate key"), code_pb2.ABORTED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_store_failures_map_to_retryable_codes_never_internal(error: Exception, code: int) -> None:
    """Every error a store raises when it goes away is UNAVAILABLE (retry), and a write
    conflict is ABORTED: both were INTERNAL for some of these (InterfaceError,
    ConflictingWrite, SQLite's "database is locked")."""
    status = status_of(error)
    assert status.code == code
    assert "connection" not in status.message and "duplicate" not in status.message
