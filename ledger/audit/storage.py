"""Where the audit layer keeps its data, on either store, and how it reads the event log.

Two tables live beside the library's event table, in the same database:

* `ledger_merkle_leaves(leaf_index, position, leaf_hash, nodes, mac)`: one row per stored event,
  in log order. `position` is the event's notification id (positions can have gaps, leaf
  indexes cannot). `nodes` holds the hashes of the perfect subtrees this leaf completes,
  lowest level first, 32 bytes each (leaf i completes as many as i has trailing one-bits),
  so every perfect subtree's hash is stored exactly once, in the row of its last leaf: the
  tree grows by one row per event, proofs and roots are a primary-key lookup of a few rows,
  and the verifier reads one row per event. `mac` authenticates the leaf as the ledger's
  own (`leaf_mac.py`); it is NULL only in stores written before leaves carried one, until
  the first open backfills them.
* `ledger_tree_heads(tree_size, root_hash, timestamp_ms, key_id, signature)`: every signed
  tree head ever issued.

Writers append to the tree inside the transaction that inserts the events (see
`recorders.py`), through `append_leaves` and the writer's own cursor. Everyone else — the
verifier, proofs, tree-head issuance, exports — goes through `AuditStore`, which holds its
own connection and needs nothing but the store's location: no keys, no application.
"""

# SQL text here interpolates only module-constant identifiers (table and column names);
# every value goes through placeholders.
# ruff: noqa: S608

from __future__ import annotations

import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from ledger.audit import merkle
from ledger.audit.leaf import canonical_id, encode_leaf
from ledger.audit.leaf_mac import LeafMac
from ledger.audit.tree_heads import TreeHead
from ledger.config import Settings
from ledger.domain.errors import LedgerError

TREE_TABLE = "ledger_merkle_leaves"
# A partial index of the leaves without an authentication code: empty once a store is
# upgraded, so asking "are there any?" at every open costs an index probe, not a scan.
UNAUTHENTICATED_INDEX = "ledger_merkle_leaves_without_mac"
HEADS_TABLE = "ledger_tree_heads"
SQLITE_EVENTS_TABLE = "stored_events"  # the library's name for an application's events
POSTGRES_EVENTS_TABLE = "ledger_events"  # "<application name>_events"
PAGE = 20_000


class AuditStoreError(Exception):
    """The audit tables are damaged in a way that stops the operation (the message says
    which); writers refuse rather than extend a damaged tree."""


class NotALedgerStore(LedgerError):
    """There is no store at that location, or it holds no ledger (a mistake, not tampering)."""


@dataclass(frozen=True)
class Dialect:
    kind: str
    placeholder: str
    blob: str
    events_table: str
    position: str  # the column that is the event's notification id

    def sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def ddl(self) -> list[str]:
        without_rowid = " WITHOUT ROWID" if self.kind == "sqlite" else ""
        return [
            f"CREATE TABLE IF NOT EXISTS {TREE_TABLE} ("
            "leaf_index BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, "
            f"leaf_hash {self.blob} NOT NULL, nodes {self.blob} NOT NULL, "
            f"mac {self.blob}){without_rowid}",
            f"CREATE TABLE IF NOT EXISTS {HEADS_TABLE} ("
            "tree_size BIGINT PRIMARY KEY, "
            f"root_hash {self.blob} NOT NULL, timestamp_ms BIGINT NOT NULL, "
            f"key_id TEXT NOT NULL, signature {self.blob} NOT NULL)",
        ]


def upgrade_tree_table(cursor: WriteCursor, dialect: Dialect) -> None:
    """Give a leaves table created before leaves carried a MAC its `mac` column, and the
    partial index of leaves without one. Looks first, so a store that has both takes no
    schema lock at all."""
    if dialect.kind == "sqlite":
        cursor.execute(f"SELECT name FROM pragma_table_info('{TREE_TABLE}') WHERE name = 'mac'")
        has_column = bool(_fetch(cursor))
        cursor.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
            (UNAUTHENTICATED_INDEX,),
        )
    else:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            f"AND table_name = '{TREE_TABLE}' AND column_name = 'mac'"
        )
        has_column = bool(_fetch(cursor))
        cursor.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
            (UNAUTHENTICATED_INDEX,),
        )
    has_index = bool(_fetch(cursor))
    if not has_column:
        cursor.execute(f"ALTER TABLE {TREE_TABLE} ADD COLUMN mac {dialect.blob}")
    if not has_index:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {UNAUTHENTICATED_INDEX} ON {TREE_TABLE} (leaf_index) "
            "WHERE mac IS NULL"
        )


SQLITE = Dialect("sqlite", "?", "BLOB", SQLITE_EVENTS_TABLE, "rowid")
POSTGRES = Dialect("postgresql", "%s", "BYTEA", POSTGRES_EVENTS_TABLE, "notification_id")


# Writing: inside the event insert's transaction ------------------------------------------------


class WriteCursor(Protocol):
    """What both libraries' cursors offer (sqlite3 rows or psycopg dict rows)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any: ...
    def executemany(self, *args: Any, **kwargs: Any) -> Any: ...
    def fetchall(self) -> Any: ...


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _fetch(cursor: WriteCursor) -> list[tuple[Any, ...]]:
    return [_values(row) for row in cursor.fetchall()]


class FrontierCache:
    """The tree's right edge as this writer left it, so the next append need not read the
    peaks back: one round trip fewer per batch. Trusted only when the tree's last leaf,
    read under the writer's lock, is the very leaf (index and hash) it was made after —
    a leaf hash covers the event's position, which no other writer ever reuses, so a tree
    another writer grew, or a transaction that rolled back, never matches."""

    def __init__(self) -> None:
        self._last: tuple[int, bytes] | None = None
        self._hashes: list[bytes] = []
        self._lock = threading.Lock()

    def get(self, size: int, last_leaf: bytes) -> merkle.Frontier | None:
        with self._lock:
            if size == 0 or self._last != (size - 1, last_leaf):
                return None
            return merkle.Frontier(size, list(self._hashes))

    def keep(self, frontier: merkle.Frontier, last_leaf: bytes) -> None:
        with self._lock:
            self._last = (frontier.size - 1, last_leaf)
            self._hashes = list(frontier.hashes)


def append_leaves(
    cursor: WriteCursor,
    dialect: Dialect,
    events: Sequence[tuple[int, UUID | str, int, str, bytes]],
    cache: FrontierCache | None = None,
    key: bytes | None = None,
) -> int:
    """Append one leaf per (position, originator id, version, topic, state), in position
    order, plus every perfect subtree they complete, each leaf with its MAC under `key`
    (None only when adopting a store's pre-audit events, which the first open then
    authenticates). Must run in the transaction that inserted the events and while no
    other writer can append (the caller's lock). Returns the tree's new size."""
    if not events:
        return 0
    cursor.execute(
        f"SELECT leaf_index, leaf_hash FROM {TREE_TABLE} ORDER BY leaf_index DESC LIMIT 1"
    )
    last = _fetch(cursor)
    size = int(last[0][0]) + 1 if last else 0
    frontier = cache.get(size, bytes(last[0][1])) if cache is not None and last else None
    if frontier is None:
        frontier = merkle.Frontier.of(size, _node_hashes(cursor, dialect, merkle.peaks(size)))
    rows: list[tuple[int, int, bytes, bytes, bytes | None]] = []
    sign = LeafMac(key) if key is not None else None
    completed: list[bytes] = []

    def on_completed(node: merkle.Node, hashed: bytes) -> None:
        completed.append(hashed)  # lowest level first

    for position, originator_id, version, topic, state in sorted(events, key=lambda e: e[0]):
        leaf = encode_leaf(position, canonical_id(originator_id), version, topic, state)
        hashed = merkle.leaf_hash(leaf)
        index = frontier.size
        frontier.append(hashed, on_completed)
        mac = sign(index, hashed) if sign is not None else None
        rows.append((index, position, hashed, b"".join(completed), mac))
        completed.clear()
    cursor.executemany(
        dialect.sql(
            f"INSERT INTO {TREE_TABLE} (leaf_index, position, leaf_hash, nodes, mac) "
            "VALUES (?, ?, ?, ?, ?)"
        ),
        rows,
    )
    if cache is not None and rows:
        cache.keep(frontier, rows[-1][2])
    return frontier.size


def _node_hashes(
    cursor: WriteCursor, dialect: Dialect, nodes: Sequence[merkle.Node]
) -> list[bytes]:
    if not nodes:
        return []
    found = _select_nodes(cursor, dialect, nodes)
    missing = [n for n in nodes if n not in found]
    if missing:
        raise AuditStoreError(
            f"the Merkle tree table lacks node(s) {missing}; run `ledger verify` — "
            "no events are written while the tree is damaged"
        )
    return [found[n] for n in nodes]


def _select_nodes(
    cursor: WriteCursor, dialect: Dialect, nodes: Sequence[merkle.Node]
) -> dict[merkle.Node, bytes]:
    leaves = sorted({merkle.last_leaf(n) for n in nodes})
    marks = ", ".join("?" * len(leaves))
    cursor.execute(
        dialect.sql(
            f"SELECT leaf_index, leaf_hash, nodes FROM {TREE_TABLE} WHERE leaf_index IN ({marks})"
        ),
        leaves,
    )
    return _pick(nodes, _fetch(cursor))


def _pick(
    nodes: Sequence[merkle.Node] | set[merkle.Node], rows: Sequence[tuple[Any, ...]]
) -> dict[merkle.Node, bytes]:
    """The wanted nodes' hashes out of their last leaves' rows."""
    by_leaf = {int(index): (bytes(leaf), bytes(completed)) for index, leaf, completed in rows}
    found: dict[merkle.Node, bytes] = {}
    for node in nodes:
        row = by_leaf.get(merkle.last_leaf(node))
        if row is None:
            continue
        level = node[0]
        hashed = row[0] if level == 0 else row[1][(level - 1) * 32 : level * 32]
        if len(hashed) == merkle.HASH_SIZE:
            found[node] = hashed
    return found


# Reading: the auditor's side ----------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    position: int
    originator_id: str  # canonical text
    version: int
    topic: str
    state: bytes

    def leaf(self) -> bytes:
        return encode_leaf(self.position, self.originator_id, self.version, self.topic, self.state)


class AuditStore(ABC):
    """A read (and tree-head writing) view of one store's event log and audit tables."""

    dialect: Dialect

    @staticmethod
    def open(settings: Settings) -> AuditStore:
        store = settings.store
        if store.kind == "sqlite":
            assert store.sqlite_path is not None
            return SQLiteAuditStore(store.sqlite_path)
        slot = _audit_slot(store.postgres_dsn, settings.pg_readers)
        try:
            return PostgresAuditStore(store.postgres_dsn, release=slot, keep=settings.pg_readers)
        except BaseException:
            slot()
            raise

    # connection-specific ----------------------------------------------------------------

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of a large result, fetched in pages (call inside `snapshot()`)."""

    @abstractmethod
    def _write(self, sql: str, params: Sequence[Any]) -> None: ...

    @abstractmethod
    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows, in one transaction."""

    @abstractmethod
    def snapshot(self) -> Any:
        """A context in which every read sees one consistent state of the store."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # queries ----------------------------------------------------------------------------

    def check_tables(self) -> None:
        for table in (self.dialect.events_table, TREE_TABLE, HEADS_TABLE):
            if not self._table_exists(table):
                raise NotALedgerStore(
                    f"the store has no {table} table: it is not a ledger store, or nothing "
                    "has been written to it yet"
                )

    @abstractmethod
    def _table_exists(self, table: str) -> bool: ...

    def size(self) -> int:
        """How many leaves the tree holds."""
        (top,) = self._rows(f"SELECT MAX(leaf_index) FROM {TREE_TABLE}")[0]
        return 0 if top is None else int(top) + 1

    def nodes(self, wanted: set[merkle.Node]) -> dict[merkle.Node, bytes]:
        leaves = sorted({merkle.last_leaf(n) for n in wanted})
        rows: list[tuple[Any, ...]] = []
        for at in range(0, len(leaves), 500):
            chunk = leaves[at : at + 500]
            rows += self._rows(
                f"SELECT leaf_index, leaf_hash, nodes FROM {TREE_TABLE} "
                f"WHERE leaf_index IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        found = _pick(wanted, rows)
        missing = wanted - set(found)
        if missing:
            raise AuditStoreError(f"the Merkle tree table lacks node(s) {sorted(missing)}")
        return found

    def root(self, size: int) -> bytes:
        nodes = merkle.peaks(size)
        found = self.nodes(set(nodes))
        return merkle.fold([found[n] for n in nodes])

    def range_hashes(self, ranges: Sequence[merkle.Range]) -> list[bytes]:
        return merkle.range_hashes(ranges, self.nodes(merkle.nodes_for(ranges)))

    def leaf_index_of(self, position: int) -> int | None:
        rows = self._rows(f"SELECT leaf_index FROM {TREE_TABLE} WHERE position = ?", [position])
        return int(rows[0][0]) if rows else None

    def position_at(self, leaf_index: int) -> int | None:
        """The log position of the event that is leaf `leaf_index` (None: no such leaf)."""
        rows = self._rows(f"SELECT position FROM {TREE_TABLE} WHERE leaf_index = ?", [leaf_index])
        return int(rows[0][0]) if rows else None

    @abstractmethod
    def position_of(self, originator_id: UUID, version: int) -> int | None: ...

    def event_at(self, position: int) -> EventRow | None:
        d = self.dialect
        rows = self._rows(
            f"SELECT {d.position}, {self._id_column}, originator_version, topic, state "
            f"FROM {d.events_table} WHERE {d.position} = ?",
            [position],
        )
        return self._event(rows[0]) if rows else None

    # SQL giving the originator id in its canonical text form (the leaf's form).
    _id_column = "originator_id"

    def _event(self, row: tuple[Any, ...]) -> EventRow:
        position, oid, version, topic, state = row
        return EventRow(
            int(position),
            str(oid),
            int(version),
            str(topic),
            state if isinstance(state, bytes) else _as_bytes(state),
        )

    def events(self, after: int = 0) -> Iterator[EventRow]:
        """Every stored event with a position above `after`, in position order."""
        d = self.dialect
        sql = (
            f"SELECT {d.position}, {self._id_column}, originator_version, topic, state "
            f"FROM {d.events_table} WHERE {d.position} > ? ORDER BY {d.position}"
        )
        event = self._event
        for row in self._stream(sql, [after]):
            yield event(row)

    def originators(self, topic: str) -> set[str]:
        """The ids (as text) of every aggregate with an event of this topic (the key check
        of `ledger verify`: who was registered, who was erased)."""
        d = self.dialect
        sql = f"SELECT DISTINCT {self._id_column} FROM {d.events_table} WHERE topic = ?"
        return {str(row[0]) for row in self._rows(sql, [topic])}

    def raw_events(self, after: int = 0) -> Iterator[tuple[Any, ...]]:
        """As `events`, as plain (position, id text, version, topic, state) rows: the
        verifier's hot loop converts them itself."""
        d = self.dialect
        sql = (
            f"SELECT {d.position}, {self._id_column}, originator_version, topic, state "
            f"FROM {d.events_table} WHERE {d.position} > ? ORDER BY {d.position}"
        )
        return self._stream(sql, [after])

    def tree_rows(self) -> Iterator[tuple[Any, ...]]:
        """(leaf index, position, leaf hash, completed nodes, MAC or None) of every leaf, in
        leaf order."""
        return self._stream(
            f"SELECT leaf_index, position, leaf_hash, nodes, mac FROM {TREE_TABLE} "
            "ORDER BY leaf_index"
        )

    def leaf_macs(self, start: int, end: int) -> list[tuple[int, int, bytes, bytes | None]]:
        """(leaf index, position, leaf hash, MAC or None) of leaves [start, end)."""
        rows = self._rows(
            f"SELECT leaf_index, position, leaf_hash, mac FROM {TREE_TABLE} "
            "WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index",
            [start, end],
        )
        return [(int(i), int(p), bytes(h), None if m is None else bytes(m)) for i, p, h, m in rows]

    def leaf_hashes(self, end: int) -> Iterator[bytes]:
        """The stored hashes of leaves [0, end), in order (call inside `snapshot()`)."""
        for (hashed,) in self._stream(
            f"SELECT leaf_hash FROM {TREE_TABLE} WHERE leaf_index < ? ORDER BY leaf_index", [end]
        ):
            yield bytes(hashed)

    def first_without_mac(self) -> int | None:
        """The lowest leaf index without a MAC (None: every leaf has one)."""
        rows = self._rows(f"SELECT MIN(leaf_index) FROM {TREE_TABLE} WHERE mac IS NULL")
        return None if rows[0][0] is None else int(rows[0][0])

    def without_mac(self, limit: int) -> list[tuple[int, bytes]]:
        """(leaf index, leaf hash) of the first `limit` leaves without a MAC."""
        rows = self._rows(
            f"SELECT leaf_index, leaf_hash FROM {TREE_TABLE} WHERE mac IS NULL "
            "ORDER BY leaf_index LIMIT ?",
            [limit],
        )
        return [(int(i), bytes(h)) for i, h in rows]

    def set_macs(self, macs: Sequence[tuple[int, bytes]]) -> None:
        """Store (leaf index, MAC) pairs on leaves that have none (backfill)."""
        self._write_many(
            f"UPDATE {TREE_TABLE} SET mac = ? WHERE leaf_index = ? AND mac IS NULL",
            [(mac, index) for index, mac in macs],
        )

    def tree_heads(self) -> list[TreeHead]:
        rows = self._rows(
            f"SELECT tree_size, root_hash, timestamp_ms, key_id, signature FROM {HEADS_TABLE} "
            "ORDER BY tree_size"
        )
        return [_head(row) for row in rows]

    def tree_head(self, size: int) -> TreeHead | None:
        rows = self._rows(
            f"SELECT tree_size, root_hash, timestamp_ms, key_id, signature FROM {HEADS_TABLE} "
            "WHERE tree_size = ?",
            [size],
        )
        return _head(rows[0]) if rows else None

    def latest_tree_head(self) -> TreeHead | None:
        rows = self._rows(
            f"SELECT tree_size, root_hash, timestamp_ms, key_id, signature FROM {HEADS_TABLE} "
            "ORDER BY tree_size DESC LIMIT 1"
        )
        return _head(rows[0]) if rows else None

    def add_tree_head(self, head: TreeHead) -> TreeHead:
        """Store `head` unless one of its size exists already; returns the stored one."""
        self._write(
            f"INSERT INTO {HEADS_TABLE} (tree_size, root_hash, timestamp_ms, key_id, signature) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tree_size) DO NOTHING",
            [head.tree_size, head.root_hash, head.timestamp_ms, head.key_id, head.signature],
        )
        stored = self.tree_head(head.tree_size)
        assert stored is not None
        return stored


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return str(value).encode("utf-8")  # a tampered SQLite cell may hold text


def _head(row: tuple[Any, ...]) -> TreeHead:
    size, root, stamp, key_id, signature = row
    return TreeHead(int(size), bytes(root), int(stamp), str(key_id), bytes(signature))


class SQLiteAuditStore(AuditStore):
    dialect = SQLITE
    # The library stores UUIDs as 32 lower-case hex digits; the leaf uses the hyphenated form.
    _id_column = (
        "substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-' || "
        "substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4) || '-' || "
        "substr(originator_id, 21)"
    )

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise NotALedgerStore(f"no store at {path}")
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self._in_snapshot = False

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params).fetchall())

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        # sqlite3 steps through the result as it is iterated: no page size to choose.
        cursor = self._conn.execute(sql, params)
        cursor.arraysize = PAGE
        return iter(cursor)

    def _write(self, sql: str, params: Sequence[Any]) -> None:
        self._conn.execute(sql, params)

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(sql, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        # In WAL mode a read transaction sees the database as of its first read.
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def _table_exists(self, table: str) -> bool:
        rows = self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table])
        return bool(rows)

    def position_of(self, originator_id: UUID, version: int) -> int | None:
        rows = self._rows(
            f"SELECT rowid FROM {SQLITE_EVENTS_TABLE} "
            "WHERE originator_id = ? AND originator_version = ?",
            [originator_id.hex, version],
        )
        return int(rows[0][0]) if rows else None


_slots_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}
_depth: dict[int, int] = {}  # audit stores open per thread
# Connections of closed audit stores, kept for the next one (per connection string): a
# connection per proof or tree-head call would cost a connect and an authentication each,
# and a backend that is still exiting while its successor starts would briefly exceed the
# process's connection bound. At most `keep` are parked; only a slot holder takes one.
_idle: dict[str, list[psycopg.Connection[tuple[Any, ...]]]] = {}


def _take_idle(dsn: str) -> psycopg.Connection[tuple[Any, ...]] | None:
    """A parked connection that still answers. A server that restarted meanwhile (a fast
    shutdown, a restore) ended its backend without the client knowing until its next use,
    so each is pinged first: one round trip, still far cheaper than a new connection."""
    while True:
        with _slots_lock:
            parked = _idle.get(dsn)
            conn = parked.pop() if parked else None
        if conn is None:
            return None
        if conn.closed or conn.broken:
            continue
        try:
            conn.execute(b"SELECT 1")
        except psycopg.Error:
            conn.close()
            continue
        return conn


def _park(dsn: str, conn: psycopg.Connection[tuple[Any, ...]], keep: int) -> bool:
    """Keep an idle, healthy connection for the next store; False: the caller closes it."""
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    with _slots_lock:
        parked = _idle.setdefault(dsn, [])
        if len(parked) >= keep:
            return False
        parked.append(conn)
    return True


def close_idle_audit_connections(dsn: str) -> None:
    """Close the parked connections to one database (a ledger closing)."""
    with _slots_lock:
        parked = _idle.pop(dsn, [])
    for conn in parked:
        conn.close()


def _audit_slot(dsn: str, readers: int) -> Callable[[], None]:
    """Wait for one of this process's audit connections to the database (proof and tree
    head calls each open one), so that many concurrent calls cannot open one connection
    each. `readers // 2` slots (at least one); a thread that holds one opens the one
    nested store it needs (signing the latest head while proving) without waiting, so at
    most `readers` audit connections are open and no thread waits on itself. (No thread
    waits for a slot while holding a lock a slot holder may want: the issuing lock in
    `ledger.api.proofs_api` is only taken inside a store.) Returns the release function."""
    me = threading.get_ident()
    with _slots_lock:
        slots = _slots.setdefault(dsn, threading.BoundedSemaphore(max(1, readers // 2)))
        nested = _depth.get(me, 0) > 0
    if not nested:
        slots.acquire()
    with _slots_lock:
        _depth[me] = _depth.get(me, 0) + 1
    released = False

    def release() -> None:
        nonlocal released
        with _slots_lock:
            if released:
                return
            released = True
            _depth[me] -= 1
            if not _depth[me]:
                del _depth[me]
        if not nested:
            slots.release()

    return release


class PostgresAuditStore(AuditStore):
    dialect = POSTGRES
    _id_column = "originator_id::text"

    def __init__(
        self, dsn: str, *, release: Callable[[], None] | None = None, keep: int = 0
    ) -> None:
        self._dsn = dsn
        self._keep = keep
        conn = _take_idle(dsn) if keep else None
        if conn is None:
            # The URL's connect_timeout, if it gave one, else 10 seconds.
            connect_to = dsn
            if "connect_timeout" not in conninfo_to_dict(dsn):
                connect_to = make_conninfo(dsn, connect_timeout=10)
            conn = psycopg.connect(connect_to, autocommit=True)
        self._conn = conn
        self._release = release
        self._counter = 0
        self._prefetches: list[_Prefetch] = []

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(POSTGRES.sql(sql).encode(), params)
            return list(cursor.fetchall())

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor in binary format: pages of PAGE rows, bytea without hex.
        # A thread fetches the next page while the caller works on this one, so the server
        # produces rows while we hash (the connection serialises the two streams' fetches;
        # both stay inside the one snapshot transaction). Pages are chained in C.
        self._counter += 1
        cursor = self._conn.cursor(name=f"ledger_audit_{self._counter}", binary=True)
        cursor.execute(POSTGRES.sql(sql).encode(), params)
        pages = _Prefetch(partial(cursor.fetchmany, PAGE))
        self._prefetches.append(pages)
        return chain.from_iterable(pages)

    def _write(self, sql: str, params: Sequence[Any]) -> None:
        with self._conn.cursor() as cursor:
            cursor.execute(POSTGRES.sql(sql).encode(), params)

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            cursor.executemany(POSTGRES.sql(sql).encode(), rows)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._conn.transaction():
            self._conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield
            finally:  # stop the page fetchers before their cursors go with the transaction
                while self._prefetches:
                    self._prefetches.pop().close()

    def close(self) -> None:
        try:
            if not (self._keep and _park(self._dsn, self._conn, self._keep)):
                self._conn.close()
        finally:
            if self._release is not None:
                self._release()

    def _table_exists(self, table: str) -> bool:
        rows = self._rows("SELECT to_regclass(?) IS NOT NULL", [table])
        return bool(rows[0][0])

    def position_of(self, originator_id: UUID, version: int) -> int | None:
        rows = self._rows(
            f"SELECT notification_id FROM {POSTGRES_EVENTS_TABLE} "
            "WHERE originator_id = ? AND originator_version = ?",
            [originator_id, version],
        )
        return int(rows[0][0]) if rows else None


class _Prefetch:
    """Iterates the pages `fetch()` returns (until an empty one), fetching the next page in
    a background thread. `close()` stops it early and waits for it."""

    def __init__(self, fetch: Callable[[], list[Any]], depth: int = 2) -> None:
        self._queue: queue.Queue[list[Any] | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fetch,), daemon=True)
        self._thread.start()

    def _run(self, fetch: Callable[[], list[Any]]) -> None:
        try:
            while not self._stop.is_set():
                rows = fetch()
                self._queue.put(rows)
                if not rows:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._queue.put(exc)

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with suppress(queue.Empty):
                self._queue.get(timeout=0.05)
