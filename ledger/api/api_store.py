"""The API's own small tables, in the event store's database: revoked principals and the
request ids that make creation idempotent.

Neither table holds personal data. A request id maps to the id of the customer it created,
never to a response: the response is re-read from the log on a retry (responses carry
personal data, which is only ever stored sealed in events).

Both are checked on every call that needs them (no cache), so a revocation takes effect on
the principal's next call, from whichever server process serves it.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import psycopg

from ledger.config import Settings
from ledger.sqlite_files import prepare_private_sqlite

_REVOCATIONS = """CREATE TABLE IF NOT EXISTS ledger_api_revocations (
    principal TEXT PRIMARY KEY,
    revoked_at {time} NOT NULL
)"""
_REQUESTS = """CREATE TABLE IF NOT EXISTS ledger_api_requests (
    principal TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at {time} NOT NULL,
    PRIMARY KEY (principal, method, request_id)
)"""
_REVOKE = (
    "INSERT INTO ledger_api_revocations (principal, revoked_at) VALUES (?, ?)"
    " ON CONFLICT (principal) DO UPDATE SET revoked_at = excluded.revoked_at"
)
_REVOKED_AT = "SELECT revoked_at FROM ledger_api_revocations WHERE principal = ?"
_REVOKED_ALL = "SELECT principal, revoked_at FROM ledger_api_revocations ORDER BY principal"
_RESERVE = (
    "INSERT INTO ledger_api_requests (principal, method, request_id, customer_id, created_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (principal, method, request_id) DO NOTHING"
)
_RESERVED = (
    "SELECT customer_id FROM ledger_api_requests"
    " WHERE principal = ? AND method = ? AND request_id = ?"
)


MAX_READERS = 8  # PostgreSQL connections for the per-call reads of one server process
READER_WAIT_SECONDS = 30.0


class ApiStore(ABC):
    """Thread-safe: one connection behind a lock (every statement here is tiny)."""

    time_type = "TEXT"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def _cursor(self, *, write: bool = True) -> AbstractContextManager[Any]:
        """A cursor holding the lock: in a transaction (committed on success) to write, or
        for one read statement on its own (no write lock: the per-call revocation check
        must not queue behind the event store's writers)."""

    def _sql(self, statement: str) -> str:
        return statement

    def _time(self, moment: datetime) -> object:
        return moment

    def _read_time(self, value: object) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value)).astimezone(UTC)

    def _execute(
        self, statement: str, params: Sequence[object] = (), *, write: bool = False
    ) -> list[tuple[Any, ...]]:
        with self._cursor(write=write) as cur:
            cur.execute(self._sql(statement), tuple(params))
            return list(cur.fetchall()) if cur.description else []

    def _create_tables(self) -> None:
        for table in (_REVOCATIONS, _REQUESTS):
            self._execute(table.format(time=self.time_type), write=True)

    # Revocations ------------------------------------------------------------------------

    def revoke(self, principal: str, *, at: datetime | None = None) -> datetime:
        """Every credential of `principal` issued up to now stops working on its next call;
        credentials issued later (a new token, a new certificate) work again."""
        moment = at or datetime.now(UTC)
        self._execute(_REVOKE, (principal, self._time(moment)), write=True)
        return moment

    def revoked_at(self, principal: str) -> datetime | None:
        rows = self._execute(_REVOKED_AT, (principal,))
        return self._read_time(rows[0][0]) if rows else None

    def revocations(self) -> list[tuple[str, datetime]]:
        return [(str(p), self._read_time(t)) for p, t in self._execute(_REVOKED_ALL)]

    # Idempotent requests ------------------------------------------------------------------

    def reserve(self, principal: str, method: str, request_id: str, customer_id: UUID) -> UUID:
        """The customer id bound to this request id (per principal and method): the one
        given if the request id is new, else the one bound by the first attempt."""
        with self._cursor() as cur:
            now = self._time(datetime.now(UTC))
            cur.execute(self._sql(_RESERVE), (principal, method, request_id, str(customer_id), now))
            cur.execute(self._sql(_RESERVED), (principal, method, request_id))
            (bound,) = cur.fetchone()
        return UUID(str(bound))

    def reserved(self, principal: str, method: str, request_id: str) -> UUID | None:
        rows = self._execute(_RESERVED, (principal, method, request_id))
        return UUID(str(rows[0][0])) if rows else None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SQLiteApiStore(ApiStore):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._create_tables()

    def _time(self, moment: datetime) -> object:
        return moment.isoformat()

    @contextmanager
    def _cursor(self, *, write: bool = True) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                if not write:
                    yield cur
                    return
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresApiStore(ApiStore):
    time_type = "TIMESTAMPTZ"

    def __init__(self, dsn: str, *, readers: int = MAX_READERS) -> None:
        super().__init__()
        self._dsn = dsn
        self._max_readers = max(1, readers)
        self._conn = psycopg.connect(dsn, autocommit=True)
        # Reads (the revocation check on every call) borrow from a few connections of
        # their own: on the shared one they queued behind each other, one round trip at a
        # time. Bounded, so that many server threads do not exhaust max_connections.
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._readers: list[psycopg.Connection[Any]] = []
        with self._cursor() as cur:
            # Several servers may start at once: CREATE IF NOT EXISTS is not race-free.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('ledger_api_tables'))")
            for table in (_REVOCATIONS, _REQUESTS):
                cur.execute(table.format(time=self.time_type))

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _cursor(self, *, write: bool = True) -> Iterator[Any]:
        if not write:
            conn = self._borrow()
            try:
                with conn.cursor() as cur:
                    yield cur
            finally:
                self._idle.put(conn)
            return
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._dsn, autocommit=True)
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur

    def _borrow(self) -> psycopg.Connection[Any]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                self._check_open()
                if len(self._readers) < self._max_readers:
                    conn = psycopg.connect(self._dsn, autocommit=True)
                    self._readers.append(conn)
                    return conn
            try:
                conn = self._idle.get(timeout=READER_WAIT_SECONDS)
            except queue.Empty:  # all busy (or the server is slow): retryable, not a bug
                raise psycopg.OperationalError("no API store connection came free") from None
        if conn.closed or conn.broken:
            with self._lock:
                self._check_open()
                self._readers.remove(conn)
                conn = psycopg.connect(self._dsn, autocommit=True)
                self._readers.append(conn)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the API store is closed")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def open_api_store(settings: Settings) -> ApiStore:
    """The API tables live in the event store's own database ("same store")."""
    store = settings.store
    if store.kind == "sqlite":
        assert store.sqlite_path is not None
        prepare_private_sqlite(store.sqlite_path)
        return SQLiteApiStore(str(store.sqlite_path))
    return PostgresApiStore(store.postgres_dsn, readers=settings.pg_readers)
