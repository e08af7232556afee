"""`python -m bench [--store postgres|sqlite] [--quick]`: the ledger measured through its real
API, each figure next to a baseline measured in the same run, with the ratio and the
issue's target.

A fresh store is made for the run (PostgreSQL: a new database on LEDGER_BENCH_POSTGRES_DSN,
default postgresql://postgres@127.0.0.1:5432/test, dropped afterwards; SQLite: a temporary
file). A real `ledger serve` process is started on a free loopback port over it and driven
by client processes through gRPC:

(a) durable CreateCustomer/s with 1, 8 and 32 concurrent clients, under the default
    duplicate policy (warn: each registration is checked against the duplicate index),
    and once more at 32 clients with the policy off — against a plain `eventsourcing`
    application saving the same customers on the same database with as many threads,
    against a no-op CreateCustomer servicer driven by the same clients (what Python's
    gRPC alone reaches on this machine: no server doing real work can pass it), and
    (PostgreSQL) raw psycopg INSERTs: 1-row transactions from 16 connections and 100-row
    transactions (the database's ceiling);
(b) GetCustomer p50/p99 through the API — the plain application's `repository.get`, and
    (PostgreSQL) one lone durable 1-row INSERT commit: every read of personal data is
    recorded durably before it is answered, so that commit is the read's floor;
(c) EraseCustomer p50/p99 through the API — the plain application saving one event;
(d) projection rebuild events/s (the runner, every projection from position 0) — reading
    and decrypting the same log without projecting (the floor a rebuild cannot beat);
(e) `ledger verify` events/s — reading every event row and touching its bytes (the log is
    first grown to 100,000 events with copies of a real sealed event, as group commit
    writes them, so that the figure is not one of fixed costs);
(f) the server process's peak resident memory (VmHWM) — its resident memory when idle
    just after start.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from uuid import uuid4

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from bench import baselines
from bench.api_load import LoadResult, create_load, warm_up
from bench.data import profiles
from bench.harness import Figure, latencies_ms, percentile, table
from bench.server_process import ServerProcess, bench_token
from bench.transport_ceiling import noop_create_load
from ledger.audit.leaf_mac import leaf_key
from ledger.audit.storage import AuditStore
from ledger.audit.verifier import verify
from ledger.bootstrap import open_ledger
from ledger.client import LedgerClient
from ledger.config import Settings
from ledger.projections.wiring import runner_of

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Plan:
    customers: int  # created per client count
    clients: list[int]
    client_processes: int
    reads: int
    erasures: int
    verify_events: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        quick = args.quick
        return cls(
            customers=args.customers or (600 if quick else 3000),
            clients=[int(c) for c in args.clients.split(",")],
            client_processes=args.client_processes,
            reads=200 if quick else 1000,
            erasures=40 if quick else 200,
            verify_events=20_000 if quick else 100_000,
        )

    def chunk(self, clients: int) -> int:
        """Customers created with `clients` clients: a fifth as many for a lone client (it
        is the slowest)."""
        return self.customers if clients >= 8 else max(100, self.customers // 5)


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


def ceilings(dsn: str, rows: int) -> tuple[Figure, float, float]:
    payload = baselines.payload_bytes()
    single = baselines.raw_single_row_per_second(dsn, rows, 16, payload)
    batched = baselines.raw_batched_rows_per_second(dsn, rows * 5, 100, payload)
    figure = Figure(
        "raw INSERT rows/s, 100-row transactions",
        batched,
        "/s",
        "raw INSERT, 1-row transactions x16 conns",
        single,
    )
    return figure, single, batched


def _ms_per_call(cpu_seconds_spent: float, result: LoadResult) -> float:
    """Server CPU per acknowledged call: the cost the issue's targets count (CPU seconds
    over calls, so it holds whatever the machine's other load does to wall time)."""
    return 1000 * cpu_seconds_spent / len(result.created) if result.created else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(
    store_url: str, workdir: Path, plan: Plan, postgres_dsn: str | None, notes: list[str]
) -> list[Figure]:
    settings = Settings(store_url=store_url, data_dir=workdir / "data", key_cache_seconds=5)
    settings.resolved_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    figures: list[Figure] = []
    raw_single = raw_batched = None
    if postgres_dsn is not None:
        say("raw psycopg ceilings ...")
        ceiling, raw_single, raw_batched = ceilings(postgres_dsn, plan.customers)
        figures.append(ceiling)

    data = profiles(plan.customers * (2 * len(plan.clients) + 2) + 100)
    chunk = iter(range(0, len(data), plan.customers))

    def next_chunk(clients: int = 32) -> list[dict[str, object]]:
        """Fresh customers, `plan.chunk(clients)` of them."""
        start = next(chunk)
        return data[start : start + plan.chunk(clients)]

    plain = baselines.plain_application(settings.eventsourcing_env())
    plain_rates = {}
    for count in plan.clients:
        say(f"plain eventsourcing app, {count} threads ...")
        plain_rates[count] = baselines.plain_registrations_per_second(
            plain, next_chunk(count), count
        )

    ceiling_rates = {}
    for count in plan.clients:
        say(f"no-op gRPC servicer (the transport's ceiling), {count} clients ...")
        sample = data[: plan.chunk(count)]  # stores nothing: any customers will do
        ceiling_rates[count] = noop_create_load(sample, count, plan.client_processes).rate

    token = bench_token(settings.resolved_data_dir, store_url, ["service", "compliance"])
    log_path = workdir / "server.log"
    with (
        log_path.open("wb") as log,
        ServerProcess(store_url, settings.resolved_data_dir, log=log) as server,
        _show_log_on_error(log_path),
    ):
        idle_kib = server.status("VmRSS")
        say(f"server pid {server.pid} on {server.target}")
        warm = warm_up(server.target, token, data[-100:])
        ours: dict[int, float] = {}
        cpu_per_call: dict[int, float] = {}
        for count in plan.clients:
            say(f"CreateCustomer through the API, {count} clients ...")
            before = cpu_seconds(server.pid)
            result = create_load(
                server.target, token, next_chunk(count), count, plan.client_processes
            )
            spent = cpu_seconds(server.pid) - before
            server_cpu = spent / result.seconds
            if result.failures:
                raise RuntimeError(f"{result.failures} creates failed; see {log_path}")
            ours[count] = result.rate
            cpu_per_call[count] = _ms_per_call(spent, result)
            notes.append(
                f"{count} clients: {result.rate:,.0f}/s; the server process used "
                f"{server_cpu:.2f} cores meanwhile, {cpu_per_call[count]:.2f} ms of server "
                "CPU per registration"
            )
            say("  " + notes[-1])
            figures.append(
                Figure(
                    f"CreateCustomer/s via API, {count} clients",
                    result.rate,
                    "/s",
                    f"plain eventsourcing app, {count} threads",
                    plain_rates[count],
                    target=3000 if count == max(plan.clients) else None,
                )
            )
            figures.append(
                Figure(
                    f"CreateCustomer/s via API, {count} clients",
                    result.rate,
                    "/s",
                    f"no-op gRPC servicer, {count} clients",
                    ceiling_rates[count],
                )
            )
        top = max(plan.clients)
        top_rate = ours[top]
        figures.append(
            Figure(
                f"  no-op gRPC servicer, {top} clients",
                ceiling_rates[top],
                "/s",
                "(target for the ledger)",
                3000,
            )
        )
        figures.append(
            Figure(
                f"  ratio to plain app at {top} clients",
                top_rate / plain_rates[top],
                "x",
                "(target)",
                10,
                target=10,
            )
        )
        if raw_single is not None and raw_batched is not None:
            figures.append(
                Figure(
                    f"CreateCustomer/s via API, {top} clients",
                    top_rate,
                    "/s",
                    "raw INSERT, 1-row transactions x16 conns",
                    raw_single,
                )
            )
            figures.append(
                Figure(
                    f"CreateCustomer/s via API, {top} clients",
                    top_rate,
                    "/s",
                    "raw INSERT rows/s, 100-row transactions",
                    raw_batched,
                )
            )

        say("GetCustomer latency ...")
        names = (warm * (plan.reads // len(warm) + 1))[: plan.reads]
        plain_ids = []
        for p in data[-100:]:
            aggregate = baselines.PlainCustomer(p)
            plain.save(aggregate)
            plain_ids.append(aggregate.id)
        plain_reads = (plain_ids * (plan.reads // len(plain_ids) + 1))[: plan.reads]
        with LedgerClient(server.target, token=token) as client:
            client.get_customer(names[0])
            get_ms = latencies_ms(client.get_customer, names)
            baselines_ms = {
                "plain app repository.get": latencies_ms(
                    lambda i: plain.repository.get(i), plain_reads
                )
            }
            if postgres_dsn is not None:
                baselines_ms["one durable 1-row INSERT commit"] = (
                    baselines.durable_commit_latencies_ms(
                        postgres_dsn, plan.reads, baselines.payload_bytes()
                    )
                )
            for first, (baseline, base_ms) in enumerate(baselines_ms.items()):
                for pct in (50, 99):
                    figures.append(
                        Figure(
                            f"GetCustomer p{pct} via API",
                            percentile(get_ms, pct),
                            " ms",
                            baseline,
                            percentile(base_ms, pct),
                            False,
                            target=5 if pct == 99 and first == 0 else None,
                        )
                    )
            say("EraseCustomer latency ...")
            victims = warm_up(server.target, token, next_chunk()[: plan.erasures])
            erase_ms = latencies_ms(
                lambda n: client.erase_customer(n, legal_basis="bench", reason="bench"), victims
            )
            save_ms = latencies_ms(
                lambda p: plain.save(baselines.PlainCustomer(p)), data[-plan.erasures :]
            )
            for pct in (50, 99):
                figures.append(
                    Figure(
                        f"EraseCustomer p{pct} via API",
                        percentile(erase_ms, pct),
                        " ms",
                        "plain app one-event save",
                        percentile(save_ms, pct),
                        False,
                        target=50 if pct == 99 else None,
                    )
                )
        peak_kib = server.status("VmHWM")
        server.stop()
    for line in log_path.read_text(errors="replace").splitlines():
        if "group commit:" in line:
            notes.append("server: " + line.split("group commit:", 1)[1].strip())

    top = max(plan.clients)
    say(f"CreateCustomer through the API, {top} clients, duplicate policy off ...")
    with (
        log_path.open("ab") as log,
        ServerProcess(
            store_url, settings.resolved_data_dir, log=log, LEDGER_DUPLICATE_POLICY="off"
        ) as server,
        _show_log_on_error(log_path),
    ):
        before = cpu_seconds(server.pid)
        result = create_load(server.target, token, next_chunk(top), top, plan.client_processes)
        spent = cpu_seconds(server.pid) - before
        if result.failures:
            raise RuntimeError(f"{result.failures} creates failed; see {log_path}")
        server.stop()
    off_ms = _ms_per_call(spent, result)
    notes.append(
        f"{top} clients, duplicate policy off: {off_ms:.2f} ms of server CPU per registration; "
        f"the duplicate check (policy warn) adds {cpu_per_call[top] - off_ms:+.2f} ms"
    )
    say("  " + notes[-1])
    figures.append(
        Figure(
            f"  same, LEDGER_DUPLICATE_POLICY=off, {top} clients",
            result.rate,
            "/s",
            f"plain eventsourcing app, {top} threads",
            plain_rates[top],
        )
    )
    plain.close()

    say("projection rebuild ...")
    figures.append(rebuild_figure(settings))
    verify_figure(settings)  # what the server wrote must verify before it is grown
    if plan.verify_events:
        say(f"growing the log to {plan.verify_events:,} events for verify ...")
        grow_log(settings, plan.verify_events)
    say("ledger verify ...")
    figures.append(verify_figure(settings))
    figures.append(
        Figure(
            "server peak RSS (VmHWM)",
            peak_kib / 1024,
            " MiB",
            "server RSS idle after start",
            idle_kib / 1024,
            False,
        )
    )
    return figures


@contextmanager
def _show_log_on_error(path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        say(f"--- server log (last lines of {path}) ---")
        say("\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        raise


def rebuild_figure(settings: Settings) -> Figure:
    with open_ledger(replace(settings, projection_mode="worker")) as ledger:
        runner = runner_of(ledger)
        head = runner.head()

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
        started = time.perf_counter()
        decode_only()
        decode_rate = head / (time.perf_counter() - started)
        ledger.keys.clear()
        started = time.perf_counter()
        runner.rebuild()
        rate = head / (time.perf_counter() - started)
    return Figure(
        f"projection rebuild events/s ({head:,} events)",
        rate,
        "/s",
        "read + decrypt the log only",
        decode_rate,
        target=20_000,
    )


def grow_log(settings: Settings, events: int) -> None:
    """Bring the log to `events` events with copies of a real sealed `Registered` event
    (each under its own customer id), through the ledger's audited recorder in batches of
    1,000 as group commit writes them, so verify's figure is not one of fixed costs. The
    copies have no key: run this after the rebuild, which would refuse them."""
    with open_ledger(replace(settings, projection_mode="worker")) as ledger:
        sample = ledger.recorder.select_notifications(start=1, limit=1)[0]
        head = ledger.recorder.max_notification_id() or 0
        while head < events:
            n = min(1000, events - head)
            ledger.recorder.insert_events(
                [StoredEvent(uuid4(), 1, sample.topic, sample.state) for _ in range(n)]
            )
            head += n
        ledger.issue_tree_head()


def verify_figure(settings: Settings) -> Figure:
    public_key = Path(settings.resolved_signing_key_file)
    from ledger.signing import LedgerSigner

    signer = LedgerSigner.load_or_create(public_key)
    pem = signer.public_key_pem()
    started = time.perf_counter()
    count = 0
    with AuditStore.open(settings) as store, store.snapshot():
        for row in store.raw_events():
            count += len(row[4]) > 0
    base_rate = count / (time.perf_counter() - started)
    with AuditStore.open(settings) as store:
        # As `ledger verify` runs on a ledger host: the leaf MACs checked too.
        report = verify(store, pem, leaf_key=leaf_key(signer))
    if not report.ok:
        raise RuntimeError(f"ledger verify failed: {report.to_json()}")
    return Figure(
        f"ledger verify events/s ({count:,} events)",
        report.rate,
        "/s",
        "read every event row",
        base_rate,
        target=100_000,
    )


def describe_machine(store: str) -> str:
    load = os.getloadavg()
    versions = [f"Python {platform.python_version()}"]
    versions += [f"{p} {version(p)}" for p in ("eventsourcing", "grpcio", "psycopg")]
    if store == "postgres":
        try:
            with psycopg.connect(os.environ.get("LEDGER_BENCH_POSTGRES_DSN", DEFAULT_DSN)) as c:
                row = c.execute("SHOW server_version").fetchone()
                versions.append(f"PostgreSQL {row[0] if row else '?'}")
        except psycopg.Error:
            pass
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"versions: {', '.join(versions)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--quick", action="store_true", help="fewer customers and samples")
    parser.add_argument("--customers", type=int, help="created per client count (3000; quick 600)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent API clients (1,8,32)")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="processes the API clients run in (threads within each); default 4",
    )
    args = parser.parse_args(argv)
    plan = Plan.of(args)
    started = time.perf_counter()
    print(describe_machine(args.store))
    print(
        f"store: {args.store}; {plan.customers} customers per client count; clients "
        f"{','.join(map(str, plan.clients))} in {plan.client_processes} client process(es); "
        f"{plan.reads} reads; {plan.erasures} erasures",
        flush=True,
    )
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.store == "sqlite":
            figures = run(f"sqlite:///{workdir / 'data' / 'ledger.db'}", workdir, plan, None, notes)
        else:
            base = os.environ.get("LEDGER_BENCH_POSTGRES_DSN", DEFAULT_DSN)
            with fresh_database(base) as dsn:
                figures = run(dsn, workdir, plan, dsn, notes)
    print(table(figures))
    for note in dict.fromkeys(notes):  # the server logs its summary once per close
        print(note)
    load = os.getloadavg()
    print(
        f"took {time.perf_counter() - started:.0f}s; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
