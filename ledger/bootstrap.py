"""Wiring: turn `Settings` into a ready `CustomerLedger` (the one place that knows which
concrete key store, KEK provider and signer to build)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ledger.application import CustomerLedger
from ledger.config import Settings
from ledger.crypto_shred.kek import LocalKeyFileProvider
from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.keystore import (
    KeyStore,
    KeyStoreLost,
    PostgresKeyStore,
    SQLiteKeyStore,
    open_key_store,
    sqlite_key_store_path,
)
from ledger.projections.wiring import attach_projections
from ledger.signing import LedgerSigner


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _same_cluster(a: str, b: str) -> bool:
    """Same PostgreSQL server (host and port): one WAL, flushed in commit order."""
    left, right = urlsplit(a), urlsplit(b)
    return (left.hostname, left.port or 5432) == (right.hostname, right.port or 5432)


def _where(key_store: KeyStore) -> str:
    """Names the key store in an error without its URL (which may hold a password)."""
    if isinstance(key_store, SQLiteKeyStore):
        return str(key_store.path)
    if isinstance(key_store, PostgresKeyStore):
        return f"table {key_store.keys_table}"
    return type(key_store).__name__


def open_ledger(settings: Settings | None = None) -> CustomerLedger:
    """Open (creating on first use) the ledger the settings describe, then finish any
    erasure the key store has not yet seen before anything can be read.

    Refuses (KeyStoreLost) a key store that holds no key at all beside a log that holds
    events: opening the key store creates it when it is missing, so a lost keys.db would
    otherwise come back empty and every customer would look as if their key were gone."""
    settings = settings or Settings.from_env()
    _private_dir(settings.resolved_data_dir)
    store = settings.store
    if store.kind == "sqlite" and store.sqlite_path is not None:
        _private_dir(store.sqlite_path.parent)
    provider = LocalKeyFileProvider(settings.resolved_kek_file)
    key_file = sqlite_key_store_path(settings.resolved_key_store_url)
    new_key_file = key_file is not None and str(key_file) != ":memory:" and not key_file.exists()
    key_store = open_key_store(settings.resolved_key_store_url, provider)
    if isinstance(key_store, PostgresKeyStore) and store.kind == "postgresql":
        key_store.commits_before_events = _same_cluster(
            settings.resolved_key_store_url, store.postgres_dsn
        )
    keys = KeyRing(key_store, ttl=settings.key_cache_seconds)
    signer = LedgerSigner.load_or_create(settings.resolved_signing_key_file)
    try:
        ledger = CustomerLedger(settings, keys, signer)
    except Exception:
        key_store.close()
        raise
    ledger.keys_with_events = (
        isinstance(key_store, PostgresKeyStore)
        and store.kind == "postgresql"
        and settings.resolved_key_store_url == settings.store_url
    )
    try:
        if key_store.is_empty() and (ledger.recorder.max_notification_id() or 0) > 0:
            raise KeyStoreLost(_where(key_store))
    except Exception:
        ledger.close()
        if new_key_file and key_file is not None:
            # The empty file opening just made would hide the loss from the next run.
            key_file.unlink(missing_ok=True)
        raise
    if store.kind == "sqlite" and store.sqlite_path is not None and store.sqlite_path.exists():
        os.chmod(store.sqlite_path, 0o600)
    try:
        attach_projections(ledger)  # before reshred: its purges must reach the projections
    except Exception:
        ledger.close()
        raise
    ledger.reshred()
    return ledger
