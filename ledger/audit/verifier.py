"""The independent verifier: everything `ledger verify` checks, from the database and the
public key alone (no data keys, no application, no trust in any derived table).

In one pass over a consistent snapshot of the store it

1. recomputes every event's leaf from the stored event (bytes and envelope) and lines the
   events up, by position, with the leaves the writer appended when they committed: an event
   with no leaf was inserted after the fact, a leaf with no event was deleted, a leaf whose
   hash differs was altered, replaced or moved (the position is inside the leaf);
2. rebuilds the tree from the recomputed leaves and, wherever a signed tree head was issued,
   compares the root with the signed root — this check trusts no stored hash, so it catches
   a rewrite of events *and* tree table together;
3. checks every stored tree head's Ed25519 signature, the last head published outside the
   database (its root, at its size, from the events), and optionally an auditor's saved
   head (signature, then root, then an RFC 9162 consistency proof to the newest head);
   with the ledger's private key, it also checks every leaf's MAC (`leaf_mac.py`), which
   catches a leaf appended or rewritten by someone without the key even before any head;
4. checks that every aggregate's versions run 1, 2, 3 … in log order, without gaps;
5. compares the stored interior nodes (the proof cache) with those rebuilt from the events.

Problems are reported in log order; the first is the answer to "where was it tampered
with". A tree-head mismatch that an earlier problem explains is marked as its consequence.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.audit import client_check, merkle
from ledger.audit.leaf_mac import LeafMac
from ledger.audit.storage import AuditStore, AuditStoreError
from ledger.audit.tree_heads import TreeHead
from ledger.signing import public_key_id

MAX_PROBLEMS = 50
# The leaf hash's input up to the originator id: 0x00 (leaf prefix), format 1, position, id length.
_HEAD = struct.Struct(">BBQH").pack
# ... and for a 36-character (UUID) id, through the version.
_UUID_HEAD = struct.Struct(">BBQH36sQ").pack
_Q = struct.Struct(">Q").pack
_I = struct.Struct(">I").pack
_H = struct.Struct(">H").pack
_sha256 = hashlib.sha256


@dataclass(frozen=True)
class Problem:
    position: int | None  # the event position the problem is at (None: not tied to one)
    what: str
    consequence: bool = False  # explained by an earlier problem

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "problem": self.what, "consequence": self.consequence}

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "log"
        return f"{where}: {self.what}"


@dataclass
class Report:
    events: int = 0
    leaves: int = 0
    interior_nodes: int = 0
    aggregates: int = 0
    tree_heads: int = 0
    latest_tree_size: int = 0
    uncovered: int = 0  # leaves after the newest valid tree head
    saved_tree_head: int | None = None  # size of the auditor's head, when one was given
    published_tree_head: int | None = None  # size of the published head checked against
    leaf_macs_checked: bool = False
    # Restores declared in the publication file (signed statements; information, not
    # problems): what the published heads abandoned.
    restores: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    truncated_report: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        primary = [p for p in self.problems if not p.consequence]
        listed = primary or self.problems
        return listed[0] if listed else None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "ok": self.ok,
            "events": self.events,
            "leaves": self.leaves,
            "interior_nodes": self.interior_nodes,
            "aggregates": self.aggregates,
            "tree_heads": self.tree_heads,
            "latest_tree_size": self.latest_tree_size,
            "uncovered_leaves": self.uncovered,
            "saved_tree_head_size": self.saved_tree_head,
            "published_tree_head_size": self.published_tree_head,
            "leaf_macs_checked": self.leaf_macs_checked,
            "restores": self.restores,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate),
            "first_problem": first.to_json() if first else None,
            "problems": [p.to_json() for p in self.problems],
            "more_problems_not_listed": self.truncated_report,
        }


@dataclass(frozen=True)
class _Checkpoint:
    """A root the rebuilt tree must have once it holds `size` leaves."""

    label: str
    size: int
    root: bytes
    refused: str | None  # why its signature does not hold; reported when the scan reaches it


def verify(
    store: AuditStore,
    public_key_pem: str,
    *,
    saved_head: TreeHead | None = None,
    published_head: TreeHead | None = None,
    unpublished: str | None = None,
    leaf_key: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check the whole log; `progress(n)` is told every so often how many events are done.

    `published_head`: the last head published outside the database, checked like a saved
    one. `unpublished`: why there is none (reported as a problem when the database holds
    signed heads: they are then the only record of what was signed, and someone with the
    database may have rewritten them). `leaf_key`: check every leaf's MAC."""
    started = time.perf_counter()
    store.check_tables()
    with store.snapshot():
        run = _Verification(store, public_key_pem, saved_head, progress)
        run.published(published_head, public_key_pem, unpublished)
        run.leaf_key = leaf_key
        run.report.leaf_macs_checked = leaf_key is not None
        run.scan()
        run.finish()
    run.report.seconds = time.perf_counter() - started
    return run.report


class _Verification:
    def __init__(
        self,
        store: AuditStore,
        public_key_pem: str,
        saved: TreeHead | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.store = store
        self.saved = saved
        self.progress = progress
        self.report = Report()
        self.primary_seen = False
        self.heads = store.tree_heads()
        self.report.tree_heads = len(self.heads)
        self.checkpoints: dict[int, list[_Checkpoint]] = {}
        self.newest_signed = 0
        given_key = public_key_id(public_key_pem)
        for number, head in enumerate(self.heads, 1):
            refused = _refusal(head, public_key_pem, given_key)
            if refused is None:
                self.newest_signed = max(self.newest_signed, head.tree_size)
            label = f"tree head #{number} (size {head.tree_size}, issued {_when(head)})"
            self._add(_Checkpoint(label, head.tree_size, head.root_hash, refused))
        if saved is not None:
            self.report.saved_tree_head = saved.tree_size
            label = f"your saved tree head (size {saved.tree_size}, issued {_when(saved)})"
            refused = _refusal(saved, public_key_pem, given_key)
            if refused is None:
                self._add(_Checkpoint(label, saved.tree_size, saved.root_hash, None))
            else:
                self.problem(None, f"{label}: {refused}")
        self.last_position = 0
        self.leaf_key: bytes | None = None

    def published(self, head: TreeHead | None, public_key_pem: str, missing: str | None) -> None:
        if head is None:
            if missing is not None and self.heads:
                self.problem(
                    None,
                    f"the database holds {len(self.heads)} signed tree head(s) but {missing}: "
                    "the log cannot be checked against what was published",
                )
            return
        self.report.published_tree_head = head.tree_size
        label = f"the published tree head (size {head.tree_size}, issued {_when(head)})"
        refused = _refusal(head, public_key_pem, public_key_id(public_key_pem))
        if refused is None:
            self.newest_signed = max(self.newest_signed, head.tree_size)
            self._add(_Checkpoint(label, head.tree_size, head.root_hash, None))
        else:
            self.problem(None, f"{label}: {refused}")

    def _add(self, point: _Checkpoint) -> None:
        self.checkpoints.setdefault(point.size, []).append(point)

    def problem(self, position: int | None, what: str, *, consequence: bool = False) -> None:
        if not consequence:
            self.primary_seen = True
        if len(self.report.problems) >= MAX_PROBLEMS:
            self.report.truncated_report = True
            return
        self.report.problems.append(Problem(position, what, consequence))

    # The pass over the log ----------------------------------------------------------------

    def scan(self) -> None:
        """One pass, events and stored tree side by side. The per-event path is written
        out inline (no helper calls, no big byte concatenations): it is what sets the
        verifier's speed."""
        store, report, problem, progress = self.store, self.report, self.problem, self.progress
        checkpoints = self.checkpoints
        mac_of = LeafMac(self.leaf_key) if self.leaf_key is not None else None
        events = store.raw_events()
        sha256 = _sha256
        head_pack, q_pack, i_pack, uuid_pack = _HEAD, _Q, _I, _UUID_HEAD
        topics: dict[str, bytes] = {}
        versions: dict[str, int] = {}
        # The tree rebuilt from the events: peak hashes, largest first, and its size.
        peaks: list[bytes] = []
        size = 0
        aligned = True  # events and stored leaves agree so far
        leaf_rows = node_bytes = 0
        range_start: int | None = None  # first position after the last matching head
        next_index = 0
        last_position = 0

        def take(row: tuple[Any, ...]) -> bytes:
            """The slow path's copy of the inline code below (inserted events)."""
            nonlocal size, range_start
            position, oid, version, topic, state = row
            if not isinstance(state, bytes):
                state = _as_bytes(state)
            oid_b = oid.encode()
            hasher = sha256(
                head_pack(0, 1, position, len(oid_b)) + oid_b + q_pack(version)
                + _topic(topics, topic) + i_pack(len(state))
            )  # fmt: skip
            hasher.update(state)
            hashed = hasher.digest()
            self._version(versions, oid, version, position)
            if range_start is None:
                range_start = position
            index, node = size, hashed
            while index & 1:
                node = sha256(b"\x01" + peaks.pop() + node).digest()
                index >>= 1
            peaks.append(node)
            size += 1
            points = checkpoints.get(size)
            if points is not None and self._check(points, peaks, range_start, position):
                range_start = None
            return hashed

        event = next(events, None)
        for last, position, stored_hash, stored_nodes, stored_mac in store.tree_rows():
            leaf_rows += 1
            node_bytes += len(stored_nodes)
            if last != next_index:
                problem(position, f"the Merkle tree table is damaged at leaf {next_index}")
                next_index = last + 1
                aligned = False
                continue
            next_index += 1
            if position <= last_position:
                problem(position, f"leaf {last} is out of log order (after {last_position})")
            last_position = position
            while event is not None and event[0] < position:
                take(event)
                problem(event[0], "this event is in no Merkle leaf: it was inserted after the fact")
                aligned = False
                event = next(events, None)
            if event is None or event[0] != position:
                problem(position, f"the event logged as leaf {last} is missing: it was deleted")
                aligned = False
                continue
            # --- the hot path: one stored event, lined up with its leaf -----------------
            _, oid, version, topic, state = event
            if state.__class__ is not bytes:
                state = _as_bytes(state)
            oid_b = oid.encode()
            encoded_topic = topics.get(topic) or _topic(topics, topic)
            if len(oid_b) == 36:  # a UUID: everything up to the topic in one pack
                hasher = sha256(
                    uuid_pack(0, 1, position, 36, oid_b, version)
                    + encoded_topic + i_pack(len(state))
                )  # fmt: skip
            else:
                hasher = sha256(
                    head_pack(0, 1, position, len(oid_b)) + oid_b + q_pack(version)
                    + encoded_topic + i_pack(len(state))
                )  # fmt: skip
            hasher.update(state)
            hashed = hasher.digest()
            if versions.get(oid, 0) + 1 != version:
                self._version(versions, oid, version, position)
            versions[oid] = version
            if range_start is None:
                range_start = position
            if size & 1:
                index, node, fresh = size, hashed, b""
                while index & 1:
                    node = sha256(b"\x01" + peaks.pop() + node).digest()
                    fresh += node
                    index >>= 1
                peaks.append(node)
            else:
                peaks.append(hashed)
                fresh = b""
            size += 1
            if hashed != stored_hash:
                aligned = False
                problem(
                    position,
                    f"the stored event ({oid} v{version}) does not match leaf {last}, logged "
                    "when it was written: its bytes, type, customer, version or position "
                    "were changed",
                )
            elif mac_of is not None and stored_mac != mac_of(last, hashed):
                # A leaf that matches its event but not its MAC was computed by someone
                # without the ledger's key: the event was forged or rewritten with it.
                aligned = False
                problem(
                    position,
                    f"leaf {last} ({oid} v{version}) "
                    + ("has no MAC" if stored_mac is None else "has a MAC that does not hold")
                    + ": the event and its leaf were written or rewritten in the database, "
                    "not by the ledger",
                )
            elif aligned and fresh != stored_nodes:
                # While events and leaves agree both trees are the same, so the stored
                # interior nodes must be the ones rebuilt from the events.
                aligned = False
                problem(
                    position,
                    f"the interior nodes stored with leaf {last} do not match the leaves: the "
                    "tree table (proof cache) was altered",
                )
            # After this event's own checks, so that a problem at this very event is
            # reported before the head it breaks (which is then its consequence).
            points = checkpoints.get(size)
            if points is not None and self._check(points, peaks, range_start, position):
                range_start = None
            if progress is not None and not size % 10_000:
                progress(size)
            event = next(events, None)
        while event is not None:
            take(event)
            problem(event[0], "this event is in no Merkle leaf: it was inserted after the fact")
            last_position = max(last_position, event[0])
            event = next(events, None)
        report.events = size
        report.leaves = leaf_rows
        report.interior_nodes = node_bytes // merkle.HASH_SIZE
        report.aggregates = len(versions)
        self.last_position = last_position
        if progress is not None:
            progress(size)

    def _version(self, versions: dict[str, int], oid: str, version: int, position: int) -> None:
        previous = versions.get(oid, 0)
        if version != previous + 1:
            self.problem(
                position,
                f"{oid} version {version} follows version {previous}: versions must run "
                "1, 2, 3 … without gaps",
            )
        versions[oid] = version

    def _check(
        self, points: list[_Checkpoint], peaks: list[bytes], range_start: int | None, position: int
    ) -> bool:
        """Compare the rebuilt root with every head of this size; True if all matched."""
        root = merkle.fold(peaks)
        matched = True
        for point in points:
            if point.refused is not None:
                self.problem(position, f"{point.label}: {point.refused}")
                matched = False
            elif point.root != root:
                matched = False
                if self.primary_seen:
                    self.problem(position, f"{point.label} no longer matches", consequence=True)
                else:
                    self.problem(
                        range_start,
                        f"the events from position {range_start} to {position} do not hash to "
                        f"the root signed in {point.label}: they were rewritten together with "
                        "the Merkle tree table",
                    )
        return matched

    # After the pass -----------------------------------------------------------------------

    def finish(self) -> None:
        report = self.report
        size = report.events
        for head_size in sorted(self.checkpoints):
            if head_size <= size:
                continue
            for point in self.checkpoints[head_size]:
                self.problem(
                    None,
                    f"{point.label} covers {head_size} events but the log holds {size}: the "
                    f"events after position {self.last_position} were removed (truncated)",
                    consequence=self.primary_seen,
                )
        report.latest_tree_size = self.newest_signed
        report.uncovered = max(0, report.leaves - self.newest_signed)
        if self.saved is not None and report.ok and self.heads:
            self._saved_head_connects(self.saved, self.heads[-1])

    def _saved_head_connects(self, saved: TreeHead, newest: TreeHead) -> None:
        """The auditor's own check, as `client_check` would do it: a consistency proof
        from the stored tree, from their head to the newest head."""
        if saved.tree_size > newest.tree_size:
            return  # reported above as truncation
        try:
            ranges = merkle.consistency_ranges(saved.tree_size, newest.tree_size)
            client_check.verify_consistency(
                saved.tree_size,
                newest.tree_size,
                saved.root_hash,
                newest.root_hash,
                self.store.range_hashes(ranges),
            )
        except (client_check.CheckFailed, AuditStoreError) as exc:
            self.problem(None, f"no consistency proof from your saved tree head: {exc}")


def _refusal(head: TreeHead, public_key_pem: str, given_key: str) -> str | None:
    if head.key_id != given_key:
        return f"it names signing key {head.key_id}, not the key given ({given_key})"
    if not head.verify(public_key_pem):
        return (
            "its signature does not verify with this ledger's key "
            "(the tree head was altered or forged)"
        )
    return None


def _when(head: TreeHead) -> str:
    return head.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _topic(cache: dict[str, bytes], topic: str) -> bytes:
    """u16 length and UTF-8 bytes of a topic, computed once per topic."""
    encoded = cache.get(topic)
    if encoded is None:
        raw = str(topic).encode()
        encoded = cache[topic] = _H(len(raw)) + raw
    return encoded


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return str(value).encode("utf-8")  # a tampered SQLite cell may hold text
