"""What ledger is measured against: the plain eventsourcing library on the same database,
and PostgreSQL itself through psycopg (the ceiling)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.harness import latencies_ms, throughput


class PlainCustomer(Aggregate):
    """The same payload as a ledger customer, with no encryption and no validation."""

    @event("Registered")
    def __init__(self, profile: dict[str, Any]) -> None:
        self.profile = profile


class PlainApp(Application[UUID]):
    name = "plain"


def plain_application(env: dict[str, str]) -> PlainApp:
    """The library's own recorder (no Merkle leaves): the plain application as anyone
    would write it, in its own tables beside the ledger's."""
    plain = {k: v for k, v in env.items() if k != "APPLICATION_RECORDER_TOPIC"}
    if "SQLITE_DBNAME" in plain:
        # The library's SQLite tables are not named per application: a file of its own.
        plain["SQLITE_DBNAME"] = str(Path(plain["SQLITE_DBNAME"]).with_name("plain.db"))
    return PlainApp(env=plain)


def plain_registrations_per_second(
    app: PlainApp, items: list[dict[str, Any]], clients: int
) -> float:
    return throughput(lambda profile: app.save(PlainCustomer(profile)), items, clients)


def _setup_raw_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute(
            "CREATE TABLE bench_raw (id BIGSERIAL PRIMARY KEY, originator_id UUID, "
            "version INT, topic TEXT, state BYTEA)"
        )


def raw_single_row_per_second(dsn: str, rows: int, clients: int, payload: bytes) -> float:
    """One durable INSERT transaction per row, `clients` connections in parallel."""
    _setup_raw_table(dsn)
    local = threading.local()
    connections: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def insert(_: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = psycopg.connect(dsn, autocommit=True)
            local.conn = conn
            with lock:
                connections.append(conn)
        conn.execute(
            "INSERT INTO bench_raw (originator_id, version, topic, state) VALUES (%s, 1, %s, %s)",
            (uuid4(), "t", payload),
        )

    try:
        return throughput(insert, list(range(rows)), clients)
    finally:
        for conn in connections:
            conn.close()


def raw_batched_rows_per_second(dsn: str, rows: int, batch: int, payload: bytes) -> float:
    """Rows per second in `batch`-row transactions from one connection."""
    _setup_raw_table(dsn)
    with psycopg.connect(dsn) as conn:
        import time

        started = time.perf_counter()
        for _ in range(rows // batch):
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO bench_raw (originator_id, version, topic, state) "
                    "VALUES (%s, 1, %s, %s)",
                    [(uuid4(), "t", payload) for _ in range(batch)],
                )
            conn.commit()
        return (rows // batch) * batch / (time.perf_counter() - started)


def payload_bytes() -> bytes:
    return os.urandom(600)


def durable_commit_latencies_ms(dsn: str, commits: int, payload: bytes) -> list[float]:
    """One lone durable 1-row INSERT transaction at a time, from one connection: the floor
    for any API call that must durably record something before it answers (a read's
    access record), set by the disk's flush latency."""
    _setup_raw_table(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:

        def insert(_: int) -> None:
            conn.execute(
                "INSERT INTO bench_raw (originator_id, version, topic, state)"
                " VALUES (%s, 1, %s, %s)",
                (uuid4(), "t", payload),
            )

        return latencies_ms(insert, list(range(commits)))
