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
  retried one command at a time, and the others still commit.
Data keys of newly registered customers are created first, in one key-store transaction per
batch, while the previous batch's events are being written (see `GroupCommitter`); should
the events then fail, those keys are orphans that protect nothing (harmless).
"""

from __future__ import annotations

import logging
import queue
import threading
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
    done: Future[None] = field(default_factory=Future)


class GroupCommitter:
    """Two threads in a pipeline: the key stage creates the data keys of a batch (one
    key-store transaction) and hands it on; the event stage writes the events of every
    batch handed on meanwhile in one transaction. So the next batch's keys are created
    while this batch's events commit, and a command's key is always durable before its
    events (the order a crash needs: events never refer to a key that was not stored)."""

    def __init__(
        self,
        save: Callable[[Sequence[Any]], object],
        create_keys: Callable[[Sequence[UUID]], object],
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._save = save
        self._create_keys = create_keys
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

    def commit(self, write: Write) -> None:
        """Block until the write is durable; raise what made it fail."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        self._ensure_started()
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
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
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
                return
            batch = list(first)
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._keyed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            with self._ready_lock:
                self._ready -= len(batch)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[Write]) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            self._save([event for w in batch for event in w.events])
        except RecordConflictError:
            if len(batch) == 1:
                batch[0].done.set_exception(_conflict())
                return
            log.info("conflict in a batch of %d; committing one at a time", len(batch))
            for write in batch:
                self._commit_alone(write)
            return
        except BaseException as exc:
            for write in batch:
                write.done.set_exception(exc)
            return
        for write in batch:
            write.done.set_result(None)

    def _commit_alone(self, write: Write) -> None:
        try:
            self._save(write.events)
        except RecordConflictError:
            write.done.set_exception(_conflict())
        except BaseException as exc:
            write.done.set_exception(exc)
        else:
            write.done.set_result(None)


class ConflictingWrite(RecordConflictError):
    """Another command on the same customer committed first at the same version."""


def _conflict() -> ConflictingWrite:
    return ConflictingWrite("another command on this customer committed first")
