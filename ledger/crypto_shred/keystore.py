"""Per-customer data keys (DEKs), stored only wrapped by a key-encryption key.

Each customer's personal data is encrypted with that customer's own random 256-bit key, so
erasing a customer is destroying one key. The keys live in their own tables (optionally
their own database), apart from the events, so their backups can be kept short.

A destroyed key leaves a tombstone row (key id, when created, when destroyed — no key
bytes) that is never revived: an erased customer can never get a key again, and
`destroyed_ids()` lets a key store restored from an older backup be checked against the log.

Both adapters share one implementation (`SqlKeyStore`); they differ only in connection
handling, placeholders and column types. Nothing here caches keys: a cache would outlive a
destroy in another process (see `ledger.crypto_shred.keyring` for the bounded one).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import unquote, urlsplit
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.config import StoreLocation
from ledger.crypto_shred.category_keys import (
    BundleFormatError,
    CategoryKey,
    new_category_keys,
    pack,
    unpack,
)
from ledger.crypto_shred.kek import KekProvider, KeyUnwrapError
from ledger.sqlite_files import prepare_private_sqlite

DEK_BYTES = 32
_BATCH = 500
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_INT64 = 2**63
# New customers get category keys (`category_keys`). False writes the single-key format
# every customer had before: for tests and benchmarks of ledgers from before the change.
CATEGORY_KEYS = True


# All SQL, written once: {keys}/{marks} are the (validated) table names, `?` the placeholder.
# A row is live (wrapped_key, kek_id set) or a tombstone (destroyed_at set), never both.
_CREATE_KEYS = """CREATE TABLE IF NOT EXISTS {keys} (
    customer_id {id_type} PRIMARY KEY,
    key_id TEXT,
    kek_id TEXT,
    wrapped_key {blob_type},
    created_at {time_type},
    destroyed_at {time_type},
    CHECK ((wrapped_key IS NULL) = (kek_id IS NULL)),
    CHECK ((wrapped_key IS NULL) <> (destroyed_at IS NULL))
)"""
_CREATE_WATERMARKS = """CREATE TABLE IF NOT EXISTS {marks} (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
)"""
_INSERT_KEY = (
    "INSERT INTO {keys} (customer_id, key_id, kek_id, wrapped_key, created_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id) DO NOTHING"
)
_INSERT_NEW_KEY = (
    "INSERT INTO {keys} (customer_id, key_id, kek_id, wrapped_key, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SELECT_CREATED = "SELECT 1 FROM {keys} WHERE customer_id = ? AND key_id = ?"
_SELECT_WRAPPED = "SELECT key_id, kek_id, wrapped_key FROM {keys} WHERE customer_id = ?"
# Conditional on the bytes read, like _REWRAP: a key destroyed meanwhile stays destroyed.
_REPLACE_BUNDLE = (
    "UPDATE {keys} SET kek_id = ?, wrapped_key = ?"
    " WHERE customer_id = ? AND kek_id = ? AND wrapped_key = ?"
)
_SELECT_MANY_WRAPPED = (
    "SELECT customer_id, key_id, kek_id, wrapped_key FROM {keys}"
    " WHERE wrapped_key IS NOT NULL AND customer_id IN ({marks})"
)
_SELECT_MANY_LIVE = (
    "SELECT customer_id FROM {keys} WHERE wrapped_key IS NOT NULL AND customer_id IN ({marks})"
)
_SELECT_RECORD = "SELECT key_id, created_at, destroyed_at FROM {keys} WHERE customer_id = ?"
_SELECT_KEY_ID = "SELECT key_id FROM {keys} WHERE customer_id = ?"
_WIPE_KEY = (
    "UPDATE {keys} SET wrapped_key = NULL, kek_id = NULL, destroyed_at = ?"
    " WHERE customer_id = ? AND destroyed_at IS NULL"
)
_INSERT_TOMBSTONE = (
    "INSERT INTO {keys} (customer_id, destroyed_at) VALUES (?, ?)"
    " ON CONFLICT (customer_id) DO NOTHING"
)
_SELECT_DESTROYED = "SELECT customer_id FROM {keys} WHERE destroyed_at IS NOT NULL"
_SELECT_LIVE = "SELECT customer_id FROM {keys} WHERE wrapped_key IS NOT NULL"
_COUNT_TO_REWRAP = "SELECT COUNT(*) FROM {keys} WHERE wrapped_key IS NOT NULL AND kek_id <> ?"
_SELECT_TO_REWRAP = (
    "SELECT customer_id, key_id, kek_id, wrapped_key FROM {keys}"
    " WHERE wrapped_key IS NOT NULL AND kek_id <> ? ORDER BY customer_id LIMIT ?"
)
# Conditional on the bytes read, so a key destroyed meanwhile is never brought back.
_REWRAP = (
    "UPDATE {keys} SET kek_id = ?, wrapped_key = ?"
    " WHERE customer_id = ? AND kek_id = ? AND wrapped_key = ?"
)
_SELECT_ONE_LIVE = (
    "SELECT customer_id, key_id, kek_id, wrapped_key FROM {keys} WHERE wrapped_key IS NOT NULL"
    " LIMIT 1"
)
_SELECT_KEK_IDS = "SELECT DISTINCT kek_id FROM {keys} WHERE wrapped_key IS NOT NULL"
_SELECT_WATERMARK = "SELECT value FROM {marks} WHERE name = ?"
_UPSERT_WATERMARK = (
    "INSERT INTO {marks} (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


class KeyStoreError(Exception):
    """The key store cannot do what was asked. Messages name customer ids at most."""


class KeyStoreLost(Exception):
    """An integrity failure: the log holds customers but the key store holds no key at all
    (its file or tables were lost and a new, empty one took their place). Reading on would
    show every customer as having lost their key; writing on would mix keys of a new store
    into the old log. Restore the key store."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"the key store {where} holds no data key although the log holds customers: it "
            "was lost or replaced by an empty one; restore it from its backup"
        )


class KeyAlreadyExists(KeyStoreError):
    """A customer already has a key row — live or destroyed. An erased key stays erased:
    re-registering the person creates a new customer with a new key."""

    def __init__(self, customer_id: UUID) -> None:
        self.customer_id = customer_id
        super().__init__(f"customer {customer_id} already has a data key (live or destroyed)")


@dataclass(frozen=True)
class DataKey:
    customer_id: UUID
    key_id: str
    key: bytes = field(repr=False)  # never in a repr, log line or traceback
    # The live category keys (`ledger.crypto_shred.category_keys`); empty for a customer
    # registered before category keys existed, who keeps one key for everything.
    categories: dict[str, CategoryKey] = field(default_factory=dict, repr=False, compare=False)
    # Registered with category keys (even if all of them are destroyed since): its data
    # is sealed per category. False: a single-key customer.
    bundled: bool = False


class KeyStatus(Enum):
    ACTIVE = "active"
    DESTROYED = "destroyed"
    ABSENT = "absent"


@dataclass(frozen=True)
class KeyRecord:
    """What is known about a customer's key without unwrapping it (safe to show anyone)."""

    customer_id: UUID
    key_id: str | None
    status: KeyStatus
    created_at: datetime | None
    destroyed_at: datetime | None


def key_context(customer_id: UUID, key_id: str) -> bytes:
    """Associated data for wrapping: a wrapped key copied to another customer's row (or
    relabelled with another key id) no longer opens."""
    return f"{customer_id}|{key_id}".encode()


class KeyStore(ABC):
    """Where data keys live. Implementations are thread-safe."""

    provider: KekProvider  # wraps the keys; rotate it, then `rewrap_all`

    @abstractmethod
    def create(self, customer_id: UUID) -> DataKey:
        """A new random key for a new customer; KeyAlreadyExists if the customer ever had
        one (even a destroyed one)."""

    @abstractmethod
    def create_many(self, customer_ids: Sequence[UUID]) -> list[DataKey]:
        """New keys for many new customers in one transaction (group commit, imports):
        all or nothing; KeyAlreadyExists names the first id that ever had a key."""

    @abstractmethod
    def get(self, customer_id: UUID) -> DataKey | None:
        """The live key, or None when it was destroyed or never existed."""

    def get_many(self, customer_ids: Sequence[UUID]) -> dict[UUID, DataKey]:
        """The live keys of many customers (absent: destroyed or never existed). Replaying
        the log needs thousands; stores that can read them in one query override this."""
        found = {customer_id: self.get(customer_id) for customer_id in customer_ids}
        return {customer_id: key for customer_id, key in found.items() if key is not None}

    @abstractmethod
    def is_empty(self) -> bool:
        """No key row at all, live or destroyed: a new key store — or, beside a log that
        holds customers, a lost one (`ledger.bootstrap` refuses to open then)."""

    def live_among(self, customer_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these customers have a live key, without unwrapping any (the start-up
        check of a restored key store against the log's erasures)."""
        return set(self.get_many(customer_ids))

    @abstractmethod
    def record(self, customer_id: UUID) -> KeyRecord: ...

    @abstractmethod
    def destroy(self, customer_id: UUID) -> str | None:
        """Wipe the key for good, keeping a tombstone. Idempotent. Returns the key id, or
        None if the customer never had a key (a tombstone is written anyway, so it never
        can get one)."""

    def destroy_categories(self, customer_id: UUID, categories: Sequence[str]) -> dict[str, str]:
        """Remove these category keys from the customer's bundle for good (the rest of the
        customer's keys stay). Idempotent. Returns {category: key id} of the keys removed
        now; empty when none was there (destroyed already, or a single-key customer)."""
        raise KeyStoreError("this key store has no category keys")

    @abstractmethod
    def destroyed_ids(self) -> set[UUID]: ...

    @abstractmethod
    def live_ids(self) -> set[UUID]:
        """Every customer with a live key (no key bytes read: `ledger verify`)."""

    @abstractmethod
    def rewrap_all(self, progress: Callable[[int, int], None] | None = None) -> int:
        """After a KEK rotation: re-wrap every live key under the active KEK, touching
        nothing else. `progress(done, total)` is called after each batch. Returns how many
        keys were re-wrapped."""

    @abstractmethod
    def kek_ids_in_use(self) -> set[str]:
        """KEK ids that still wrap a live key: a KEK not in this set can be retired."""

    @abstractmethod
    def get_watermark(self, name: str) -> int:
        """A small integer kept with the keys (0 if unset). The ledger no longer keeps how
        far it scanned the log for erasures here: a key store restored rows-only would keep
        a watermark past erasures its keys predate (`CustomerLedger.reshred` compares the
        whole log-derived set instead)."""

    @abstractmethod
    def set_watermark(self, name: str, value: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Cursor(Protocol):
    """The DB-API subset used here; satisfied by sqlite3 and psycopg cursors."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...


class SqlKeyStore(KeyStore):
    """All the key store's SQL, written once with `?` placeholders.

    Subclasses supply a transaction (`_transaction`), the placeholder style (`_sql`), the
    column types, and how ids and times are bound and read. Access goes through one
    connection guarded by a lock: key operations are tiny, and one connection keeps SQLite's
    locking simple.
    """

    id_type: ClassVar[str]
    blob_type: ClassVar[str]
    time_type: ClassVar[str]

    def __init__(self, provider: KekProvider, keys_table: str, watermarks_table: str) -> None:
        self.provider = provider
        self.keys_table = keys_table
        self.watermarks_table = watermarks_table
        self._lock = threading.Lock()

    # Dialect hooks --------------------------------------------------------------------------

    @abstractmethod
    def _transaction(self, *, write: bool = True) -> AbstractContextManager[_Cursor]:
        """A cursor on the store's connection, holding the lock throughout. `write=True`
        wraps the block in one transaction; `write=False` promises a single read statement,
        which then runs on its own (autocommit), saving the BEGIN/COMMIT round trips on the
        hot path (`get`)."""

    def _sql(self, template: str) -> str:
        """Fill in the table names (validated identifiers, never input) and types."""
        return template.format(
            keys=self.keys_table,
            marks=self.watermarks_table,
            id_type=self.id_type,
            blob_type=self.blob_type,
            time_type=self.time_type,
        )

    def _bind_id(self, customer_id: UUID) -> object:
        return str(customer_id)

    def _bind_time(self, moment: datetime) -> object:
        return moment

    def _read_time(self, value: object) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value)).astimezone(UTC)

    def _after_destroy(self) -> None:
        """Physical clean-up once a destroy has committed (dialect-specific)."""

    def _schema(self) -> list[str]:
        return [self._sql(_CREATE_KEYS), self._sql(_CREATE_WATERMARKS)]

    def _create_tables(self) -> None:
        with self._transaction() as cur:
            for statement in self._schema():
                cur.execute(statement)

    # KeyStore --------------------------------------------------------------------------------

    def create(self, customer_id: UUID) -> DataKey:
        return self.create_many([customer_id])[0]

    def create_many(self, customer_ids: Sequence[UUID]) -> list[DataKey]:
        """One transaction for the whole batch: one commit (one fsync) instead of one per
        customer, which is what makes importing thousands of rows quick."""
        keys, rows = self._new_keys(customer_ids)
        return self._insert_keys(keys, rows)

    def new_keys(self, customer_ids: Sequence[UUID]) -> tuple[list[DataKey], list[tuple[Any, ...]]]:
        """Fresh keys, and their rows (wrapped under the KEK) for `insert_statement`: for a
        caller that stores them in a transaction of its own on this database (group commit
        writes a batch's keys in the transaction that stores its events)."""
        keys, rows = self._new_keys(customer_ids)
        now = self._bind_time(_now())
        return keys, [(*row, now) for row in rows]

    def insert_statement(self) -> str:
        """The INSERT for `new_keys`' rows; fails on a customer that has a key already."""
        return self._sql(_INSERT_NEW_KEY)

    def _new_keys(
        self, customer_ids: Sequence[UUID]
    ) -> tuple[list[DataKey], list[tuple[object, str, str, bytes]]]:
        keys, rows = [], []
        for customer_id in customer_ids:
            key, key_id = AESGCM.generate_key(256), secrets.token_hex(8)
            # The category keys ride in the same row, wrapped with the customer key in one
            # KEK call: no extra key write per registration (see category_keys).
            categories = new_category_keys() if CATEGORY_KEYS else {}
            payload = pack(key, categories) if CATEGORY_KEYS else key
            kek_id, wrapped = self.provider.wrap(payload, key_context(customer_id, key_id))
            keys.append(
                DataKey(
                    customer_id=customer_id,
                    key_id=key_id,
                    key=key,
                    categories=categories,
                    bundled=CATEGORY_KEYS,
                )
            )
            rows.append((self._bind_id(customer_id), key_id, kek_id, wrapped))
        return keys, rows

    def _insert_keys(
        self, keys: list[DataKey], rows: list[tuple[object, str, str, bytes]]
    ) -> list[DataKey]:
        now = self._bind_time(_now())
        with self._transaction() as cur:
            self._before_create(cur)
            if len(rows) == 1:
                cur.execute(self._sql(_INSERT_KEY), (*rows[0], now))
                if cur.rowcount != 1:
                    raise KeyAlreadyExists(_as_uuid(rows[0][0]))
                return keys
            # One batched statement (pipelined on PostgreSQL); ON CONFLICT DO NOTHING makes
            # an existing key show as a missing row count, then found and named.
            cur.executemany(self._sql(_INSERT_KEY), [(*row, now) for row in rows])
            if cur.rowcount != len(rows):
                for row in rows:
                    cur.execute(self._sql(_SELECT_CREATED), (row[0], row[1]))
                    if cur.fetchone() is None:
                        raise KeyAlreadyExists(_as_uuid(row[0]))
        return keys

    def _before_create(self, cur: _Cursor) -> None:
        """Per-store set-up of a key-creating transaction (see PostgresKeyStore)."""

    def get(self, customer_id: UUID) -> DataKey | None:
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(_SELECT_WRAPPED),
                (self._bind_id(customer_id),),
            )
            row = cur.fetchone()
        if row is None or row[2] is None:
            return None
        key_id, kek_id, wrapped = str(row[0]), str(row[1]), bytes(row[2])
        payload = self.provider.unwrap(kek_id, wrapped, key_context(customer_id, key_id))
        return _data_key(customer_id, key_id, payload)

    def get_many(self, customer_ids: Sequence[UUID]) -> dict[UUID, DataKey]:
        found: dict[UUID, DataKey] = {}
        unique = list(dict.fromkeys(customer_ids))
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            template = _SELECT_MANY_WRAPPED.replace("{marks}", ",".join("?" * len(chunk)))
            with self._transaction(write=False) as cur:
                cur.execute(self._sql(template), tuple(self._bind_id(c) for c in chunk))
                rows = cur.fetchall()
            for raw_id, key_id, kek_id, wrapped in rows:
                customer_id = _as_uuid(raw_id)
                payload = self.provider.unwrap(
                    str(kek_id), bytes(wrapped), key_context(customer_id, str(key_id))
                )
                found[customer_id] = _data_key(customer_id, str(key_id), payload)
        return found

    def is_empty(self) -> bool:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT 1 FROM {keys} LIMIT 1"))
            return cur.fetchone() is None

    def live_among(self, customer_ids: Sequence[UUID]) -> set[UUID]:
        live: set[UUID] = set()
        unique = list(dict.fromkeys(customer_ids))
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            template = _SELECT_MANY_LIVE.replace("{marks}", ",".join("?" * len(chunk)))
            with self._transaction(write=False) as cur:
                cur.execute(self._sql(template), tuple(self._bind_id(c) for c in chunk))
                live.update(_as_uuid(row[0]) for row in cur.fetchall())
        return live

    def record(self, customer_id: UUID) -> KeyRecord:
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(_SELECT_RECORD),
                (self._bind_id(customer_id),),
            )
            row = cur.fetchone()
        if row is None:
            return KeyRecord(customer_id, None, KeyStatus.ABSENT, None, None)
        destroyed_at = self._read_time(row[2])
        return KeyRecord(
            customer_id=customer_id,
            key_id=None if row[0] is None else str(row[0]),
            status=KeyStatus.ACTIVE if destroyed_at is None else KeyStatus.DESTROYED,
            created_at=self._read_time(row[1]),
            destroyed_at=destroyed_at,
        )

    def destroy(self, customer_id: UUID) -> str | None:
        bound, now = self._bind_id(customer_id), self._bind_time(_now())
        with self._transaction() as cur:
            cur.execute(
                self._sql(_WIPE_KEY),
                (now, bound),
            )
            cur.execute(
                self._sql(_INSERT_TOMBSTONE),
                (bound, now),
            )
            cur.execute(self._sql(_SELECT_KEY_ID), (bound,))
            row = cur.fetchone()
        # Also on a repeated destroy, so a retry after a failed clean-up completes it.
        self._after_destroy()
        return None if row is None or row[0] is None else str(row[0])

    def destroy_categories(self, customer_id: UUID, categories: Sequence[str]) -> dict[str, str]:
        """Re-wrap the bundle without these keys and overwrite the row, in one transaction
        conditional on the bytes read (a concurrent destroy of the whole key wins)."""
        bound = self._bind_id(customer_id)
        removed: dict[str, str] = {}
        with self._transaction() as cur:
            cur.execute(self._sql(_SELECT_WRAPPED), (bound,))
            row = cur.fetchone()
            if row is None or row[2] is None:
                return removed
            key_id, kek_id, wrapped = str(row[0]), str(row[1]), bytes(row[2])
            context = key_context(customer_id, key_id)
            key = _data_key(customer_id, key_id, self.provider.unwrap(kek_id, wrapped, context))
            kept = dict(key.categories)
            for category in categories:
                gone = kept.pop(category, None)
                if gone is not None:
                    removed[category] = gone.key_id
            if not removed:
                return removed
            new_kek_id, rewrapped = self.provider.wrap(pack(key.key, kept), context)
            cur.execute(self._sql(_REPLACE_BUNDLE), (new_kek_id, rewrapped, bound, kek_id, wrapped))
            if cur.rowcount != 1:
                raise KeyStoreError(f"the key of customer {customer_id} changed meanwhile")
        self._after_destroy()
        return removed

    def destroyed_ids(self) -> set[UUID]:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(_SELECT_DESTROYED))
            rows = cur.fetchall()
        return {_as_uuid(row[0]) for row in rows}

    def live_ids(self) -> set[UUID]:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(_SELECT_LIVE))
            rows = cur.fetchall()
        return {_as_uuid(row[0]) for row in rows}

    def rewrap_all(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Batches of `_BATCH` rows, one transaction each, so readers are never blocked for
        long and an interrupted run can simply be started again (done rows are skipped).

        Each update is conditional on the row still holding the bytes that were read, so a
        key destroyed meanwhile (by another process) is never brought back.
        """
        target = self.provider.active_kek_id()
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(_COUNT_TO_REWRAP),
                (target,),
            )
            total = int(cur.fetchone()[0])
        done = 0
        if progress is not None:
            progress(done, total)
        while True:
            # Re-read the target each batch: if the KEK is rotated again mid-run, rows
            # wrapped under the intermediate KEK are picked up again and the loop converges.
            target = self.provider.active_kek_id()
            with self._transaction() as cur:
                cur.execute(
                    self._sql(_SELECT_TO_REWRAP),
                    (target, _BATCH),
                )
                rows = cur.fetchall()
                if not rows:
                    break
                for raw_id, key_id, kek_id, wrapped in rows:
                    customer_id = _as_uuid(raw_id)
                    context = key_context(customer_id, str(key_id))
                    key = self.provider.unwrap(str(kek_id), bytes(wrapped), context)
                    new_kek_id, rewrapped = self.provider.wrap(key, context)
                    cur.execute(
                        self._sql(_REWRAP),
                        (new_kek_id, rewrapped, raw_id, kek_id, wrapped),
                    )
                    done += cur.rowcount
            if progress is not None:
                progress(done, max(total, done))
        return done

    def check_provider(self) -> None:
        """Unwrap one live data key (if any): KeyUnwrapError when the provider is not the
        one this store's keys were wrapped under. One short query."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(_SELECT_ONE_LIVE))
            row = cur.fetchone()
        if row is None:
            return
        customer_id, key_id = _as_uuid(row[0]), str(row[1])
        self.provider.unwrap(str(row[2]), bytes(row[3]), key_context(customer_id, key_id))

    def kek_ids_in_use(self) -> set[str]:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(_SELECT_KEK_IDS))
            rows = cur.fetchall()
        return {str(row[0]) for row in rows}

    def get_watermark(self, name: str) -> int:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(_SELECT_WATERMARK), (name,))
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def set_watermark(self, name: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise ValueError("a watermark is a 64-bit integer")
        with self._transaction() as cur:
            cur.execute(
                self._sql(_UPSERT_WATERMARK),
                (name, value),
            )


def _now() -> datetime:
    return datetime.now(UTC)


def _data_key(customer_id: UUID, key_id: str, payload: bytes) -> DataKey:
    """A plain 32-byte key (a customer from before category keys) or a bundle."""
    try:
        key, categories = unpack(payload)
    except BundleFormatError:
        raise KeyUnwrapError(
            f"the data key of customer {customer_id} has the wrong length"
        ) from None
    if len(key) != DEK_BYTES:
        raise KeyUnwrapError(f"the data key of customer {customer_id} has the wrong length")
    return DataKey(
        customer_id=customer_id,
        key_id=key_id,
        key=key,
        categories=categories,
        bundled=len(payload) != DEK_BYTES,
    )


def _as_uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _identifier(name: str, what: str) -> str:
    """Table and schema names are formatted into SQL, so only plain identifiers pass."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} must be a plain SQL identifier (letters, digits, _)")
    return name


class SQLiteKeyStore(SqlKeyStore):
    """The embedded key store: its own SQLite file, next to (not inside) the event store.

    Destroyed keys must not survive in the file, so the connection runs with
    `secure_delete=ON` (freed cells and pages are overwritten with zeros) and a rollback
    journal (`journal_mode=DELETE`) rather than WAL, whose -wal file would keep old pages
    around until a checkpoint. The file and a new directory are created owner-only, and
    SQLite gives its journal the database file's permissions. Pass ":memory:" for tests.
    """

    id_type = "TEXT"
    blob_type = "BLOB"
    time_type = "TEXT"

    def __init__(self, path: Path, provider: KekProvider) -> None:
        in_memory = str(path) == ":memory:"
        if not in_memory:
            # Create the file ourselves: SQLite would create it 0644 (less the umask).
            prepare_private_sqlite(path)
        self.path = path
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            self._configure(in_memory)
            super().__init__(provider, "ledger_data_keys", "ledger_key_watermarks")
            self._create_tables()
        except BaseException:
            self._conn.close()
            raise

    def _bind_time(self, moment: datetime) -> object:
        return moment.isoformat()  # explicit: sqlite3's implicit datetime adapter is deprecated

    def _configure(self, in_memory: bool) -> None:
        (secure,) = self._conn.execute("PRAGMA secure_delete = ON").fetchone()
        if int(secure) != 1:
            raise KeyStoreError("this SQLite build cannot enable secure_delete")
        (mode,) = self._conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        if not in_memory and str(mode).lower() != "delete":
            raise KeyStoreError(f"the key store cannot use a rollback journal (got {mode})")
        self._conn.execute("PRAGMA temp_store = MEMORY")  # no temp files holding rows
        self._conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[_Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                if not write:
                    yield cur
                    return
                # IMMEDIATE takes the write lock up front: no lock upgrade, so no deadlock
                # between two processes that both read and then write.
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

    def __repr__(self) -> str:
        return f"SQLiteKeyStore(path={str(self.path)!r})"


class PostgresKeyStore(SqlKeyStore):
    """The key store in PostgreSQL: its own tables, in the event store's database or another.

    After every destroy the keys table is VACUUMed (from the autocommit connection, since
    VACUUM cannot run inside a transaction). PostgreSQL never overwrites a row in place: the
    UPDATE that wipes a wrapped key leaves the old row version, key bytes included, as a
    dead tuple in the table file until vacuum removes it; autovacuum might take hours.

    What VACUUM cannot do: it makes the dead tuple's space free but does not zero it (the
    bytes can linger in a page's free space until reused), and the write-ahead log, WAL
    archives and base backups keep the old row as well. Those leftovers are still wrapped,
    so they are harmless once the KEK that wrapped them is gone: rotate the KEK, run
    `rewrap_all`, and retire the old KEK on a schedule to shred them everywhere.
    """

    id_type = "UUID"
    blob_type = "BYTEA"
    time_type = "TIMESTAMPTZ"

    def __init__(
        self,
        dsn: str,
        provider: KekProvider,
        *,
        schema: str | None = None,
        table_prefix: str = "ledger",
    ) -> None:
        prefix = _identifier(table_prefix, "table_prefix")
        self.schema = None if schema is None else _identifier(schema, "schema")
        self.commits_before_events = False
        self._vacuum_conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._vacuum_lock = threading.Lock()
        self._dsn = dsn
        self._closed = False
        self._conn = self._connect()
        try:
            super().__init__(
                provider,
                self._qualify(f"{prefix}_data_keys"),
                self._qualify(f"{prefix}_key_watermarks"),
            )
            self._create_tables()
        except BaseException:
            self._conn.close()
            raise

    def _qualify(self, table: str) -> str:
        return f'"{self.schema}"."{table}"' if self.schema else f'"{table}"'

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        # Autocommit: transactions are explicit (`conn.transaction()`), and VACUUM can run
        # on the same connection between them.
        return psycopg.connect(self._dsn, autocommit=True)

    def _sql(self, template: str) -> str:
        return super()._sql(template).replace("?", "%s")

    def _bind_id(self, customer_id: UUID) -> object:
        return customer_id

    def _schema(self) -> list[str]:
        # Several servers may start at once; CREATE ... IF NOT EXISTS is not race-free in
        # PostgreSQL, so serialise the DDL on an advisory lock named after the table.
        statements = [f"SELECT pg_advisory_xact_lock(hashtext('{self.keys_table}'))"]
        if self.schema is not None:
            statements.append(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        return statements + super()._schema()

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[_Cursor]:
        with self._lock:
            self._reconnect_if_broken()
            if not write:
                with self._conn.cursor() as cur:
                    yield cur
                return
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur

    def _insert_keys(
        self, keys: list[DataKey], rows: list[tuple[object, str, str, bytes]]
    ) -> list[DataKey]:
        """In pipeline mode: the whole transaction in one round trip (group commit creates
        a batch's keys on every batch). A key that exists already fails the statement and
        so the transaction; the slower path then finds and names it."""
        now = self._bind_time(_now())
        try:
            with self._lock:
                self._reconnect_if_broken()
                with self._conn.pipeline(), self._conn.transaction(), self._conn.cursor() as cur:
                    self._before_create(cur)
                    cur.executemany(self._sql(_INSERT_NEW_KEY), [(*row, now) for row in rows])
        except psycopg.errors.UniqueViolation:
            return super()._insert_keys(keys, rows)
        return keys

    def _before_create(self, cur: _Cursor) -> None:
        """When the events live in the same PostgreSQL cluster, a new key's commit need not
        wait for its own WAL flush: the events that use the key are committed after it, in
        the same cluster, synchronously, and WAL is flushed in order — so once the events
        are durable so is the key (and if they fail, the key was an orphan anyway). Saves
        one fsync per group-commit batch. Set by `ledger.bootstrap`."""
        if self.commits_before_events:
            cur.execute("SET LOCAL synchronous_commit TO OFF")

    def _after_destroy(self) -> None:
        """VACUUM the keys table so the dead row version holding the wiped wrapped key is
        removed now, not whenever autovacuum gets to it (see the class docstring for what
        VACUUM does and does not guarantee).

        On a connection of its own (autocommit: VACUUM cannot run in a transaction), so
        other threads keep reading keys meanwhile; kept open between erasures (connecting
        cost more than the VACUUM of a small table). Errors propagate: `destroy` is
        idempotent, so a retry finishes the clean-up.
        """
        with self._vacuum_lock:
            if self._closed:
                raise KeyStoreError("the key store is closed")
            conn = self._vacuum_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._vacuum_conn = psycopg.connect(self._dsn, autocommit=True)
            conn.execute(f"VACUUM {self.keys_table}")

    def _reconnect_if_broken(self) -> None:
        if self._closed:
            raise KeyStoreError("the key store is closed")
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()
        with self._vacuum_lock:
            if self._vacuum_conn is not None:
                self._vacuum_conn.close()

    def __repr__(self) -> str:
        return f"PostgresKeyStore(keys_table={self.keys_table!r})"


def sqlite_key_store_path(url: str) -> Path | None:
    """The file of a SQLite key store URL (None for another scheme)."""
    if urlsplit(url).scheme != "sqlite":
        return None
    raw = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    raw = raw.split("?", 1)[0]
    if not raw:
        raise ValueError("a SQLite key store URL looks like sqlite:///path/to/keys.db")
    return Path(unquote(raw))


def open_key_store(url: str, provider: KekProvider) -> KeyStore:
    """Open the key store named by a URL: `sqlite:///relative/path.db`,
    `sqlite:////absolute/path.db` (SQLAlchemy's form, as for the event store) or
    `postgresql://user@host:port/dbname`."""
    scheme = urlsplit(url).scheme
    path = sqlite_key_store_path(url)
    if path is not None:
        return SQLiteKeyStore(path, provider)
    if scheme in ("postgresql", "postgres"):
        # The same connection string as every other connection (the URL's parameters).
        return PostgresKeyStore(
            StoreLocation.parse(url, setting="LEDGER_KEY_STORE").postgres_dsn, provider
        )
    # The URL itself is not echoed: it may hold a password.
    raise ValueError(
        f"unsupported key store URL scheme {scheme!r}; use sqlite:/// or postgresql://"
    )
