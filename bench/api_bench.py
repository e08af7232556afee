"""What the gRPC API costs on top of the application it serves.

    .venv/bin/python bench/api_bench.py [--store URL] [--calls N] [--events N]

On a fresh store (a temporary SQLite file unless --store names an empty PostgreSQL
database), in the same run, each API figure next to its baseline:

* GetCustomer p50 over gRPC (token check, revocation lookup, owner rule, masking, protobuf)
  — `CustomerLedger.get` in-process, the replay it wraps;
* CreateCustomer p50 over gRPC — `CustomerLedger.register` in-process;
* StreamEvents events/s over gRPC for a log of --events events — reading and decrypting the
  same log in-process (`select_notifications` + the encrypting mapper), the floor a replay
  cannot beat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.api.server import build_server
from ledger.api.tokens import issue_token
from ledger.application import CustomerLedger
from ledger.bootstrap import open_ledger
from ledger.client import LedgerClient
from ledger.config import Settings
from ledger.domain.customer import Customer
from ledger.domain.profile import validate_changes
from ledger.signing import LedgerSigner
from ledger.v1 import resources_pb2

PROFILE = {
    "given_name": "Bench",
    "family_name": "Marker",
    "emails": ["bench.marker@example.org"],
    "phones": ["+49 30 1234567"],
    "addresses": [{"locality": "Berlin", "postcode": "10115", "country": "DE"}],
    "owner": "sales.emea",
}


def p50_ms(run: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def line(what: str, api: float, baseline: float, unit: str, higher_is_better: bool) -> None:
    ratio = api / baseline if baseline else float("nan")
    note = "of baseline throughput" if higher_is_better else "x baseline latency"
    figures = f"{api:>10.2f} {unit:<9} baseline {baseline:>10.2f} {unit:<9}"
    print(f"{what:<20} {figures} {ratio:5.2f} {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="an empty store URL (default: temporary SQLite)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ledger-data"
        url = args.store or f"sqlite:///{data / 'ledger.db'}"
        settings = Settings(store_url=url, data_dir=data, key_cache_seconds=5)
        with open_ledger(settings) as ledger:
            server = build_server(ledger, settings, listen="127.0.0.1:0")
            signer = LedgerSigner.load_or_create(settings.resolved_token_key_file)
            token = issue_token(signer, "bench", ["service"], timedelta(hours=1))
            client = LedgerClient(f"127.0.0.1:{server.port}", token=token)
            try:
                print(f"store: {url.split('@')[-1]}  calls: {args.calls}  events: {args.events}")
                customer_id = ledger.register(PROFILE, actor="bench")
                name = f"customers/{customer_id}"
                client.get_customer(name)  # warm the channel
                line(
                    "GetCustomer p50",
                    p50_ms(lambda: client.get_customer(name), args.calls),
                    p50_ms(lambda: ledger.get(customer_id), args.calls),
                    "ms",
                    False,
                )
                message = resources_pb2.Customer(
                    given_name="Bench",
                    family_name="Marker",
                    emails=["bench.marker@example.org"],
                    addresses=[resources_pb2.Address(locality="Berlin", country="DE")],
                )
                line(
                    "CreateCustomer p50",
                    p50_ms(lambda: client.create_customer(message), args.calls),
                    p50_ms(lambda: ledger.register(PROFILE, actor="bench"), args.calls),
                    "ms",
                    False,
                )
                _fill(ledger, args.events)
                total = ledger.recorder.max_notification_id() or 0
                start = time.perf_counter()
                # The replay's own reads are logged as it goes: count the log as it stood.
                streamed = sum(1 for e in client.stream_events() if e.position <= total)
                api_rate = streamed / (time.perf_counter() - start)
                start = time.perf_counter()
                position, read = 0, 0
                while True:
                    batch = ledger.recorder.select_notifications(
                        start=position, limit=500, stop=total, inclusive_of_start=False
                    )
                    if not batch:
                        break
                    read += len([ledger.mapper.to_domain_event(n) for n in batch])
                    position = batch[-1].id
                base_rate = read / (time.perf_counter() - start)
                assert streamed == read == total
                line("StreamEvents", api_rate, base_rate, "events/s", True)
            finally:
                client.close()
                server.stop(0)
    return 0


def _fill(ledger: CustomerLedger, events: int) -> None:
    """Bring the log to about `events` events: customers with 500 events each."""
    changes = [validate_changes({"tags": ["odd"]}), validate_changes({"tags": ["even"]})]
    while (ledger.recorder.max_notification_id() or 0) + 500 <= events:
        customer: object = ledger.repository.get(ledger.register(PROFILE, actor="bench"))
        assert isinstance(customer, Customer)
        for n in range(499):
            customer.change(changes[n % 2], "bench", None)
        ledger.save(customer)


if __name__ == "__main__":
    sys.exit(main())
