"""The library's application recorders, extended so that every insert of events appends
their Merkle leaves in the same transaction.

So the delay between an event being acknowledged and it being covered by the Merkle log is
zero: either the events and their leaves commit together, or neither does. Both stores
already serialise inserts (SQLite has one writer at a time; the PostgreSQL recorder takes an
EXCLUSIVE lock on the events table before inserting), and we append while holding that lock,
so leaf order is commit order is position order. A batch of any number of events (group
commit puts many commands' events in one insert) appends one leaf per event, in position
order.

Each leaf carries a MAC under the recorder's `leaf_key` (set by the ledger right after
construction, see `leaf_mac.py`); a recorder without one refuses to write, so no leaf is
ever appended unauthenticated. `grown(size)`, when set, is told the tree's size after each
insert has committed: the tree-head signer wakes on it, without a query.

Selected through the library's own switch, APPLICATION_RECORDER_TOPIC (set in
`Settings.eventsourcing_env`), so the library's factories still build and wire them.

A save may also pass `in_transaction=` a callable: it gets the batch (`InsertedBatch`: the
cursor, the positions given to the events, how to find the position before them) after the leaves,
still inside the transaction and under the lock, so that the in-process projections are
written in the same commit as the events they were made from (group commit's one
transaction per batch). It must not raise; if it does, the whole transaction is aborted.
A PostgreSQL save may also pass `new_keys=(statement, rows)`: new customers' data-key rows,
inserted first in the same transaction (the key store's tables in the same database), so
that keys and the events sealed with them commit together.
"""

# SQL text here interpolates only module-constant identifiers (table and column names);
# every value goes through placeholders.
# ruff: noqa: S608

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import Environment
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from ledger.audit.leaf import uuid_text_from_hex
from ledger.audit.storage import (
    HEADS_TABLE,
    POSTGRES,
    SQLITE,
    TREE_TABLE,
    Dialect,
    FrontierCache,
    WriteCursor,
    _values,
    append_leaves,
    upgrade_tree_table,
)
from ledger.config import ConfigError
from ledger.crypto_shred.erasures import CATEGORIES_ERASED_TOPIC, ERASED_TOPIC

log = logging.getLogger("ledger.audit")

ERASURES_PAGE = 10_000


_ALL_ERASURE_TOPICS = f"topic IN ('{ERASED_TOPIC}', '{CATEGORIES_ERASED_TOPIC}')"


def _all_erasures_index(dialect: Dialect) -> str:
    """A partial index holding only the Erased and CategoriesErased events, so that reading
    who is erased (`ledger.crypto_shred.erasures`, on every trip to the key store) touches
    those few rows, not the whole log. The topics are module constants (no quote in them),
    written literally so the planner can match them."""
    assert "'" not in ERASED_TOPIC and "'" not in CATEGORIES_ERASED_TOPIC
    table = dialect.events_table
    name = table.rsplit(".", 1)[-1].strip('"') + "_erasures_all"
    column = "topic" if dialect.kind == "sqlite" else dialect.position
    return f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column}) WHERE {_ALL_ERASURE_TOPICS}"


def _all_erasures_query(dialect: Dialect) -> str:
    """(position, customer id, state or NULL): the state of CategoriesErased events only
    (it says which categories; it holds no personal data)."""
    return dialect.sql(
        f"SELECT {dialect.position} AS position, originator_id, "
        f"CASE WHEN topic = '{CATEGORIES_ERASED_TOPIC}' THEN state END AS state "
        f"FROM {dialect.events_table} WHERE {_ALL_ERASURE_TOPICS} AND {dialect.position} > ? "
        f"ORDER BY {dialect.position} LIMIT {ERASURES_PAGE}"
    )


def _all_erasure_rows(rows: Sequence[Any]) -> list[tuple[int, UUID, bytes | None]]:
    found = []
    for row in rows:
        position, originator_id, state = _values(row)
        found.append(
            (int(position), UUID(str(originator_id)), None if state is None else bytes(state))
        )
    return found


@dataclass(frozen=True)
class InsertedBatch:
    """Events just inserted, seen from inside their transaction."""

    kind: str  # "sqlite" or "postgresql"
    cursor: WriteCursor
    connection: Any  # PostgreSQL: the connection (for reads in pipeline mode); SQLite: None
    positions: Sequence[int]  # one per stored event, in the order they were given
    # A scalar SQL subquery, with one `?` for `positions`' lowest, giving the highest
    # position in the log before these events (0 when none): a caller can compare with it
    # inside its own statement, saving a round trip.
    previous_sql: str

    @property
    def first(self) -> int:
        return min(self.positions)


InTransaction = Callable[[InsertedBatch], None]


def _previous_sql(dialect: Dialect) -> str:
    return (
        f"(SELECT COALESCE(MAX({dialect.position}), 0) FROM {dialect.events_table}"
        f" WHERE {dialect.position} < ?)"
    )


def _run_hook(
    hook: InTransaction | None,
    kind: str,
    cursor: WriteCursor,
    connection: Any,
    dialect: Dialect,
    ids: Sequence[int],
) -> None:
    if hook is None or not ids:
        return
    hook(InsertedBatch(kind, cursor, connection, list(ids), _previous_sql(dialect)))


class LeafAuthentication:
    """What both recorders add: the leaf key and the growth callback."""

    leaf_key: bytes | None = None
    grown: Callable[[int], None] | None = None

    def _key(self) -> bytes:
        if self.leaf_key is None:
            raise ConfigError("the recorder has no leaf key: open the store through the ledger")
        return self.leaf_key

    _appended = 0  # the tree's size after this recorder's last insert (not yet committed)

    def _tell(self, size: int) -> None:
        self._appended = size

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert; then, committed, the tree's size goes to `grown`."""
        ids: Sequence[int] | None = super().insert_events(  # type: ignore[misc]
            stored_events, **kwargs
        )
        grown = self.grown
        if grown is not None and self._appended:
            grown(self._appended)
        return ids


def _batch(
    ids: Sequence[int] | None, stored_events: Sequence[StoredEvent]
) -> list[tuple[int, Any, int, str, bytes]]:
    if ids is None or len(ids) != len(stored_events):
        raise RuntimeError("the recorder did not return one notification id per event")
    return [
        (int(i), s.originator_id, s.originator_version, s.topic, s.state)
        for i, s in zip(ids, stored_events, strict=True)
    ]


class AuditedSQLiteRecorder(LeafAuthentication, SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self.dialect = Dialect(
            SQLITE.kind, SQLITE.placeholder, SQLITE.blob, events_table_name, SQLITE.position
        )
        self.frontier = FrontierCache()

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *SQLITE.ddl(),
            # Called by the library's constructor, before `self.dialect` is set.
            _all_erasures_index(replace(SQLITE, events_table=self.events_table_name)),
        ]

    def select_all_erasures(self, after: int) -> list[tuple[int, UUID, bytes | None]]:
        """Erased and CategoriesErased events after `after`, in log order: (position,
        customer id, the state of a CategoriesErased event or None for an Erased one)."""
        found: list[tuple[int, UUID, bytes | None]] = []
        statement = _all_erasures_query(self.dialect)
        while True:
            with self.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, (after,))
                page = _all_erasure_rows(cursor.fetchall())
            found += page
            if len(page) < ERASURES_PAGE:
                return found
            after = page[-1][0]

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as cursor:
            upgrade_tree_table(cursor, self.dialect)
            _adopt_existing_events(cursor, self.dialect)

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if kwargs.get("new_keys"):
            raise ConfigError("keys are stored with events only in a PostgreSQL database")
        key = self._key()
        ids = super()._insert_events(c, stored_events, **kwargs)
        self._tell(append_leaves(c, self.dialect, _batch(ids, stored_events), self.frontier, key))
        if ids:
            _run_hook(kwargs.get("in_transaction"), SQLITE.kind, c, None, self.dialect, ids)
        return ids


class LedgerPostgresFactory(PostgresFactory):
    """The library's factory, but its pool connects with the ledger's one connection string
    (POSTGRES_CONNINFO, from `StoreLocation.postgres_dsn`): the library passes only host,
    port, user, password and dbname, so the store URL's sslmode, application_name, options
    and the like would not reach the event store's connections."""

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        conninfo = self.env.get("POSTGRES_CONNINFO")
        if conninfo:
            # Before the pool opens (it opens on first use); its own keyword arguments
            # (the same host, port, user, dbname) still take precedence.
            self.datastore.pool.conninfo = conninfo


class AuditedPostgresRecorder(LeafAuthentication, PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        if datastore.enable_db_functions:
            # That path inserts through a stored function and would bypass the leaves.
            raise ConfigError("the ledger's recorder does not support database functions")
        super().__init__(datastore, events_table_name=events_table_name)
        # The library creates its insert function (`CREATE OR REPLACE FUNCTION`) on every
        # start even when it is not used, as here: two processes starting at once then
        # fail with "tuple concurrently updated". Not used, so not created.
        del self.sql_create_statements[self.create_insert_function_statement_index]
        self.dialect = Dialect(
            POSTGRES.kind, POSTGRES.placeholder, POSTGRES.blob, events_table_name, "notification_id"
        )
        self.frontier = FrontierCache()
        self.sql_create_statements.extend(SQL(statement).format() for statement in POSTGRES.ddl())
        self.sql_create_statements.append(SQL(_all_erasures_index(self.dialect)).format())

    def select_all_erasures(self, after: int) -> list[tuple[int, UUID, bytes | None]]:
        """Erased and CategoriesErased events after `after`, in log order: (position,
        customer id, the state of a CategoriesErased event or None for an Erased one)."""
        found: list[tuple[int, UUID, bytes | None]] = []
        statement = _all_erasures_query(self.dialect)
        while True:
            with self.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(statement.encode(), (after,))
                page = _all_erasure_rows(cursor.fetchall())
            found += page
            if len(page) < ERASURES_PAGE:
                return found
            after = page[-1][0]

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as cursor:
            self._lock_table(cursor)
            upgrade_tree_table(cursor, self.dialect)
            _adopt_existing_events(cursor, self.dialect)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # First in the events' transaction (pipelined): new data keys given with the save,
        # (statement, rows), so that keys and the events sealed with them commit together.
        new_keys: tuple[str, Sequence[Sequence[Any]]] | None = kwargs.get("new_keys")
        if new_keys:
            statement, rows = new_keys
            curs.executemany(statement, rows)
        super()._insert_events(curs, stored_events, **kwargs)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # Still inside the insert's transaction and under its EXCLUSIVE table lock.
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        try:
            key = self._key()
            self._tell(
                append_leaves(curs, self.dialect, _batch(ids, stored_events), self.frontier, key)
            )
            if ids:
                hook = kwargs.get("in_transaction")
                _run_hook(hook, POSTGRES.kind, curs, curs.connection, self.dialect, ids)
        except BaseException:
            # The library commits unless the transaction failed in the database: make sure
            # it did, so events never commit without their leaves.
            _abort(curs)
            raise
        return ids


def _abort(cursor: Cursor[DictRow]) -> None:
    try:
        cursor.execute("SELECT 1 / 0")
        cursor.fetchall()
    except Exception:  # noqa: S110  (the error is the point: it aborts the transaction)
        pass


def _adopt_existing_events(cursor: WriteCursor, dialect: Dialect) -> None:
    """A store written before the audit layer existed: put its events into the tree once.

    Only when the tree is empty and no tree head was ever issued; otherwise events that are
    not in the tree are exactly what `ledger verify` must report (inserted after the fact),
    and adopting them here would launder them.
    """
    cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {TREE_TABLE} LIMIT 1) AS t")
    if _first(cursor):
        return
    cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {HEADS_TABLE} LIMIT 1) AS t")
    if _first(cursor):
        return
    cursor.execute(
        f"SELECT {dialect.position}, originator_id, originator_version, topic, state "
        f"FROM {dialect.events_table} ORDER BY {dialect.position}"
    )
    rows = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in cursor.fetchall()]
    if not rows:
        return
    events = [
        (
            int(p),
            uuid_text_from_hex(o) if dialect.kind == "sqlite" else str(o),
            int(v),
            str(t),
            bytes(s),
        )
        for p, o, v, t, s in rows
    ]
    append_leaves(cursor, dialect, events)  # authenticated by the ledger's first open
    log.warning("adopted %d events written before the audit layer into the Merkle log", len(rows))


def _first(cursor: WriteCursor) -> int:
    row = cursor.fetchall()[0]
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    return int(values[0])
