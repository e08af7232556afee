"""Signing tree heads while a long-running process writes (`ledger serve`).

Until a head is signed and published, the newest events are protected only by the
database: someone who can write to it can rewrite them, leaves and all. A background thread
therefore signs every `seconds` and as soon as `every` events are unsigned, which bounds
that window to seconds (or N events) even if the process is killed. The commit path only
tells it the tree's size (`grown`, from the recorder, after each commit): a comparison and
at most an `Event.set()`, no query. Failures are logged (no personal data: sizes,
positions and the reason) and retried on the next tick; they never stop the server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ledger.audit.tree_heads import TreeHead

log = logging.getLogger("ledger.audit")

RETRY_SECONDS = 1.0  # the shortest pause after a failure


class TreeHeadSigner:
    def __init__(self, issue: Callable[[], TreeHead], *, seconds: float, every: int) -> None:
        self._issue = issue
        self._seconds = seconds
        self._every = every
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._signed = 0  # the size of the newest head this signer saw
        self._size = 0  # the tree's size as the recorder last reported it
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="ledger-tree-heads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def grown(self, size: int) -> None:
        """The tree now holds `size` leaves (called on the commit path: cheap)."""
        self._size = size
        if self._every and size - self._signed >= self._every:
            self._wake.set()

    @property
    def unsigned(self) -> int:
        """Leaves committed (as far as this process heard) that no head it signed covers."""
        return max(0, self._size - self._signed)

    def stop(self) -> None:
        """Stop the thread (the ledger signs once more when it closes)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def sign_now(self) -> TreeHead | None:
        """Sign what is committed; None (logged) when it could not be signed."""
        try:
            head = self._issue()
        except Exception as exc:
            self.failures += 1
            log.error("tree head not signed (will retry): %s: %s", type(exc).__name__, exc)
            return None
        self._signed = head.tree_size
        return head

    def _run(self) -> None:
        timeout = self._seconds or None
        # At once: a store written by an older version gets its head published, and a log
        # tampered with while the process was down is reported (logged) at start.
        self.sign_now()
        while not self._stop.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.sign_now() is None:
                # Back off: commits keep waking us while the log is unsigned.
                self._stop.wait(max(self._seconds, RETRY_SECONDS))
            elif self._every and self._size - self._signed >= self._every:
                # Another writer's commit may have been reported before ours was visible
                # to the signer's read: look again shortly.
                self._stop.wait(0.01)
                self._wake.set()
