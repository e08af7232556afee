"""Feeds projections from the log, exactly once, on SQLite and PostgreSQL alike.

The runner reads the application's notification log by position (`select_notifications`;
the SQLite recorder has no subscriptions, and polling works on both stores), decodes each
customer event with the application's own mapper (so personal data arrives decrypted, or
as `ERASED` once its key is gone), and hands batches to the projections. A batch's rows and
the projection's new position are written in ONE transaction, after re-reading (and, on
PostgreSQL, locking) the position inside it: a crash before the commit loses both, a crash
after keeps both, and a second runner that raced us sees the moved position and re-plans
instead of applying the batch again. Hence exactly-once, however runners are stopped.

Projections at the same position share one read and one transaction; a projection being
rebuilt catches up on its own until it meets the others.

Modes (LEDGER_PROJECTIONS): `inline` (default) applies a save's events to the projections
inside the very transaction that stores them (`apply_inserted`, called by the recorder
under the log's write lock), from the events in memory: no read-back, no decryption, no
second commit, and a command's effects are in the projections when it returns. Should that
not be possible (a projection behind the log: events another process wrote, a rebuild
running, an error), the events still commit and a catch-up after the save applies what is
missing (logged on failure; the next command or `ledger project` retries): lag is bounded
by one catch-up. `worker` leaves it to a separate `ledger project` process, polling every
`interval` seconds: lag is bounded by the interval plus one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import resolve_topic

from ledger.audit.recorders import InsertedBatch
from ledger.audit.storage import POSTGRES, SQLITE
from ledger.domain.customer import Customer
from ledger.projections.base import (
    FoldingProjection,
    PositionedEvent,
    Projection,
    Tombstone,
    batch_scope,
    replaying,
)
from ledger.projections.store import ProjectionDatabase, Tx

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

log = logging.getLogger("ledger.projections")

POSITIONS = "projection_positions"
_CREATE_POSITIONS = (
    f"CREATE TABLE IF NOT EXISTS {POSITIONS} ("
    " name TEXT PRIMARY KEY,"
    " position {bigint} NOT NULL,"
    " schema_version INTEGER NOT NULL)"
)
DEFAULT_BATCH = 500
# Rebuilds read larger batches. Bounded so that the customers of the batch being applied and
# of the one read ahead stay within the key ring's cache (`KeyRing.max_entries`).
REBUILD_BATCH = 2000

Progress = Callable[[int, int], None]
Batch = tuple[int, int, list[PositionedEvent]]  # last position read, notifications, events
Reader = Callable[[int, int], "Batch | None"]  # (start, head) -> the batch after start


class UnknownProjection(LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"no projection named {name!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    description: str
    position: int
    head: int
    rows: int
    schema_version: int

    @property
    def lag(self) -> int:
        """Events in the log this projection has not applied yet."""
        return max(0, self.head - self.position)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "rows": self.rows,
            "schema_version": self.schema_version,
        }


class _ReadAhead:
    """A reader that, having returned the batch after `start`, at once starts reading and
    decoding the batch after that one in a worker thread, so that the database round trips
    and decryption of batch n+1 overlap the applying of batch n. A request for anything
    else (another runner moved a position; groups at different positions) is read in the
    caller's thread and the guess is discarded. Reading ahead changes only when a batch is
    read, never what is applied: the position is still checked inside each transaction."""

    def __init__(self, read: Callable[[int, int, int], Batch | None], limit: int) -> None:
        self._read = read
        self._limit = limit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-read-ahead")
        self._ahead: tuple[tuple[int, int], Future[Batch | None]] | None = None

    def __call__(self, start: int, head: int) -> Batch | None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (start, head):
            batch = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
            batch = self._read(start, head, self._limit)
        if batch is not None and batch[0] < head:
            following = self._pool.submit(self._read, batch[0], head, self._limit)
            self._ahead = ((batch[0], head), following)
        return batch

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None
        self._pool.shutdown(wait=True)


class ProjectionRunner:
    def __init__(
        self,
        ledger: CustomerLedger,
        db: ProjectionDatabase,
        projections: Sequence[Projection],
        *,
        batch_size: int = DEFAULT_BATCH,
        rebuild_batch_size: int = REBUILD_BATCH,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError("projection names must be unique")
        self.ledger = ledger
        self.db = db
        self.projections = list(projections)
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._customer_topics: dict[str, bool] = {}
        # Inline catch-ups of concurrent commands are coalesced: see `catch_up_quietly`.
        self._tickets = 0
        self._served = 0
        self._tickets_lock = threading.Lock()
        # Whether the catch-up after a save has anything to do: every position up to
        # `_applied_through` is known to be in every projection (applied with its events, or
        # caught up); `_skipped_through` is the last position of a save whose events were
        # not applied with them. Behind while the second is past the first; at start, until
        # a first catch-up (the log may have grown while this process was not running).
        self._applied_through = -1
        self._skipped_through = 0
        self._through_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]

    def get(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise UnknownProjection(name, self.names)

    # Set-up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create what is missing; a projection whose schema version changed is dropped
        and starts again from position 0 (it then rebuilds as it catches up)."""
        with self._lock, self.db.transaction() as tx:
            if tx.is_postgres:
                # Several processes may start at once; CREATE IF NOT EXISTS is not
                # race-free in PostgreSQL, so serialise set-up on an advisory lock.
                tx.execute(f"SELECT pg_advisory_xact_lock(hashtext('{POSITIONS}'))")
            tx.execute(_CREATE_POSITIONS)
            known = {
                str(r[0]): int(r[1])
                for r in tx.rows(f"SELECT name, schema_version FROM {POSITIONS}")
            }
            for projection in self.projections:
                version = known.get(projection.name)
                if version is None:
                    projection.create(tx)
                    tx.execute(
                        f"INSERT INTO {POSITIONS} (name, position, schema_version)"
                        " VALUES (?, 0, ?)",
                        (projection.name, projection.schema_version),
                    )
                elif version != projection.schema_version:
                    log.warning("projection %s changed; rebuilding from 0", projection.name)
                    self._reset(tx, projection)
                else:
                    projection.create(tx)

    def _reset(self, tx: Tx, projection: Projection) -> None:
        projection.drop(tx)
        projection.create(tx)
        tx.execute(
            f"UPDATE {POSITIONS} SET position = 0, schema_version = ? WHERE name = ?",
            (projection.schema_version, projection.name),
        )

    # Feeding --------------------------------------------------------------------------------

    def head(self) -> int:
        return int(self.ledger.recorder.max_notification_id() or 0)

    def positions(self) -> dict[str, int]:
        with self.db.reading() as tx:
            return self._positions(tx)

    def _positions(self, tx: Tx) -> dict[str, int]:
        rows = tx.rows(f"SELECT name, position FROM {POSITIONS}")
        known = {str(name): int(position) for name, position in rows}
        return {name: known.get(name, 0) for name in self.names}

    def catch_up(
        self,
        *,
        only: Sequence[str] | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Apply everything up to the log's head; returns how many notifications were
        applied (per group of projections). `progress(done, total)` after each batch."""
        wanted = set(self.names if only is None else only)
        for name in wanted:
            self.get(name)
        return self._catch_up(wanted, progress, should_stop, self._read)

    def _catch_up(
        self,
        wanted: set[str],
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
        read: Reader,
    ) -> int:
        with self._lock:
            head = self.head()
            positions = self._positions_for(wanted)
            total = max(0, head - min(positions.values(), default=head))
            done = 0
            while not (should_stop and should_stop()):
                behind = {n: p for n, p in positions.items() if p < head}
                if not behind:
                    latest = self.head()
                    if latest == head:
                        break
                    total += latest - head
                    head = latest
                    continue
                start = min(behind.values())
                group = [p for p in self.projections if behind.get(p.name) == start]
                applied = self._apply_batch(group, start, head, read)
                if applied is None:  # another runner moved; re-read and re-plan
                    positions = self._positions_for(wanted)
                    continue
                end, count = applied
                for projection in group:
                    positions[projection.name] = end
                done += count
                if progress is not None:
                    progress(min(done, total), total)
            self.last_error = None
            return done

    def _positions_for(self, wanted: set[str]) -> dict[str, int]:
        return {n: p for n, p in self.positions().items() if n in wanted}

    def _apply_batch(
        self, group: list[Projection], start: int, head: int, read: Reader
    ) -> tuple[int, int] | None:
        batch = read(start, head)
        if batch is None:
            return (head, 0)
        end, count, events = batch
        names = sorted(p.name for p in group)
        with self.db.transaction() as tx:
            tx.lock_rows(POSITIONS, "name", names)
            current = self._positions(tx)
            if any(current[name] != start for name in names):
                return None
            with batch_scope(), replaying(self._customer_events):
                for projection in group:  # every read first: see `Projection.preload`
                    projection.preload(tx, events)
                for projection in sorted(group, key=lambda p: -p.write_weight):
                    projection.apply(tx, events)
            tx.executemany(
                f"UPDATE {POSITIONS} SET position = ? WHERE name = ?",
                [(end, name) for name in names],
            )
        return end, count

    def _customer_events(self, customer_id: UUID) -> list[Customer.Event]:
        """A customer's whole stream from the log: what replaces a row that fails its
        integrity check (see `FoldingProjection.load_sound`)."""
        return [e for e in self.ledger.events.get(customer_id) if isinstance(e, Customer.Event)]

    def _read(self, start: int, head: int) -> Batch | None:
        """The notifications after `start` (up to `batch_size`, not beyond `head`): the
        last one's position, how many, and the customer events among them, decoded."""
        return self._read_batch(start, head, self.batch_size)

    def _read_batch(self, start: int, head: int, limit: int) -> Batch | None:
        notifications = self.ledger.recorder.select_notifications(
            start=start, limit=limit, stop=head, inclusive_of_start=False
        )
        if not notifications:
            return None
        return notifications[-1].id, len(notifications), self._decode(notifications)

    def _decode(self, notifications: Sequence[Notification]) -> list[PositionedEvent]:
        """Customer events only; other aggregates' events (e.g. audit records) share the
        log and are passed over. Fails loudly on an event that does not open: skipping
        it would make the projection silently wrong."""
        customers = [n for n in notifications if self._is_customer_topic(n.topic)]
        ids = [n.originator_id for n in customers if isinstance(n.originator_id, UUID)]
        self.ledger.keys.prefetch(ids)  # one round trip instead of one per customer
        decoded = []
        for notification in customers:
            event = self.ledger.mapper.to_domain_event(notification)
            assert isinstance(event, Customer.Event)
            decoded.append(PositionedEvent(notification.id, event))
        return decoded

    def _is_customer_topic(self, topic: str) -> bool:
        known = self._customer_topics.get(topic)
        if known is None:
            cls = resolve_topic(topic)
            known = isinstance(cls, type) and issubclass(cls, Customer.Event)
            self._customer_topics[topic] = known
        return known

    def apply_inserted(self, events: Sequence[object], batch: InsertedBatch) -> None:
        """The recorder's in-transaction hook: apply the customer events of a save (`events`:
        the domain events, in the order they were stored) to every projection that was at
        the log's head just before them, and move those projections' positions, in the
        transaction that stores the events. On an error it raises, which aborts that
        transaction; the ledger then saves the events again without this hook and the
        projections catch up from the log (`skipped`): a projection never fails a command.

        Deliberately does not take `self._lock`: a catch-up holding it may be waiting for
        the position rows this transaction holds. The rows' locks serialise the two."""
        end = max(batch.positions)
        tx = Tx(batch.kind, batch.cursor, batch.connection)
        positioned = [
            PositionedEvent(position, event)
            for position, event in zip(batch.positions, events, strict=True)
            if isinstance(event, Customer.Event)
        ]
        names = sorted(self.names)
        where, params = tx.is_in("name", names)
        if not positioned:
            # Nothing for the projections (access records, say), but their positions must
            # still move past these events for the next batch to find them at the head.
            # No reply is awaited (pipelined with the commit: no extra round trip), and
            # nothing is noted: a projection left behind shows at the next customer batch.
            tx.execute(
                f"UPDATE {POSITIONS} SET position = ? WHERE {where}"
                f" AND position = {batch.previous_sql}",
                [end, *params, batch.first],
            )
            return
        try:
            # One statement: move, and lock, the positions of the projections that were at
            # the log's head just before these events; those apply them. (Should applying
            # fail, the whole transaction is aborted, positions included.)
            moved = tx.rows(
                f"UPDATE {POSITIONS} SET position = ? WHERE {where}"
                f" AND position = {batch.previous_sql} RETURNING name",
                [end, *params, batch.first],
            )
            at_head = {str(row[0]) for row in moved}
            group = [p for p in self.projections if p.name in at_head]
            if group:
                # Registered in this very transaction: nothing can be stored about them.
                fresh = {
                    p.customer_id for p in positioned if isinstance(p.event, Customer.Registered)
                }
                with batch_scope():  # canonical JSON shared by the sealers of this batch
                    for projection in sorted(group, key=lambda p: -p.write_weight):
                        projection.apply(tx, positioned, fresh=fresh)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("projections not applied with their events (caught up after): %s", exc)
            raise
        if len(group) == len(self.projections):
            # They were all at the position just before these events: all are at `end` now.
            self._note(applied=end)
        else:
            self._note(skipped=end)

    def skipped(self, end: int) -> None:
        """Events up to `end` were stored without `apply_inserted`: catch up after."""
        self._note(skipped=end)

    def _note(self, *, applied: int = -1, skipped: int = 0) -> None:
        with self._through_lock:
            self._applied_through = max(self._applied_through, applied)
            self._skipped_through = max(self._skipped_through, skipped)

    @property
    def behind(self) -> bool:
        """True when a catch-up may have something to apply (see `_applied_through`)."""
        with self._through_lock:
            return self._skipped_through > self._applied_through

    def catch_up_quietly(self) -> None:
        """The in-process hook after each save: never fails the command (its events are
        committed); a failure is logged and retried by the next catch-up.

        Concurrent callers share catch-ups: a caller takes a ticket after its events are
        committed; a catch-up that started after that ticket was taken read a head that
        includes those events, so the caller returns as soon as such a catch-up is done
        instead of running one of its own (one catch-up serves a whole batch)."""
        if not self.behind:
            return
        with self._tickets_lock:
            self._tickets += 1
            ticket = self._tickets
        with self._lock:
            if self._served >= ticket:
                return
            with self._tickets_lock:
                covers = self._tickets
            if self._catch_up_quietly():
                self._served = max(self._served, covers)

    def _catch_up_quietly(self) -> bool:
        try:
            self.catch_up()
            self._note(applied=min(self.positions().values(), default=0))
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("projections are behind (retried on the next command): %s", exc)
            return False
        return True

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = 1.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """The worker loop of `ledger project`: catch up, sleep, repeat until `stop` is
        set; a batch in flight is finished (committed) first. Errors are logged and
        retried after the interval, so a database restart does not end the worker."""
        while not stop.is_set():
            try:
                done = self.catch_up(should_stop=stop.is_set)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("projection worker: %s (retrying in %.1fs)", exc, interval)
                done = 0
            if done and on_progress is not None:
                on_progress(done)
            if not done:
                stop.wait(interval)

    def rebuild(self, only: Sequence[str] | None = None, progress: Progress | None = None) -> int:
        """Drop and re-create the named projections (all by default), then replay the
        whole log into them. Other runners see the reset position and stand back.

        Unlike `catch_up`, a rebuild reads in batches of `rebuild_batch_size` (fewer, larger
        transactions: a customer's events mostly fall in one batch, so it is folded and
        written once) and reads and decodes the next batch in a thread of its own while the
        current one is applied. Exactly-once is unchanged: each batch still commits its rows
        and its position together, after checking the position it started from."""
        names = list(self.names if only is None else only)
        projections = [self.get(name) for name in names]
        with self._lock:
            with self.db.transaction() as tx:
                tx.lock_rows(POSITIONS, "name", sorted(names))
                for projection in projections:
                    self._reset(tx, projection)
            read_ahead = _ReadAhead(self._read_batch, self.rebuild_batch_size)
            try:
                return self._catch_up(set(names), progress, None, read_ahead)
            finally:
                read_ahead.close()

    # Erasure --------------------------------------------------------------------------------

    def purge(self, customer_id: UUID) -> None:
        """The erasure purger: every projection drops the customer in one transaction,
        serialised with catching up (position rows locked), so a batch decoded just
        before the key died cannot write the customer back afterwards — projections
        check the tombstone inside their own transaction."""
        tombstone = self._tombstone(customer_id)
        with self._lock, self.db.transaction() as tx:
            tx.lock_rows(POSITIONS, "name", sorted(self.names))
            for projection in self.projections:
                projection.purge(tx, tombstone)

    def _tombstone(self, customer_id: UUID) -> Tombstone:
        customer: object = self.ledger.repository.get(customer_id)
        assert isinstance(customer, Customer)
        erased_at = customer.erased_at or customer.modified_on
        return Tombstone(
            customer_id=customer_id,
            version=customer.version,
            created_at=customer.created_on,
            erased_at=erased_at,
        )

    # Status ---------------------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        with self.db.reading(snapshot=True) as tx:
            positions = self._positions(tx)
            versions = dict(tx.rows(f"SELECT name, schema_version FROM {POSITIONS}"))
            return [
                ProjectionStatus(
                    name=p.name,
                    description=p.description,
                    position=positions[p.name],
                    head=head,
                    rows=p.row_count(tx),
                    schema_version=int(versions.get(p.name, p.schema_version)),
                )
                for p in self.projections
            ]

    def tampered(self) -> list[tuple[str, str, str]]:
        """(projection, table, customer id) of every row that fails its integrity check,
        and of every customer whose row is not at its last version in the log up to the
        projection's position (a row deleted, or put back whole from an older state: its
        MAC holds, the log says otherwise). One snapshot of the database, which holds the
        log too. `ledger rebuild` replaces them all from the log."""
        found: list[tuple[str, str, str]] = []
        with self.db.reading(snapshot=True) as tx:
            positions = self._positions(tx)
            for projection in self.projections:
                found += [(projection.name, t, c) for t, c in projection.tampered(tx)]
                if isinstance(projection, FoldingProjection):
                    log_versions = self._log_versions(tx, positions[projection.name])
                    rows = projection.versions(tx)
                    found += [
                        (projection.name, projection.rows_table, str(customer_id))
                        for customer_id, version in sorted(log_versions.items())
                        if rows.get(customer_id) != version
                    ]
        return sorted(set(found), key=lambda item: (item[2], item[0], item[1]))

    def _log_versions(self, tx: Tx, position: int) -> dict[UUID, int]:
        """Each customer's last version among the events up to `position`."""
        dialect = POSTGRES if tx.is_postgres else SQLITE
        rows = tx.rows(
            f"SELECT originator_id, MAX(originator_version), MIN(topic) FROM"
            f" {dialect.events_table} WHERE {dialect.position} <= ? GROUP BY originator_id",
            (position,),
        )
        return {
            UUID(str(originator_id)): int(version)
            for originator_id, version, topic in rows
            if self._is_customer_topic(str(topic))
        }

    def wait_until_caught_up(self, timeout: float = 10.0) -> bool:
        """For callers that need read-your-writes across processes (worker mode)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head = self.head()
            if all(p >= head for p in self.positions().values()):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.db.close()
