"""Who is erased, as the log says: the set of customers with a `Customer.Erased` event.

The key store alone cannot decide that: a copy restored from before an erasure holds the
erased customer's key again, and a key lost without an erasure looks exactly like an
erased one. So the key ring asks this registry first and never fetches, let alone uses, the
key of a customer the log says is erased; and a key that is gone although the log records
no erasure is an integrity failure (`KeyMissing`), not an erasure.

Loaded from the log when the ledger opens (one query over a partial index that holds only
the Erased events, see `ledger.audit.recorders`), told at once of this process's own
erasures, and refreshed from the log whenever the key ring has to go to the key store (a
cache miss): one query reading only the Erased events after the last position scanned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.domain.customer import Customer

ERASED_TOPIC = get_topic(Customer.Erased)
CATEGORIES_ERASED_TOPIC = get_topic(Customer.CategoriesErased)

# Erased and CategoriesErased events after a position, in log order, in one query:
# (position, customer id, None for Erased or the categories CategoriesErased destroyed).
ScanAllErasures = Callable[[int], Sequence[tuple[int, UUID, Sequence[str] | None]]]


class ErasureRegistry:
    """Thread-safe. `scan` is None for a registry that knows only what it is told (tests
    of the key ring on its own)."""

    def __init__(self, *, scan_all: ScanAllErasures | None = None) -> None:
        self._scan_all = scan_all
        self._erased: set[UUID] = set()
        self._position = 0
        # Per-category destruction, as the log says (`Customer.CategoriesErased`): the key
        # ring never hands out a category key the log says is destroyed.
        self._categories: dict[UUID, frozenset[str]] = {}
        self._last_scan_started = -1
        self._lock = threading.Lock()
        # What refreshing costs, for `ledger` operators and the benchmark.
        self.scans = 0
        self.scan_seconds = 0.0

    def refresh(self) -> None:
        """Read the Erased events logged since the last scan (one query; none new is the
        common case). Threads that ask while a scan runs share the next one: a scan that
        started after a caller asked is as fresh as one of its own."""
        if self._scan_all is None:
            return
        asked = time.monotonic_ns()
        with self._lock:
            if self._last_scan_started > asked:
                return
            self._last_scan_started = time.monotonic_ns()
            started = time.perf_counter()
            for position, customer_id, categories in self._scan_all(self._position):
                if categories is None:
                    self._erased.add(customer_id)
                else:
                    self._merge_categories(customer_id, categories)
                self._position = max(self._position, position)
            self.scans += 1
            self.scan_seconds += time.perf_counter() - started

    def add(self, customer_id: UUID) -> None:
        """This process's own erasure, once its event is committed and before its key is
        destroyed: no reader here ever finds the key gone without knowing why."""
        with self._lock:
            self._erased.add(customer_id)

    def is_erased(self, customer_id: UUID) -> bool:
        return customer_id in self._erased

    def add_categories(self, customer_id: UUID, categories: Sequence[str]) -> None:
        """This process's own category destruction, once its event is committed and
        before the keys are destroyed."""
        with self._lock:
            self._merge_categories(customer_id, categories)

    def _merge_categories(self, customer_id: UUID, categories: Sequence[str]) -> None:
        self._categories[customer_id] = self._categories.get(customer_id, frozenset()).union(
            categories
        )

    def erased_categories(self, customer_id: UUID) -> frozenset[str]:
        """The categories of this customer the log says are destroyed (empty: none)."""
        return self._categories.get(customer_id, frozenset())

    def category_erasures(self) -> dict[UUID, frozenset[str]]:
        with self._lock:
            return dict(self._categories)

    def erased_ids(self) -> frozenset[UUID]:
        with self._lock:
            return frozenset(self._erased)

    @property
    def position(self) -> int:
        """The log position up to which Erased (and CategoriesErased) events were read."""
        return self._position
