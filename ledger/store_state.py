"""Whether a ledger exists at the configured store, whether it already holds data, and
which local secret files it needs.

A ledger's secrets (the KEK ring, the signing key, the index key, the token key) are created
only together with a new ledger: one whose event store holds no events and whose key store
holds no keys. For a ledger that already holds data a missing secret file means the
settings point at the wrong place (another folder, another LEDGER_DATA_DIR), and a new
secret would split the ledger into two sets of keys; so nothing is created and the error
names each missing file and the setting that locates it.

Costs one extra connection and two short queries per store when a process opens the
ledger (once per process), none per call.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ledger.config import ConfigError, Settings, StoreLocation

SQLITE_EVENTS_TABLE = "stored_events"  # as `ledger.audit.storage` (no import: no cycle)
POSTGRES_EVENTS_TABLE = "ledger_events"
KEYS_TABLE = "ledger_data_keys"
HEADS_TABLE = "ledger_tree_heads"
# A customer's first event: a log holding one needs data keys (a log holding only other
# events, e.g. a data policy applied before the first customer, needs none yet).
REGISTERED_TOPIC = "ledger.domain.customer:Customer.Registered"
_ANY_CUSTOMER = "SELECT 1 FROM {table} WHERE topic = {ph} LIMIT 1"
_LATEST_SIGNER = f"SELECT key_id FROM {HEADS_TABLE} ORDER BY tree_size DESC LIMIT 1"  # noqa: S608


class NoLedgerError(ConfigError):
    """A command that only reads (or changes existing customers) was pointed at a store
    that holds no ledger: most likely a mistyped path or database name."""


class MissingSecretError(ConfigError):
    """A secret file of a ledger that already holds data is not where the settings say."""


@dataclass(frozen=True)
class Secret:
    what: str
    path: Path
    setting: str


@dataclass(frozen=True)
class StoreState:
    exists: bool  # SQLite: the file is there; PostgreSQL: the events table is
    holds_data: bool  # events in the event store, or keys in the key store
    signer_key_id: str | None = None  # the key that signed the latest tree head
    # Customers in the event store (a lost key store shows here: they need data keys).
    holds_events: bool = False


def describe(store: StoreLocation) -> str:
    """The store, named without its password."""
    if store.kind == "sqlite":
        return str(store.sqlite_path)
    return f"postgresql database {store.dbname} on {store.host}:{store.port}"


def secrets_of(settings: Settings) -> list[Secret]:
    return [
        Secret("key-encryption keys", settings.resolved_kek_file, "LEDGER_KEK_FILE"),
        Secret("signing key", settings.resolved_signing_key_file, "LEDGER_SIGNING_KEY_FILE"),
        Secret("index key", settings.resolved_index_key_file, "LEDGER_INDEX_KEY_FILE"),
        Secret("API token key", settings.resolved_token_key_file, "LEDGER_TOKEN_KEY_FILE"),
    ]


def data_dir_setting(settings: Settings) -> str:
    if settings.data_dir is not None:
        return "LEDGER_DATA_DIR"
    if settings.store.kind == "sqlite":
        return "LEDGER_DATA_DIR (default: the SQLite store's folder)"
    return "LEDGER_DATA_DIR (default: $XDG_DATA_HOME/ledger/HOST_PORT_DBNAME)"


def missing_secret_error(settings: Settings, missing: list[Secret]) -> MissingSecretError:
    files = "; ".join(f"{s.what} {s.path} (set {s.setting})" for s in missing)
    return MissingSecretError(
        f"{describe(settings.store)} already holds a ledger, but its secret file(s) are "
        f"missing: {files}; point {data_dir_setting(settings)} or those settings at the "
        "ledger's own files. Nothing was created."
    )


def require_secrets(settings: Settings, secrets: list[Secret]) -> None:
    missing = [s for s in secrets if not s.path.exists()]
    if missing:
        raise missing_secret_error(settings, missing)


def require_ledger(settings: Settings) -> StoreState:
    """The store's state; NoLedgerError when there is no ledger there."""
    state = probe(settings)
    if not state.exists:
        raise NoLedgerError(
            f"no ledger at {describe(settings.store)} (LEDGER_STORE / --store); "
            "`ledger init` (or register, import, serve) creates a new one"
        )
    return state


def probe(settings: Settings) -> StoreState:
    store = settings.store
    if store.kind == "sqlite":
        assert store.sqlite_path is not None
        events = _sqlite_probe(store.sqlite_path, SQLITE_EVENTS_TABLE, signer=True)
    else:
        events = _postgres_probe(store.postgres_dsn, POSTGRES_EVENTS_TABLE, signer=True)
    if events.holds_data:
        return events
    keys_store = StoreLocation.parse(settings.resolved_key_store_url, setting="LEDGER_KEY_STORE")
    if keys_store.kind == "sqlite":
        assert keys_store.sqlite_path is not None
        keys = _sqlite_probe(keys_store.sqlite_path, KEYS_TABLE)
    else:
        keys = _postgres_probe(keys_store.postgres_dsn, KEYS_TABLE)
    return StoreState(exists=events.exists, holds_data=keys.holds_data)


def _sqlite_probe(path: Path, table: str, *, signer: bool = False) -> StoreState:
    """Whether the file exists and `table` has a row; opens nothing that is not there."""
    if not path.is_file():
        return StoreState(exists=False, holds_data=False)
    conn = sqlite3.connect(path, timeout=10)
    try:

        def has_table(name: str) -> bool:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return conn.execute(query, (name,)).fetchone() is not None

        if not has_table(table):
            return StoreState(exists=True, holds_data=False)
        found = conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
        head = (
            conn.execute(_LATEST_SIGNER).fetchone() if signer and has_table(HEADS_TABLE) else None
        )
        customers = (
            signer
            and found is not None
            and conn.execute(
                _ANY_CUSTOMER.format(table=table, ph="?"), (REGISTERED_TOPIC,)
            ).fetchone()
            is not None
        )
        return StoreState(
            True, found is not None, None if head is None else str(head[0]), bool(customers)
        )
    finally:
        conn.close()


def _postgres_probe(dsn: str, table: str, *, signer: bool = False) -> StoreState:
    """Whether `table` exists and has a row."""
    with psycopg.connect(dsn, autocommit=True) as conn:

        def has_table(name: str) -> bool:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
            return row is not None and bool(row[0])

        if not has_table(table):
            return StoreState(exists=False, holds_data=False)
        found = conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
        head = (
            conn.execute(_LATEST_SIGNER).fetchone() if signer and has_table(HEADS_TABLE) else None
        )
        customers = (
            signer
            and found is not None
            and conn.execute(
                _ANY_CUSTOMER.format(table=table, ph="%s"), (REGISTERED_TOPIC,)
            ).fetchone()
            is not None
        )
        return StoreState(
            True, found is not None, None if head is None else str(head[0]), bool(customers)
        )
