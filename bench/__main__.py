"""`python -m bench [--store URL]`: the write- and read-path benchmarks in one run.

By default on PostgreSQL (a fresh database on LEDGER_BENCH_POSTGRES_DSN, default
postgresql://postgres@127.0.0.1:5432/test, dropped afterwards); `--store sqlite` runs the
ledger figures on a temporary SQLite file (the psycopg ceilings are then skipped).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from bench import baselines
from bench.data import profiles
from bench.harness import Figure, latencies_ms, percentile, table, throughput
from ledger.bootstrap import open_ledger
from ledger.config import Settings

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_database(base: str) -> Iterator[str]:
    name = f"ledger_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run(store_url: str, workdir: Path, customers: int, clients: list[int]) -> list[Figure]:
    settings = Settings(store_url=store_url, data_dir=workdir, key_cache_seconds=5)
    figures: list[Figure] = []
    plain = baselines.plain_application(settings.eventsourcing_env())
    ledger = open_ledger(settings)
    data = profiles(customers * (len(clients) + 1))
    chunks = [data[i * customers : (i + 1) * customers] for i in range(len(clients) + 1)]
    try:
        for n, count in enumerate(clients):
            base = baselines.plain_registrations_per_second(plain, chunks[n], count)
            ours = throughput(lambda p: ledger.register(p, actor="bench"), chunks[n], count)
            figures.append(
                Figure(
                    f"registrations/s, {count} clients (in-process)",
                    ours,
                    "/s",
                    "plain eventsourcing app",
                    base,
                )
            )
        ids = [ledger.register(p, actor="bench") for p in chunks[-1][:300]]
        plain_ids = []
        for p in chunks[-1][:300]:
            agg = baselines.PlainCustomer(p)
            plain.save(agg)
            plain_ids.append(agg.id)
        ours_ms = latencies_ms(ledger.get, ids)
        base_ms = latencies_ms(lambda i: plain.repository.get(i), plain_ids)
        for pct in (50, 99):
            figures.append(
                Figure(
                    f"get customer p{pct} (in-process)",
                    percentile(ours_ms, pct),
                    "ms",
                    "plain repository.get",
                    percentile(base_ms, pct),
                    False,
                )
            )
        erase_ms = latencies_ms(
            lambda cid: ledger.erase(cid, actor="bench", legal_basis="bench"), ids[:100]
        )
        save_ms = latencies_ms(lambda p: plain.save(baselines.PlainCustomer(p)), chunks[-1][:100])
        for pct in (50, 99):
            figures.append(
                Figure(
                    f"erasure p{pct} (in-process)",
                    percentile(erase_ms, pct),
                    "ms",
                    "plain one-event save",
                    percentile(save_ms, pct),
                    False,
                )
            )
    finally:
        ledger.close()
        plain.close()
    return figures


def ceilings(dsn: str, rows: int) -> list[Figure]:
    payload = baselines.payload_bytes()
    single = baselines.raw_single_row_per_second(dsn, rows, 16, payload)
    batched = baselines.raw_batched_rows_per_second(dsn, rows * 5, 100, payload)
    return [
        Figure(
            "raw INSERT, 100-row transactions",
            batched,
            "rows/s",
            "raw INSERT, 1-row transactions x16 clients",
            single,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=1000, help="per measurement")
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    print(
        f"machine: {os.cpu_count()} cores; store: {args.store}; "
        f"{args.customers} customers per measurement",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.store == "sqlite":
            figures = run(f"sqlite:///{workdir / 'bench.db'}", workdir, args.customers, clients)
        else:
            base = os.environ.get("LEDGER_BENCH_POSTGRES_DSN", DEFAULT_DSN)
            with fresh_database(base) as dsn:
                figures = ceilings(dsn, args.customers)
                figures += run(dsn, workdir, args.customers, clients)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
