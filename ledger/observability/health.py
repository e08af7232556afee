"""A background probe of the event store that drives gRPC health and `ledger_store_up`.

Load balancers and orchestrators ask the health service whether to send traffic here; a
server whose store is gone can answer nothing useful, so it says NOT_SERVING until the
store answers again. The probe runs on its own thread every LEDGER_HEALTH_PROBE_SECONDS:
calls never wait for it and it adds nothing to their path. On PostgreSQL it holds one
connection of its own (counted in `Settings.pg_connection_bound`), opened with a short
connect and statement timeout so that a dead server is noticed within about one period
rather than after the pool's long timeouts; on SQLite it asks the ledger's own recorder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from ledger.application import CustomerLedger
from ledger.config import Settings, with_options

log = logging.getLogger("ledger.health")


class _PostgresPing:
    def __init__(self, dsn: str, timeout: float) -> None:
        millis = max(100, int(timeout * 1000))
        self._dsn = with_options(dsn, f"-c statement_timeout={millis}")
        self._timeout = max(1, round(timeout))
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=self._timeout
                )
            self._conn.execute("SELECT 1").fetchone()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to release
                log.debug("probe connection close failed", exc_info=True)


def store_check(
    ledger: CustomerLedger, settings: Settings
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(check, close): `check` raises unless the event store answers a trivial query."""
    store = settings.store
    if store.kind == "postgresql":
        ping = _PostgresPing(store.postgres_dsn, settings.api.health_probe_seconds)
        return ping, ping.close

    def sqlite_check() -> None:
        ledger.recorder.max_notification_id()

    return sqlite_check, lambda: None


class StoreProbe:
    """Calls `on_change(True|False)` when the store starts or stops answering."""

    def __init__(
        self,
        check: Callable[[], None],
        on_change: Callable[[bool], None],
        *,
        seconds: float,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._check = check
        self._close = close
        self._on_change = on_change
        self._seconds = seconds
        self._stop = threading.Event()
        self.up = True
        self._thread = threading.Thread(target=self._run, name="ledger-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._close()

    def probe(self) -> bool:
        try:
            self._check()
            up = True
        except Exception as exc:
            up = False
            if self.up:
                # The type only: a driver's message can quote the connection string.
                log.error(
                    "event store unreachable: health NOT_SERVING (%s)",
                    type(exc).__name__,
                    extra={"fields": {"event": "store_down"}},
                )
        if up and not self.up:
            log.info(
                "event store answers again: health SERVING",
                extra={"fields": {"event": "store_up"}},
            )
        if up != self.up:
            self.up = up
            self._on_change(up)
        return up

    def _run(self) -> None:
        while not self._stop.wait(self._seconds):
            self.probe()
