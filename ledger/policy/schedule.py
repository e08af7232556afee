"""Retention on a timer, inside `ledger serve` (LEDGER_RETENTION_SCHEDULE, off by default).

A daemon thread runs `retention.apply` every interval: the first run one interval after
start (a restart loop never turns into a destruction loop), then every interval. A failed
run is logged and retried at the next interval; since a run continues where the previous one
stopped (see `ledger.policy.retention`), nothing is lost or done twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ledger.policy import retention

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger.retention")

SCHEDULER_ACTOR = "retention-scheduler"


class _Stopping(Exception):
    """Raised between two destructions once the server shuts down (the next run resumes)."""


class RetentionSchedule:
    def __init__(
        self,
        ledger: CustomerLedger,
        seconds: float,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock`: what "now" is for a run (tests move it years ahead)."""
        self.ledger = ledger
        self.seconds = seconds
        self.clock = clock
        self.runs = 0
        self.destroyed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ledger-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Waits for the destruction in progress, if any (the next run does the rest)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def run_once(self) -> retention.RetentionReport:
        report = retention.apply(
            self.ledger,
            actor=SCHEDULER_ACTOR,
            now=self.clock(),
            destroyer=retention.default_destroyer(),
            on_destroyed=self._check_stopping,
        )
        self.runs += 1
        self.destroyed += len(report.destroyed)
        log.info(
            "retention run: %d destroyed, %d held, %d pending, %d failed (policy v%d)",
            len(report.destroyed),
            len(report.held),
            len(report.pending),
            len(report.failed),
            report.policy_version,
        )
        return report

    def _check_stopping(self, destruction: retention.Destruction) -> None:
        if self._stop.is_set():
            raise _Stopping

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.run_once()
            except _Stopping:
                log.info("retention run stopped for shutdown; the next run resumes it")
            except Exception as exc:  # the next interval retries; serving goes on
                log.error("retention run failed: %s: %s", type(exc).__name__, exc)
