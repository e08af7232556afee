"""What appending Merkle leaves in the insert's transaction costs writers.

    .venv/bin/python bench/append_bench.py [--events N] [--store sqlite|postgres|both]

For each store and batch size (1 event per insert, as one command writes today; 100 per
insert, as group commit will), inserts N events of realistic size (700 bytes of state)
through the library's plain application recorder (the baseline) and through the ledger's
audited recorder, each into a fresh database, and prints events per second and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import psycopg
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.audit.recorders import AuditedPostgresRecorder, AuditedSQLiteRecorder

STATE = os.urandom(700)
TOPIC = "ledger.domain.customer:Customer.Registered"


def rate(recorder: ApplicationRecorder, events: int, batch: int) -> float:
    started = time.perf_counter()
    for _ in range(events // batch):
        recorder.insert_events([StoredEvent(uuid4(), 1, TOPIC, STATE) for _ in range(batch)])
    return (events // batch * batch) / (time.perf_counter() - started)


def sqlite_recorders(folder: Path) -> dict[str, Callable[[], ApplicationRecorder]]:
    def make(cls: type[SQLiteApplicationRecorder]) -> ApplicationRecorder:
        datastore = SQLiteDatastore(str(folder / f"{uuid4().hex}.db"), lock_timeout=10)
        recorder = cls(datastore)
        recorder.create_table()
        return recorder

    return {
        "plain": lambda: make(SQLiteApplicationRecorder),
        "audited": lambda: make(AuditedSQLiteRecorder),
    }


def postgres_recorders(databases: list[str]) -> dict[str, Callable[[], ApplicationRecorder]]:
    base = os.environ.get("LEDGER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

    def make(cls: type[PostgresApplicationRecorder]) -> ApplicationRecorder:
        name = f"ledger_bench_{uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        databases.append(name)
        datastore = PostgresDatastore(name, "127.0.0.1", 5432, "postgres", "")
        recorder = cls(datastore, events_table_name="ledger_events")
        recorder.create_table()
        return recorder

    return {
        "plain": lambda: make(PostgresApplicationRecorder),
        "audited": lambda: make(AuditedPostgresRecorder),
    }


def measure(
    name: str, recorders: dict[str, Callable[[], ApplicationRecorder]], events: int
) -> None:
    """Best of two alternating rounds per variant: the machine is shared, and the first
    writer into a fresh file pays for warming caches."""
    for batch in (1, 100):
        n = events if batch > 1 else max(events // 10, 100)
        best = {"plain": 0.0, "audited": 0.0}
        for _ in range(2):
            for variant in ("plain", "audited"):
                best[variant] = max(best[variant], rate(recorders[variant](), n, batch))
        plain, audited = best["plain"], best["audited"]
        print(
            f"{name}: {batch:>3} event(s) per insert: plain {plain:>9,.0f} events/s, "
            f"with leaves {audited:>9,.0f} events/s = {audited / plain:.2f} x baseline"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    if args.store in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure("sqlite", sqlite_recorders(Path(tmp)), args.events)
    if args.store in ("postgres", "both"):
        databases: list[str] = []
        try:
            measure("postgres", postgres_recorders(databases), args.events)
        finally:
            base = os.environ.get(
                "LEDGER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
            )
            with psycopg.connect(base, autocommit=True) as admin:
                for name in databases:
                    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
