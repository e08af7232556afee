"""Prepared duplicate-detection records of recently compared customers, kept in memory
for a few seconds.

A real-time duplicate check (one per registration under the `warn` and `refuse`
policies) compares the new profile with every customer sharing a blocking key: up to
hundreds when a postcode or a name is common. Opening each one's sealed row (AES-GCM,
JSON) and preparing it (normalising names, phones, addresses) cost far more than the
comparison itself, and concurrent registrations in the same neighbourhood share most of
their candidates. So prepared records are kept, keyed by customer and version (a change
makes a new version, so a stale entry is never matched), for as long as the customer's
decryption key may be cached anyway (`LEDGER_KEY_CACHE_SECONDS`), and dropped at once on
erasure (the ledger's erasure purgers). Never on disk.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from uuid import UUID

from ledger.projections.dedup import Record

DEFAULT_MAX_ENTRIES = 20_000


class RecordCache:
    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, float, Record]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, customer_id: str, version: int) -> Record | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(customer_id)
            if entry is None:
                return None
            stored_version, expires, record = entry
            if stored_version != version or expires <= time.monotonic():
                del self._entries[customer_id]
                return None
            return record

    def put(self, customer_id: str, version: int, record: Record) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[customer_id] = (version, time.monotonic() + self.ttl, record)
            self._entries.move_to_end(customer_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, customer_id: UUID | str) -> None:
        """The erasure purger: the customer's record leaves memory now."""
        with self._lock:
            self._entries.pop(str(customer_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
