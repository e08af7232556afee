"""What a projection is, for the runner that feeds it.

A projection turns customer events, in log order, into tables that answer queries. The
runner calls it inside a database transaction that also records how far it got, so each
event is applied exactly once even across crashes. To be rebuildable from position 0 with
byte-identical results, a projection must depend only on the events it is given and its
own tables — not on the clock, not on another projection, not on the aggregates' current
state. Erasure reaches it through `purge`, in the same step as the key is destroyed.

To add one: subclass `Projection` (or `FoldingProjection` when its rows are each customer's
folded state, as the current view's and the duplicate index's are), then add its factory to
`ledger.projections.wiring.PROJECTION_FACTORIES`. It is then written with every command,
runs in `ledger project`, rebuilds with `ledger rebuild NAME` and reports its lag in
`ledger projections`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from ledger.domain.customer import Customer
from ledger.projections.row_mac import ProjectionRowTampered
from ledger.projections.sealed_rows import shared_plaintexts
from ledger.projections.state import CustomerState, fold
from ledger.projections.store import Tx

T = TypeVar("T")
log = logging.getLogger("ledger.projections")

Replay = Callable[[UUID], Sequence[Customer.Event]]
"""A customer's events, read from the log (for replacing a row that fails its check)."""
_REPLAY: ContextVar[Replay | None] = ContextVar("ledger_replay", default=None)


@contextmanager
def replaying(replay: Replay) -> Iterator[None]:
    """Within the block (a catch-up's batch, in the projections' own transaction), a row
    that fails its integrity check is replaced by its customer's state folded from the
    log instead of failing the batch. Not inside the events' own transaction (inline
    writes): there the batch fails, the events are saved without it and a catch-up follows."""
    token = _REPLAY.set(replay)
    try:
        yield
    finally:
        _REPLAY.reset(token)


# What `preload` read for `apply`, inside `batch_scope` only: (projection, events) -> rows.
_PRELOADED: ContextVar[dict[tuple[int, int], tuple[object, object, Any]] | None] = ContextVar(
    "ledger_preloaded", default=None
)


@contextmanager
def batch_scope() -> Iterator[None]:
    """The runner applies one batch (one transaction) in this block: what projections
    preload for it, and the canonical JSON shared between sealers, live only until it
    ends, so no decrypted state outlives the batch."""
    token = _PRELOADED.set({})
    try:
        with shared_plaintexts():
            yield
    finally:
        _PRELOADED.reset(token)


def keep_preloaded(projection: object, events: object, value: Any) -> None:
    """Hand `value` from `preload` to `apply` of the same projection and the same batch
    (outside `batch_scope` nothing is kept, and `apply` reads for itself)."""
    held = _PRELOADED.get()
    if held is not None:
        held[(id(projection), id(events))] = (projection, events, value)


def take_preloaded(projection: object, events: object) -> Any | None:
    held = _PRELOADED.get()
    if held is None:
        return None
    found = held.pop((id(projection), id(events)), None)
    if found is None or found[0] is not projection or found[1] is not events:
        return None
    return found[2]


def customers_of(events: Sequence[PositionedEvent]) -> list[UUID]:
    """The batch's customers, each once, in order of first appearance."""
    return list(dict.fromkeys(e.customer_id for e in events))


def rows_for(
    projection: object,
    tx: Tx,
    events: Sequence[PositionedEvent],
    fresh: Collection[UUID],
    load: Callable[[Tx, Sequence[UUID]], Mapping[UUID, T]],
) -> Mapping[UUID, T]:
    """What a projection's `apply` starts from: the rows its `preload` read for this batch,
    else its rows read now — leaving out the `fresh` customers, who have none."""
    loaded: Mapping[UUID, T] | None = take_preloaded(projection, events)
    if loaded is not None:
        return loaded
    ids = [i for i in customers_of(events) if i not in fresh]
    return load(tx, ids) if ids else {}


@dataclass(frozen=True)
class PositionedEvent:
    """A decoded customer event and its position in the log. Personal attributes are
    plaintext while the customer's key lives, `ERASED` after."""

    position: int
    event: Customer.Event
    customer_id: UUID = field(init=False, repr=False, compare=False)
    """The event's customer (read once per event per projection: kept, not looked up)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "customer_id", self.event.originator_id)


@dataclass(frozen=True)
class Tombstone:
    """What may be kept about an erased customer: no personal data, only that it existed,
    when, and at which version it was erased."""

    customer_id: UUID
    version: int
    created_at: datetime
    erased_at: datetime


class Projection(ABC):
    name: ClassVar[str]
    """Stable identifier: its position row, and `ledger rebuild NAME`."""

    schema_version: ClassVar[int] = 1
    """Bump when the tables or the folding change: the runner then rebuilds from 0."""

    description: ClassVar[str] = ""

    write_weight: ClassVar[int] = 1
    """Roughly how many rows it writes per customer. Within a batch the runner applies the
    heaviest projection first, so that (with every read done first, see `preload`) the
    database writes its rows while the lighter projections compute theirs."""

    @abstractmethod
    def tables(self) -> Sequence[str]:
        """Every table this projection owns (dropped on rebuild, counted in status)."""

    @abstractmethod
    def create(self, tx: Tx) -> None:
        """Create the tables if missing (idempotent)."""

    def drop(self, tx: Tx) -> None:
        for table in reversed(self.tables()):
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    @abstractmethod
    def apply(
        self, tx: Tx, events: Sequence[PositionedEvent], *, fresh: Collection[UUID] = ()
    ) -> None:
        """Apply a batch of events (in log order) inside the runner's transaction. `fresh`:
        customers known to have no rows at all (registered in the very transaction that
        applies them), whose rows need not be looked up."""

    def preload(self, tx: Tx, events: Sequence[PositionedEvent]) -> None:
        """Optionally read, in the runner's transaction and before any projection of the
        batch writes, what `apply` will read for these events (`keep_preloaded`). On
        PostgreSQL (pipeline mode) a read waits for every statement sent before it, so
        reading first lets the server write one projection's rows while the next one's
        are computed. Reading only its own tables, a projection reads the same either way."""
        return None  # by default `apply` reads for itself

    @abstractmethod
    def purge(self, tx: Tx, tombstone: Tombstone) -> None:
        """Remove everything held about an erased customer, leaving at most a tombstone
        that later (older) events cannot bring back to life. Must leave exactly what
        applying the customer's `Erased` event leaves, so a rebuild gives the same rows."""

    def tampered(self, tx: Tx) -> list[tuple[str, str]]:
        """(table, customer id) of every row that fails its integrity check (see
        `ledger.projections.row_mac`); projections whose rows decide nothing have none."""
        return []

    def row_count(self, tx: Tx) -> int:
        row = tx.one(f"SELECT COUNT(*) FROM {self.tables()[0]}")
        return int(row[0]) if row else 0


class FoldingProjection(Projection):
    """A projection whose rows hold each customer's folded state (`state.fold`). A batch
    loads its customers' rows once, folds their events in log order and writes back only
    the customers an event changed, so a customer with many events in one batch costs one
    read and one write."""

    rows_table: ClassVar[str]
    """The table with one row per customer (`customer_id`, `version`, ...)."""

    def versions(self, tx: Tx) -> dict[UUID, int]:
        """Each customer's row version: a caught-up row is at its customer's last version
        in the log, which is how `ledger projections --check` tells a row put back from an
        older state (sound, once) from the current one."""
        rows = tx.rows(f"SELECT customer_id, version FROM {self.rows_table}")
        return {UUID(str(customer_id)): int(version) for customer_id, version in rows}

    @abstractmethod
    def load(self, tx: Tx, ids: Sequence[UUID]) -> dict[UUID, CustomerState]:
        """The stored state of those of `ids` that have rows."""

    @abstractmethod
    def write(self, tx: Tx, states: Sequence[CustomerState]) -> None:
        """Store these states, replacing the customers' rows."""

    def preload(self, tx: Tx, events: Sequence[PositionedEvent]) -> None:
        keep_preloaded(self, events, self.load_sound(tx, customers_of(events)))

    def load_sound(self, tx: Tx, ids: Sequence[UUID]) -> dict[UUID, CustomerState]:
        """`load` for folding: a row that fails its check must never be folded into a new
        row (that would launder an edited owner under a fresh MAC). Inside `replaying`
        it is replaced, and rewritten, from the customer's events in the log, so the
        projection heals instead of stalling; elsewhere the failure stands."""
        wanted = list(ids)
        repaired: dict[UUID, CustomerState] = {}
        while True:
            try:
                states = self.load(tx, wanted)
                break
            except ProjectionRowTampered as error:
                customer_id = UUID(error.customer_id)
                if customer_id not in wanted:
                    raise
                wanted.remove(customer_id)
                state = self._from_log(error)
                if state is not None:
                    repaired[customer_id] = state
        if repaired:
            self.write(tx, list(repaired.values()))
        return states | repaired

    def _from_log(self, error: ProjectionRowTampered) -> CustomerState | None:
        """The customer's state folded from its events in the log, inside `replaying`;
        elsewhere `error` stands."""
        replay = _REPLAY.get()
        if replay is None:
            raise error
        log.error("%s; replaced from the log", error)
        state: CustomerState | None = None
        for event in replay(UUID(error.customer_id)):
            state = fold(state, event)
        return state

    def apply(
        self, tx: Tx, events: Sequence[PositionedEvent], *, fresh: Collection[UUID] = ()
    ) -> None:
        states: dict[UUID, CustomerState | None] = dict(
            rows_for(self, tx, events, fresh, self.load_sound)
        )
        changed: dict[UUID, CustomerState] = {}
        for positioned in events:
            before = states.get(positioned.customer_id)
            if (
                before is not None
                and not before.is_erased
                and positioned.event.originator_version > before.version + 1
            ):
                # A customer's versions have no gaps, and every one of its events reaches
                # every projection in order: a row behind its next event is one put back
                # whole from an older state (its MAC is sound). Folding onto it would keep
                # what it said then (an owner since replaced, say) under a fresh MAC.
                lagging = ProjectionRowTampered(
                    self.rows_table, str(positioned.customer_id), "is behind the log"
                )
                before = self._from_log(lagging)
                states[positioned.customer_id] = before
                if before is not None:
                    changed[positioned.customer_id] = before
            after = fold(before, positioned.event)
            if after is not None and after is not before:
                states[positioned.customer_id] = after
                changed[positioned.customer_id] = after
        self.write(tx, list(changed.values()))
