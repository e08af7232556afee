"""Group commit: the events of concurrent commands are written in one transaction.

The event store serialises insert transactions (PostgreSQL: a table lock), so one
transaction per command caps throughput at the commit rate however many callers there are.
Here callers hand their pending events to one committer thread and wait; whatever queued
up while the previous transaction was committing goes into the next one. There is no
artificial wait: a lone caller is committed at once, so its latency does not grow.

Guarantees each caller relies on:
- it is answered only after the transaction holding its events has committed;
- a batch is atomic: events of one transaction are all stored or none is;
- a command that conflicts (another command on the same customer at the same version, in
  this batch or elsewhere) fails alone with `StaleVersion`: on a conflict the batch is
  retried one command at a time, and the others still commit;
- a command whose own events are what the store already holds is not a conflict: when a
  connection is lost after the store committed but before it said so, the save is retried
  (by the event-sourcing library, or here) and meets its own rows. `stored(events)` tells
  that case from a real conflict, so the command succeeds once, instead of failing with a
  conflict although it was written (and being written again by a client's retry).
Data keys of newly registered customers are created first, in one key-store transaction per
batch, while the previous batch's events are being written (see `GroupCommitter`); should
the events then fail, those keys are orphans that protect nothing (harmless). Writes that
need no key go straight to the event stage.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

log = logging.getLogger("ledger.group_commit")

DEFAULT_MAX_BATCH = 500


@dataclass
class Write:
    """One command's outcome to store: its new events, and a customer that needs a key."""

    events: Sequence[Any]
    new_key_for: UUID | None = None
    # New keys whose rows are stored in the event transaction itself (instead of the key
    # stage's): handed to `save` with the events.
    new_keys: Any = None
    done: Future[None] = field(default_factory=Future)
    error: BaseException | None = None  # set by the event stage, reported by the last one
    # False for writes no after-commit hook cares about (access records: no projection
    # reads them), so a batch of reads is answered without waiting for a catch-up.
    after_commit: bool = True


class GroupCommitter:
    """Three threads in a pipeline: the key stage creates the data keys of a batch (one
    key-store transaction; only for key stores outside the events' database, or keys the
    caller did not bring along) and hands it on; the event stage writes the events of
    every batch handed on meanwhile in one transaction (with the keys the callers brought
    and, through the ledger's recorder hook, the inline projections); the answer stage
    runs the after-commit hook (a catch-up, when a batch could not be projected in its own
    transaction) and answers the callers — batches the hook has nothing to do for (access
    records) are answered by the event stage at once. A command's key is always durable
    no later than its events (events never refer to a key that was not stored), and a
    caller hears back only after its events are durable."""

    def __init__(
        self,
        save: Callable[[Sequence[Any], Sequence[Any]], object],
        create_keys: Callable[[Sequence[UUID]], object],
        max_batch: int = DEFAULT_MAX_BATCH,
        after_commit: Callable[[], None] | None = None,
        stored: Callable[[Sequence[Any]], bool] | None = None,
    ) -> None:
        self._save = save
        self._stored = stored
        self._create_keys = create_keys
        self._after_commit = after_commit
        self._committed: queue.SimpleQueue[list[Write] | None] = queue.SimpleQueue()
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._keyed: queue.SimpleQueue[list[Write] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._closed = False
        self._ready = 0  # writes keyed and waiting for the event stage
        self._ready_lock = threading.Lock()
        self.batches = 0
        self.writes = 0
        # Told each batch's size (the metrics' histogram); must be cheap and not raise.
        self.observe_batch: Callable[[int], None] | None = None
        # Seconds spent in each stage (reported when the ledger closes).
        self.stage_seconds = {"keys": 0.0, "events": 0.0, "after_commit": 0.0}

    def commit(self, write: Write) -> None:
        """Block until the write is durable; raise what made it fail."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        self._ensure_started()
        if write.new_key_for is None:
            # Nothing for the key stage to do: straight to the event stage (reads' access
            # records, updates, erasures skip a thread hand-off).
            with self._ready_lock:
                self._ready += 1
            self._keyed.put([write])
        else:
            self._queue.put(write)
        write.done.result()

    def close(self) -> None:
        """Finish what is queued, then stop the committer threads."""
        with self._start_lock:
            self._closed = True
            threads = list(self._threads)
        if threads:
            self._queue.put(None)
            for thread in threads:
                thread.join()

    def ready(self) -> int:
        """How many writes have their keys and wait for the event stage (tests use it to
        know that a batch is fully formed)."""
        with self._ready_lock:
            return self._ready

    def in_committer(self) -> bool:
        """True on a committer thread (hooks that must not delay the next batch check)."""
        return threading.current_thread() in self._threads

    def _ensure_started(self) -> None:
        if self._threads:
            return
        with self._start_lock:
            if not self._threads:
                threads = [
                    threading.Thread(target=self._run_keys, name="ledger-commit-keys", daemon=True),
                    threading.Thread(target=self._run_events, name="ledger-commit", daemon=True),
                    threading.Thread(
                        target=self._run_answers, name="ledger-commit-answers", daemon=True
                    ),
                ]
                for thread in threads:
                    thread.start()
                self._threads = threads

    def _run_keys(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._keyed.put(None)
                return
            batch = [first]
            stop = _take_waiting(self._queue, batch, self.max_batch, list.append)
            keyed = self._create_batch_keys(batch)
            if keyed:
                with self._ready_lock:
                    self._ready += len(keyed)
                self._keyed.put(keyed)
            if stop:
                self._keyed.put(None)
                return

    def _create_batch_keys(self, batch: list[Write]) -> list[Write]:
        """The writes whose keys now exist. A failure (a key that exists already, under a
        reserved id) retries the batch one write at a time, so it fails that write alone."""
        new_keys = [w.new_key_for for w in batch if w.new_key_for is not None]
        if not new_keys:
            return batch
        started = time.perf_counter()
        try:
            return self._create_keys_for(batch, new_keys)
        finally:
            self.stage_seconds["keys"] += time.perf_counter() - started

    def _create_keys_for(self, batch: list[Write], new_keys: list[UUID]) -> list[Write]:
        try:
            self._create_keys(new_keys)
            return batch
        except BaseException as exc:
            if len(new_keys) == 1:
                for write in batch:
                    if write.new_key_for is not None:
                        write.done.set_exception(exc)
                return [w for w in batch if w.new_key_for is None]
        keyed = []
        for write in batch:
            try:
                if write.new_key_for is not None:
                    self._create_keys([write.new_key_for])
            except BaseException as exc:
                write.done.set_exception(exc)
            else:
                keyed.append(write)
        return keyed

    def _run_events(self) -> None:
        while True:
            first = self._keyed.get()
            if first is None:
                self._committed.put(None)
                return
            batch = list(first)
            stop = _take_waiting(self._keyed, batch, self.max_batch, list.extend)
            with self._ready_lock:
                self._ready -= len(batch)
            self._commit_batch(batch)
            if self._after_commit is None or not any(
                w.error is None and w.after_commit for w in batch
            ):
                # Nothing for the after-commit hook (a batch of access records, say): answer
                # now rather than hand the batch to another thread first.
                _answer(batch)
            else:
                self._committed.put(batch)
            if stop:
                self._committed.put(None)
                return

    def _run_answers(self) -> None:
        """The last stage: the after-commit hook (in-process projections catch up, once
        for everything committed meanwhile) while the next batch is being written, then
        each caller is answered."""
        while True:
            first = self._committed.get()
            if first is None:
                return
            batch = list(first)
            stop = False
            while True:
                try:
                    more = self._committed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            if self._after_commit is not None and any(
                w.error is None and w.after_commit for w in batch
            ):
                started = time.perf_counter()
                try:
                    self._after_commit()
                except Exception:  # hooks must not fail commands that are committed
                    log.exception("after-commit hook failed")
                self.stage_seconds["after_commit"] += time.perf_counter() - started
            _answer(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[Write]) -> None:
        started = time.perf_counter()
        try:
            self._commit_events(batch)
        finally:
            self.stage_seconds["events"] += time.perf_counter() - started

    def _commit_events(self, batch: list[Write]) -> None:
        self.batches += 1
        self.writes += len(batch)
        if self.observe_batch is not None:
            self.observe_batch(len(batch))
        try:
            self._save(
                [event for w in batch for event in w.events],
                [w.new_keys for w in batch if w.new_keys is not None],
            )
        except RecordConflictError:
            if len(batch) == 1:
                self._conflicted(batch[0])
                return
            log.info("conflict in a batch of %d; committing one at a time", len(batch))
            for write in batch:
                self._commit_alone(write)
        except BaseException as exc:
            for write in batch:
                write.error = exc

    def _commit_alone(self, write: Write) -> None:
        try:
            self._save(write.events, [] if write.new_keys is None else [write.new_keys])
        except RecordConflictError:
            self._conflicted(write)
        except BaseException as exc:
            write.error = exc

    def _conflicted(self, write: Write) -> None:
        """A conflict, unless the rows in the way are this write's own (committed by an
        attempt whose acknowledgement was lost): then it is done. One read per event, only
        on this rare path."""
        try:
            if self._stored is not None and self._stored(write.events):
                log.info("a write met its own committed events (lost acknowledgement)")
                write.error = None
                return
        except BaseException as exc:  # the check could not run: outcome unknown
            write.error = exc
            return
        write.error = _conflict()


def _answer(batch: list[Write]) -> None:
    for write in batch:
        if write.error is None:
            write.done.set_result(None)
        else:
            write.done.set_exception(write.error)


def _take_waiting(
    source: queue.SimpleQueue[Any],
    batch: list[Any],
    limit: int,
    add: Callable[[list[Any], Any], None],
) -> bool:
    """Add to `batch` (with `add`: list.append, or list.extend for queued lists) what is
    already queued on `source`, never waiting (a batch is whatever queued up meanwhile),
    until it holds `limit` items. True when the stop sentinel (None) was taken."""
    while len(batch) < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            return False
        if item is None:
            return True
        add(batch, item)
    return False


class ConflictingWrite(RecordConflictError):
    """Another command on the same customer committed first at the same version."""


def _conflict() -> ConflictingWrite:
    return ConflictingWrite("another command on this customer committed first")
