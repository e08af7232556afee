"""The projections' own connection to the database that holds the events.

Projection tables live in the event store's database — the same SQLite file, the same
PostgreSQL database — for two reasons. Exactly-once needs a projection's rows and its
position to commit in one transaction, which only one database gives. And ordering: in one
SQLite file (WAL) or one PostgreSQL cluster, a projection commit that survives a crash
implies that every event it read survived too, so a projection can never be ahead of its
log. The connection is our own (sqlite3 / psycopg), not the event store library's, so a
slow projection never holds the connection commands need.

SQL is written once with `?` placeholders and `{blob}` / `{bigint}` for the two types whose
names differ; `Tx` translates for PostgreSQL. Ids and times are TEXT in both (canonical
UUIDs, fixed-width UTC ISO-8601), so rows compare byte for byte across rebuilds and stores.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ledger.config import Settings, with_options
from ledger.sqlite_files import prepare_private_sqlite

SQLITE_LOCK_TIMEOUT = 10.0
READERS = 4  # read connections per process (the API's look-ups and duplicate checks)


def iso(moment: datetime | None) -> str | None:
    """Fixed-width UTC text: sorts like time, compares byte for byte."""
    if moment is None:
        return None
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year; isoformat does
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as the strftime above, several times faster (rebuilds call it a lot).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


class Tx:
    """One transaction's cursor, with the few dialect differences hidden."""

    def __init__(self, kind: str, cursor: Any, connection: Any = None) -> None:
        self.kind = kind
        self._cursor = cursor
        # PostgreSQL in pipeline mode: a query whose rows are read gets a cursor of its own,
        # so its results cannot be confused with those of statements still in flight.
        self._connection = connection

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgresql"

    def sql(self, template: str) -> str:
        text = template.replace("{blob}", "BYTEA" if self.is_postgres else "BLOB")
        text = text.replace("{bigint}", "BIGINT")
        return text.replace("?", "%s") if self.is_postgres else text

    def execute(self, template: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self.sql(template), tuple(params))

    def executemany(self, template: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if rows:
            self._cursor.executemany(self.sql(template), rows)

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        upsert_on: str | None = None,
        types: Mapping[str, str] | None = None,
    ) -> None:
        """Insert many rows (replacing, with `upsert_on`, a row whose key exists); within
        one call each key may appear once. On PostgreSQL one statement per call: every
        column is sent as one array and `unnest`ed (`types` names the columns that are
        not TEXT), so the statement stays short and is parsed once, whatever the rows."""
        rows = [tuple(row) for row in rows]
        if not rows:
            return
        tail = ""
        if upsert_on is not None:
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != upsert_on)
            tail = f" ON CONFLICT ({upsert_on}) DO UPDATE SET {updates}"
        names = ", ".join(columns)
        if not self.is_postgres:
            marks = ", ".join("?" * len(columns))
            self._cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}){tail}", rows)
            return
        kinds = types or {}
        arrays = ", ".join(f"%b::{kinds.get(c, 'text')}[]" for c in columns)
        self._cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){tail}",
            [list(column) for column in zip(*rows, strict=True)],
        )

    def rows(self, template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._connection is None:
            self._cursor.execute(self.sql(template), tuple(params))
            return [tuple(row) for row in self._cursor.fetchall()]
        # tuple rows whatever the connection's default (the event store's are dict rows)
        with self._connection.cursor(row_factory=tuple_row) as cursor:
            cursor.execute(self.sql(template), tuple(params))
            return [tuple(row) for row in cursor.fetchall()]

    def one(self, template: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.rows(template, params)
        return rows[0] if rows else None

    def is_in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column IN (...)` and its parameters: one array parameter on PostgreSQL (one
        statement text whatever the count), a placeholder each on SQLite (callers chunk)."""
        if self.is_postgres:
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def lock_rows(self, table: str, key: str, values: Sequence[str]) -> None:
        """Serialise with other writers of these rows (PostgreSQL); SQLite's write
        transaction already holds the database lock."""
        if self.is_postgres and values:
            where, params = self.is_in(key, values)
            self.execute(
                f"SELECT {key} FROM {table} WHERE {where} ORDER BY {key} FOR UPDATE", params
            )


def _postgres_connection(dsn: str) -> psycopg.Connection[Any]:
    """A projection connection whose statements are planned for their actual parameters
    and the tables as they are now, never from a cached generic plan.

    psycopg prepares a statement after a few runs, and PostgreSQL then reuses one generic
    plan for it until the table is next analysed. Projection tables start empty (a new
    ledger, every rebuild), so that plan was made for an empty table: a sequential scan,
    kept while the table grew to thousands of rows (the duplicate check's block look-up
    took 8-28 ms instead of 0.3 ms per registration in a fresh benchmark). Planning each of
    these short statements costs a fraction of a millisecond.
    """
    return psycopg.connect(
        with_options(dsn, "-c plan_cache_mode=force_custom_plan"), autocommit=True
    )


class ProjectionDatabase:
    """Thread-safe access for projection reads and writes: one connection for writes
    (catch-ups, purges, rebuilds), and a small pool of connections for reads, so that
    concurrent API reads (look-ups, duplicate checks) neither queue behind each other on
    one connection nor behind a catch-up."""

    def __init__(
        self,
        kind: str,
        connection: Any,
        description: str,
        dsn: str | None = None,
        *,
        connect_reader: Callable[[], Any],
        readers: int = READERS,
    ) -> None:
        self.kind = kind
        self._conn = connection
        self._dsn = dsn
        self._description = description
        self._lock = threading.RLock()
        self._closed = False
        self._connect_reader = connect_reader
        self._max_readers = max(1, readers)
        self._idle_readers: list[Any] = []
        self._open_readers = 0
        self._readers_free = threading.Condition()

    @classmethod
    def open(cls, settings: Settings) -> ProjectionDatabase:
        store = settings.store
        if store.kind == "sqlite":
            assert store.sqlite_path is not None
            return cls._open_sqlite(store.sqlite_path, settings.pg_readers)
        dsn = store.postgres_dsn
        conn = _postgres_connection(dsn)
        return cls(
            "postgresql",
            conn,
            f"postgresql database {store.dbname}",
            dsn,
            connect_reader=lambda: _postgres_connection(dsn),
            readers=settings.pg_readers,
        )

    @classmethod
    def _open_sqlite(cls, path: Path, readers: int) -> ProjectionDatabase:
        prepare_private_sqlite(path)
        conn = _sqlite_connection(path)
        return cls(
            "sqlite",
            conn,
            f"sqlite file {path}",
            connect_reader=lambda: _sqlite_connection(path),
            readers=readers,
        )

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction: everything in the block commits together or not at all."""
        with self._lock:
            self._check_open()
            if self.kind == "sqlite":
                cursor = self._conn.cursor()
                try:
                    # IMMEDIATE: take the write lock now, not on the first write, so two
                    # writers never deadlock upgrading their locks.
                    cursor.execute("BEGIN IMMEDIATE")
                    try:
                        yield Tx(self.kind, cursor)
                    except BaseException:
                        cursor.execute("ROLLBACK")
                        raise
                    cursor.execute("COMMIT")
                finally:
                    cursor.close()
            else:
                self._reconnect_if_broken()
                # Pipeline mode: statements whose results nobody reads (deletes, inserts)
                # go out without waiting for each reply, so a batch costs a few round trips.
                with (
                    self._conn.pipeline(),
                    self._conn.transaction(),
                    self._conn.cursor() as cursor,
                ):
                    # Projections are rebuilt from the log, so their commits need not wait
                    # for the disk: a crash may lose the last few, which are then applied
                    # again (position and rows go together). The events they were made from
                    # were committed durably before they could be read, so a projection can
                    # never survive a crash that its events did not.
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
                    yield Tx(self.kind, cursor, self._conn)

    @contextmanager
    def reading(self, *, snapshot: bool = False) -> Iterator[Tx]:
        """Reads; with `snapshot`, in one transaction so that several statements see one
        state (SQLite always reads in a transaction: it costs nothing there). PostgreSQL
        runs a lone statement in autocommit: one round trip instead of three."""
        self._check_open()
        conn = self._take_reader()
        try:
            if self.kind == "sqlite":
                cursor = conn.cursor()
                try:
                    cursor.execute("BEGIN")
                    try:
                        yield Tx(self.kind, cursor)
                    finally:
                        cursor.execute("ROLLBACK")
                finally:
                    cursor.close()
            elif not snapshot:
                with conn.cursor() as cursor:
                    yield Tx(self.kind, cursor)
            else:
                with conn.transaction(force_rollback=True), conn.cursor() as cursor:
                    yield Tx(self.kind, cursor)
        finally:
            self._give_back(conn)

    def _take_reader(self) -> Any:
        """An idle reader, a new one while fewer than the maximum are open, else wait."""
        with self._readers_free:
            while True:
                if self._closed:
                    raise RuntimeError("the projection database connection is closed")
                if self._idle_readers:
                    conn = self._idle_readers.pop()
                    break
                if self._open_readers < self._max_readers:
                    self._open_readers += 1
                    conn = None
                    break
                self._readers_free.wait()
        if conn is not None and not _broken(conn):
            return conn
        if conn is not None:
            with suppress(Exception):
                conn.close()
        try:
            return self._connect_reader()
        except BaseException:
            with self._readers_free:
                self._open_readers -= 1
                self._readers_free.notify()
            raise

    def _give_back(self, conn: Any) -> None:
        with self._readers_free:
            if self._closed:
                self._open_readers -= 1
                conn.close()
            else:
                self._idle_readers.append(conn)
            self._readers_free.notify()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
        with self._readers_free:
            for conn in self._idle_readers:
                with suppress(Exception):
                    conn.close()
            self._open_readers -= len(self._idle_readers)
            self._idle_readers.clear()
            self._readers_free.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the projection database connection is closed")

    def _reconnect_if_broken(self) -> None:
        if (self._conn.broken or self._conn.closed) and self._dsn is not None:
            self._conn = _postgres_connection(self._dsn)

    def __repr__(self) -> str:
        return f"ProjectionDatabase({self._description})"


def _sqlite_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, timeout=SQLITE_LOCK_TIMEOUT, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # as the event store uses it
        # A commit may be lost to a power cut, never half-kept; a lost projection commit
        # is replayed from the log (which WAL ordering keeps at least as far along).
        conn.execute("PRAGMA synchronous=NORMAL")
        # Rows deleted by an erasure are overwritten, not left in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


def _broken(conn: Any) -> bool:
    return bool(getattr(conn, "broken", False) or getattr(conn, "closed", False))
