"""The refusal log's bounds: per-source coalescing by window, a bounded number of tracked
sources, and every refusal counted in some record."""

from __future__ import annotations

from typing import Any

from ledger.api.refusals import OVERFLOW_PEER, RefusalLog, peer_host
from ledger.api.tokens import TokenError


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record_refused(self, **record: Any) -> None:
        self.records.append(record)


def test_peer_host_drops_the_port() -> None:
    assert peer_host("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert peer_host("ipv6:[::1]:51234") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
    assert peer_host("") == "unknown"


def test_sources_are_coalesced_per_window_and_bounded_in_number() -> None:
    now = [0.0]
    sink = Sink()
    refusals = RefusalLog(sink, window_seconds=1.0, max_sources=2, clock=lambda: now[0])
    bad = TokenError("TOKEN_INVALID", "not a token")
    total = 0
    for round_ in range(3):
        for peer in range(5):
            for _ in range(10):
                refusals.refused(method="/m", peer=f"ipv4:10.0.0.{peer}:1", error=bad)
                total += 1
        now[0] += 1.5 if round_ < 2 else 0
    refusals.flush()
    assert sum(r["refusals"] for r in sink.records) == total
    peers = {r["peer"] for r in sink.records}
    assert OVERFLOW_PEER in peers and len(peers) <= 2 + 5  # two tracked, the rest pooled
    # Per window: the tracked sources, the pool, and the pool's count from the window before.
    assert len(sink.records) <= 3 * (2 + 2) + 3
    assert all(r["principal"] == "" and r["reason"] == "TOKEN_INVALID" for r in sink.records)
