"""A short-lived in-memory cache in front of the key store.

Unwrapping a data key costs a round trip, and replaying one customer touches it once per
event. Keys are cached in memory only (never on disk) for `ttl` seconds, and dropped at
once when this process erases the customer. Another process that erases a customer is seen
here within `ttl` at most; set LEDGER_KEY_CACHE_SECONDS=0 where that window matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.crypto_shred.keystore import DataKey, KeyRecord, KeyStore, SqlKeyStore


@dataclass(frozen=True)
class PendingKeys:
    """New data keys not stored yet: their rows go into the transaction that stores the
    first events sealed with them (`statement` with each of `rows`), so a key and its
    events commit together or not at all. Until then only this process can see them."""

    keys: list[DataKey]
    rows: list[tuple[Any, ...]]
    statement: str


class KeyRing:
    def __init__(self, store: KeyStore, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[UUID, tuple[float, DataKey]] = {}
        self._pending: dict[UUID, DataKey] = {}
        self._lock = threading.Lock()

    def create(self, customer_id: UUID) -> DataKey:
        key = self.store.create(customer_id)
        self._remember(key)
        return key

    def create_many(self, customer_ids: Sequence[UUID]) -> list[DataKey]:
        keys = self.store.create_many(customer_ids)
        for key in keys:
            self._remember(key)
        return keys

    def prepare(self, customer_ids: Sequence[UUID]) -> PendingKeys:
        """New keys to store with their events (see `PendingKeys`); visible to `get` in this
        process (the events and projection rows are sealed with them before the commit)
        until `settle`. Only for a key store in an SQL database the caller writes to."""
        store = self.store
        if not isinstance(store, SqlKeyStore):
            raise TypeError("keys are stored with their events only in an SQL key store")
        keys, rows = store.new_keys(customer_ids)
        with self._lock:
            for key in keys:
                self._pending[key.customer_id] = key
        return PendingKeys(keys, rows, store.insert_statement())

    def settle(self, pending: PendingKeys, *, stored: bool) -> None:
        """After the transaction that held the keys' rows: committed keys join the cache,
        keys of a failed transaction are forgotten (they were never stored)."""
        with self._lock:
            for key in pending.keys:
                self._pending.pop(key.customer_id, None)
        if stored:
            for key in pending.keys:
                self._remember(key)

    def get(self, customer_id: UUID) -> DataKey | None:
        with self._lock:
            pending = self._pending.get(customer_id)
        if pending is not None:
            return pending
        if self.ttl > 0:
            with self._lock:
                hit = self._cache.get(customer_id)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        key = self.store.get(customer_id)
        if key is not None:
            self._remember(key)
        return key

    def prefetch(self, customer_ids: Sequence[UUID]) -> None:
        """Load the keys of many customers into the cache in one round trip (replays,
        rebuilds). Does nothing when caching is off (`ttl` 0)."""
        if self.ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            missing = [
                c for c in customer_ids if (hit := self._cache.get(c)) is None or hit[0] <= now
            ]
        for key in self.store.get_many(missing).values():
            self._remember(key)

    def record(self, customer_id: UUID) -> KeyRecord:
        return self.store.record(customer_id)

    def destroy(self, customer_id: UUID) -> str | None:
        """Forget first, so no reader in this process can use the key once it is gone."""
        self.forget(customer_id)
        try:
            return self.store.destroy(customer_id)
        finally:
            self.forget(customer_id)

    def forget(self, customer_id: UUID) -> None:
        with self._lock:
            self._cache.pop(customer_id, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def _remember(self, key: DataKey) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key.customer_id] = (time.monotonic() + self.ttl, key)
