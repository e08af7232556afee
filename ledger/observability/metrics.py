"""Every Prometheus metric of the server, defined once.

One `LedgerMetrics` per server with a registry of its own (two servers in one process, as
in the tests, never share counters). Labels are bounded: the gRPC method (from the
services' descriptors), the status code name, a projection's name, a fixed refusal reason.
Never a principal, a customer id or anything a caller chooses.

Counted on the call path: one counter increment and one histogram observation per call,
one histogram observation per group-commit batch (no I/O). Everything read from the store
or from files (projection lag, tree-head age, backup age) is collected when Prometheus
scrapes, at a bounded cost per scrape: two indexed queries and two small file reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.observability.backup_state import last_backup_timestamp

if TYPE_CHECKING:
    from ledger.application import CustomerLedger
    from ledger.audit.read_alerts import ReadRateMonitor

log = logging.getLogger("ledger.metrics")

# Seconds: from a cached read (~1 ms) to a long stream or a stalled store.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Writes per transaction, up to the committer's cap (DEFAULT_MAX_BATCH).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)


class LedgerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "ledger_grpc_calls",
            "gRPC calls answered, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "ledger_grpc_call_seconds",
            "Time from a call's arrival to its answer (streams: to their end)",
            ["method"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "ledger_group_commit_batch_size",
            "Writes stored per group-commit transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.auth_refusals = Counter(
            "ledger_auth_refusals",
            "Calls refused at authentication, by reason",
            ["reason"],
            registry=r,
        )
        self.store_up = Gauge(
            "ledger_store_up",
            "1 while the event store answers the health probe, 0 while it does not",
            registry=r,
        )
        self.store_up.set(1)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.call_seconds.labels(method).observe(seconds)

    def watch(self, collector: Collector) -> None:
        self.registry.register(collector)


class LedgerState(Collector):
    """Figures read when Prometheus scrapes. A figure that cannot be read (the store is
    down) is left out of that scrape and logged, rather than failing the whole scrape."""

    def __init__(
        self,
        ledger: CustomerLedger,
        monitor: ReadRateMonitor,
        backup_state: Path,
        store_up: Callable[[], bool],
    ) -> None:
        self._ledger = ledger
        self._monitor = monitor
        self._backup_state = backup_state
        self._store_up = store_up

    def describe(self) -> Iterable[Metric]:
        return []  # collected on demand; nothing to check for name clashes up front

    def collect(self) -> Iterator[Metric]:
        ledger = self._ledger
        erasures = CounterMetricFamily(
            "ledger_erasures", "Customers erased (crypto-shredded) by this process"
        )
        erasures.add_metric([], ledger.erasures_done)
        yield erasures
        alerts = CounterMetricFamily(
            "ledger_access_alerts", "Read-rate alerts raised by this process"
        )
        alerts.add_metric([], self._monitor.raised)
        yield alerts
        active = GaugeMetricFamily(
            "ledger_access_alerts_active",
            "Principals flagged by a read-rate alert within the current window",
        )
        active.add_metric([], self._monitor.active())
        yield active
        backup = GaugeMetricFamily(
            "ledger_backup_last_success_timestamp_seconds",
            "When the newest successful backup finished (0: none recorded)",
        )
        backup.add_metric([], last_backup_timestamp(self._backup_state) or 0.0)
        yield backup
        yield from self._tree_head()
        if self._store_up():
            yield from self._projection_lag()

    def _tree_head(self) -> Iterator[Metric]:
        ledger = self._ledger
        try:
            head = ledger.published_heads.latest(None)
        except Exception as exc:
            log.warning("tree-head age not read: %s", type(exc).__name__)
            head = None
        if head is not None:
            age = GaugeMetricFamily(
                "ledger_tree_head_age_seconds",
                "Seconds since the newest published signed tree head was signed",
            )
            age.add_metric([], max(0.0, time.time() - head.timestamp_ms / 1000))
            yield age
        signer = ledger.tree_head_signer
        if signer is not None:
            unsigned = GaugeMetricFamily(
                "ledger_unsigned_events",
                "Events this process committed that no signed tree head covers yet",
            )
            unsigned.add_metric([], signer.unsigned)
            yield unsigned

    def _projection_lag(self) -> Iterator[Metric]:
        runner = self._ledger.projections
        if runner is None:
            return
        try:
            head = runner.head()
            positions = runner.positions()
        except Exception as exc:
            log.warning("projection lag not read: %s", type(exc).__name__)
            return
        lag = GaugeMetricFamily(
            "ledger_projection_lag_events",
            "Events in the log a projection has not applied yet",
            labels=["projection"],
        )
        for name, position in sorted(positions.items()):
            lag.add_metric([name], max(0, head - position))
        yield lag
