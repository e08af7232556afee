"""What recording every personal-data read costs the API, and what group commit saves.

    .venv/bin/python bench/access_audit_bench.py [--store URL] [--calls N] [--threads N]

On a fresh store (a temporary SQLite file unless --store names an empty PostgreSQL
database), in the same run, GetCustomer over gRPC with three access logs behind it:

* none: records nothing (the floor: what the read costs without its audit);
* audited: `AuditedAccess`, the server's default (records through the group committer);
* one commit per read: the same records, each in its own transaction.

For each: p50 and p99 of sequential calls, then calls/s with --threads concurrent callers
and how many transactions the records took (commits per 100 reads). Each figure is printed
next to the `none` baseline of the same run, with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.api.access import AccessLog, AuditedAccess
from ledger.api.server import build_server
from ledger.api.tokens import issue_token
from ledger.application import CustomerLedger
from ledger.audit.read_alerts import ReadRateMonitor
from ledger.bootstrap import open_ledger
from ledger.client import LedgerClient
from ledger.config import Settings
from ledger.signing import LedgerSigner

PROFILE = {
    "given_name": "Bench",
    "family_name": "Marker",
    "emails": ["bench.marker@example.org"],
    "phones": ["+49 30 1234567"],
    "owner": "sales.emea",
}


class RecordsNothing:
    def record_access(self, **_: Any) -> None:
        pass

    def record_denied(self, **_: Any) -> None:
        pass


class CommitsAlone(AuditedAccess):
    """The same records, one transaction each (what group commit is measured against)."""

    commits = 0

    def _commit(self, events: Sequence[Any]) -> None:
        self.ledger.save(*events)
        CommitsAlone.commits += 1


def _percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def measure(
    ledger: CustomerLedger,
    settings: Settings,
    access_log: AccessLog,
    names: list[str],
    calls: int,
    threads: int,
) -> dict[str, float]:
    server = build_server(ledger, settings, listen="127.0.0.1:0", access_log=access_log)
    signer = LedgerSigner.load_or_create(settings.resolved_token_key_file)
    token = issue_token(signer, "bench", ["service"], timedelta(hours=1))
    clients = [
        LedgerClient(f"127.0.0.1:{server.port}", token=token, purpose="bench")
        for _ in range(threads)
    ]
    try:
        client = clients[0]
        for name in names[:20]:
            client.get_customer(name)  # warm the channel and the key cache
        samples = []
        for n in range(calls):
            start = time.perf_counter()
            client.get_customer(names[n % len(names)])
            samples.append(time.perf_counter() - start)
        p50, p99 = _percentiles(samples)

        batches_before = ledger.committer.batches
        alone_before = CommitsAlone.commits
        per_thread = calls

        def work(c: LedgerClient, offset: int) -> None:
            for n in range(per_thread):
                c.get_customer(names[(offset + n) % len(names)])

        workers = [threading.Thread(target=work, args=(c, i * 7)) for i, c in enumerate(clients)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
        reads = per_thread * threads
        commits = (ledger.committer.batches - batches_before) + (
            CommitsAlone.commits - alone_before
        )
        return {
            "p50": p50,
            "p99": p99,
            "rate": reads / elapsed,
            "commits_per_100": 100 * commits / reads,
        }
    finally:
        for c in clients:
            c.close()
        server.stop(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="an empty store URL (default: temporary SQLite)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--projections",
        choices=["inline", "worker"],
        default="inline",
        help="inline (default): projections catch up after every commit, records included",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ledger-data"
        url = args.store or f"sqlite:///{data / 'ledger.db'}"
        settings = Settings(store_url=url, data_dir=data, key_cache_seconds=60, read_alert_rate=0)
        with open_ledger(settings) as ledger:
            names = [f"customers/{ledger.register(PROFILE, actor='bench')}" for _ in range(200)]
            print(
                f"store: {url.split('@')[-1]}  sequential calls: {args.calls}  "
                f"concurrent: {args.threads} threads x {args.calls} calls  "
                f"projections: {args.projections}"
            )
            monitor = ReadRateMonitor(0, 0)
            results = {
                "none": measure(
                    ledger, settings, RecordsNothing(), names, args.calls, args.threads
                ),
                "audited": measure(
                    ledger,
                    settings,
                    AuditedAccess(ledger, monitor),
                    names,
                    args.calls,
                    args.threads,
                ),
                "one commit per read": measure(
                    ledger,
                    settings,
                    CommitsAlone(ledger, monitor),
                    names,
                    args.calls,
                    args.threads,
                ),
            }
    base = results["none"]
    for mode, figures in results.items():
        p50_ratio = figures["p50"] / base["p50"]
        print(
            f"{mode:<20} GetCustomer p50 {figures['p50']:6.2f} ms ({p50_ratio:4.2f}x)"
            f"  p99 {figures['p99']:6.2f} ms ({figures['p99'] / base['p99']:4.2f}x)"
            f"  concurrent {figures['rate']:8.0f} calls/s ({figures['rate'] / base['rate']:4.2f} of"
            f" baseline)  commits per 100 reads {figures['commits_per_100']:6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
