"""The one door to data keys: a short-lived in-memory cache in front of the key store,
which answers for erased customers from the log, never from the key store.

Unwrapping a data key costs a round trip, and replaying one customer touches it once per
event. Keys are cached in memory only (never on disk) for `ttl` seconds, and dropped at
once when this process erases the customer. Another process that erases a customer is seen
here within `ttl` at most; set LEDGER_KEY_CACHE_SECONDS=0 where that window matters.

Whether a customer is erased is the log's answer (`ErasureRegistry`): `get` returns None
for a customer the log says is erased without touching the key store, whatever it holds
(a copy restored from before the erasure holds the key again). A key that is gone although
the log records no erasure raises `KeyMissing`: lost, not erased. Creation paths, which
must tell "no key yet" from "key lost", ask `stored_key` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from ledger.crypto_shred.erasures import ErasureRegistry
from ledger.crypto_shred.keystore import DataKey, KeyRecord, KeyStatus, KeyStore, SqlKeyStore

log = logging.getLogger("ledger")


class KeyMissing(Exception):
    """An integrity failure: the key store has no live key for a customer whose erasure the
    log does not record (the key row was deleted, destroyed outside an erasure, or the key
    store was lost or restored from an incomplete copy). Names the customer id only."""

    def __init__(self, customer_id: UUID) -> None:
        self.customer_id = customer_id
        super().__init__(
            f"the data key of customer {customer_id} is missing from the key store, but the "
            "log records no erasure of that customer: the key store was damaged, or restored "
            "from an incomplete copy"
        )


@dataclass(frozen=True)
class PendingKeys:
    """New data keys not stored yet: their rows go into the transaction that stores the
    first events sealed with them (`statement` with each of `rows`), so a key and its
    events commit together or not at all. Until then only this process can see them."""

    keys: list[DataKey]
    rows: list[tuple[Any, ...]]
    statement: str


class KeyRing:
    def __init__(
        self,
        store: KeyStore,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        erasures: ErasureRegistry | None = None,
    ) -> None:
        self.store = store
        # Replaced by the ledger's registry, read from its log (`CustomerLedger`).
        self.erasures = erasures or ErasureRegistry()
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
        """The customer's live key; None when the log says the customer is erased (then the
        key store is not asked). KeyMissing when the key is gone without an erasure. The
        key's category keys leave out every category the log says is destroyed, whatever
        the key store holds (a restored copy, a re-inserted row)."""
        key = self._get(customer_id)
        if key is None or not key.categories:
            return key
        destroyed = self.erasures.erased_categories(customer_id)
        if not destroyed or destroyed.isdisjoint(key.categories):
            return key
        kept = {c: k for c, k in key.categories.items() if c not in destroyed}
        return replace(key, categories=kept)

    def _get(self, customer_id: UUID) -> DataKey | None:
        with self._lock:
            pending = self._pending.get(customer_id)
        if pending is not None:
            return pending
        erasures = self.erasures
        if erasures.is_erased(customer_id):
            return None
        if self.ttl > 0:
            with self._lock:
                hit = self._cache.get(customer_id)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        # Going to the key store: read the log's new erasures first, so a key fetched from
        # a store restored from before an erasure is never used (one query, see erasures).
        erasures.refresh()
        if erasures.is_erased(customer_id):
            return None
        key = self.store.get(customer_id)
        if key is None:
            # An erasure logs its event before it destroys the key: one committed since the
            # refresh above is in the log now.
            erasures.refresh()
            if erasures.is_erased(customer_id):
                return None
            raise KeyMissing(customer_id)
        self._remember(key)
        return key

    def stored_key(self, customer_id: UUID) -> DataKey | None:
        """For creation paths only (registration under a reserved id): the live key this
        process prepared or the store holds, None when there is none *yet* (or it is
        destroyed: creating one then fails). Never used to decrypt."""
        with self._lock:
            pending = self._pending.get(customer_id)
        return pending if pending is not None else self.store.get(customer_id)

    def prefetch(self, customer_ids: Sequence[UUID]) -> None:
        """Load the keys of many customers into the cache in one round trip (replays,
        rebuilds), leaving out those the log says are erased. A key missing without an
        erasure is not an error here: `get` raises it for the customer that needs it. Does
        nothing when caching is off (`ttl` 0)."""
        if self.ttl <= 0:
            return
        erasures = self.erasures
        erasures.refresh()
        now = time.monotonic()
        with self._lock:
            missing = [
                c
                for c in customer_ids
                if not erasures.is_erased(c)
                and ((hit := self._cache.get(c)) is None or hit[0] <= now)
            ]
        if not missing:
            return
        for key in self.store.get_many(missing).values():
            self._remember(key)

    def record(self, customer_id: UUID) -> KeyRecord:
        """What the key store holds about the key; a live key of a customer the log says is
        erased (a restored key store) is destroyed again first, so the record never says
        "active" for an erased customer."""
        record = self.store.record(customer_id)
        if record.status is KeyStatus.ACTIVE and self.erasures.is_erased(customer_id):
            log.warning("re-shredded key of erased customer %s (restored key store?)", customer_id)
            self.destroy(customer_id)
            record = self.store.record(customer_id)
        return record

    def destroy(self, customer_id: UUID) -> str | None:
        """Forget first, so no reader in this process can use the key once it is gone."""
        self.forget(customer_id)
        try:
            return self.store.destroy(customer_id)
        finally:
            self.forget(customer_id)

    def destroy_categories(self, customer_id: UUID, categories: list[str]) -> dict[str, str]:
        """Forget first (as `destroy`); the caller has told the registry already."""
        self.forget(customer_id)
        try:
            return self.store.destroy_categories(customer_id, categories)
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
