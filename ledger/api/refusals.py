"""Refused authentication, on record: every call refused for its credentials (missing,
malformed, forged, expired, revoked) is written to the access log and logged as one line,
without the token.

A flood must not turn into a flood of writes, so refusals are coalesced per source: the
first refusal from a (peer address, reason, verified subject) is recorded at once; further
ones from the same source within `window_seconds` are only counted, and the next record for
that source (or `flush`, which the server runs when it stops) carries the count. So one
source costs at most one record (one group-committed write) and one log line per window.
At most `max_sources` sources are tracked; beyond that, refusals share one source per
reason (peer "*"), so memory stays bounded too. Nothing is dropped without being counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger.api.tokens import TokenError

log = logging.getLogger("ledger.api")

MAX_LABEL = 200
OVERFLOW_PEER = "*"

Source = tuple[str, str, str]  # (peer, reason, subject)


@dataclass
class _Window:
    opened: float
    method: str
    suppressed: int = 0


def peer_host(peer: str) -> str:
    """gRPC's peer ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234") without the port: a client
    opens a new port per connection, the address is what identifies it."""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, sep, port = peer.rpartition(":")
        if sep and port.isdigit():
            peer = host
    return peer[:MAX_LABEL] or "unknown"


class RefusalLog:
    def __init__(
        self,
        sink: object,
        *,
        window_seconds: float = 1.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`sink` has `record_refused(*, method, reason, peer, principal, refusals)`; an
        access log without it (a test double) gets the log line only."""
        self.sink = sink
        self.window_seconds = window_seconds
        self.max_sources = max_sources
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Source, _Window] = {}
        self.recorded = 0  # records written
        self.coalesced = 0  # refusals counted into a later record instead of their own

    def refused(self, *, method: str, peer: str, error: TokenError) -> None:
        """Called by the gate before UNAUTHENTICATED is sent. Never raises: refusing stays
        right even if recording the refusal failed."""
        source: Source = (peer_host(peer), error.reason, error.subject or "")
        now = self.clock()
        due: list[tuple[Source, _Window, int]] = []
        with self._lock:
            window = self._windows.get(source)
            if window is None and len(self._windows) >= self.max_sources:
                due = self._expired(now)
                if len(self._windows) >= self.max_sources:
                    source = (OVERFLOW_PEER, error.reason, "")
                    window = self._windows.get(source)
            if window is not None and now - window.opened < self.window_seconds:
                window.suppressed += 1
                self.coalesced += 1
                return
            earlier = window.suppressed if window is not None else 0
            self._windows[source] = _Window(now, method)
        for old_source, old, count in due:
            self._write(old_source, old.method, count)
        self._write(source, method, 1 + earlier)

    def flush(self) -> None:
        """Write the counts still held (the server calls this when it stops)."""
        with self._lock:
            held = [(s, w, w.suppressed) for s, w in self._windows.items() if w.suppressed]
            self._windows.clear()
        for source, window, count in held:
            self._write(source, window.method, count)

    def _expired(self, now: float) -> list[tuple[Source, _Window, int]]:
        """Forget sources whose window has passed; those with counted refusals are
        returned to be written (under the lock)."""
        done = [s for s, w in self._windows.items() if now - w.opened >= self.window_seconds]
        due = []
        for source in done:
            window = self._windows.pop(source)
            if window.suppressed:
                due.append((source, window, window.suppressed))
        return due

    def _write(self, source: Source, method: str, refusals: int) -> None:
        peer, reason, subject = source
        log.warning(
            "refused authentication: %s from %s: %s%s (%d refusal%s)",
            method,
            peer,
            reason,
            f" (credential of {subject})" if subject else "",
            refusals,
            "" if refusals == 1 else "s",
        )
        record = getattr(self.sink, "record_refused", None)
        if record is None:
            return
        try:
            record(
                method=method[:MAX_LABEL],
                reason=reason,
                peer=peer,
                principal=subject,
                refusals=refusals,
            )
            with self._lock:
                self.recorded += 1
        except Exception:
            log.exception("could not record a refused authentication from %s", peer)
