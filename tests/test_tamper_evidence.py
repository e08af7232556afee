"""Tamper evidence, the way an attacker with database access would try it: each test changes
the stored data directly in SQL, then runs `ledger verify` as a real process, which must exit
4 and name the first bad position (and passes on the untouched store)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.audit import merkle
from ledger.audit.leaf import encode_leaf
from ledger.config import Settings
from tests import test_cli
from tests.conftest import fresh_postgres_database
from tests.helpers import PostgresStore, SQLiteStore, StoreHandle, person


@pytest.fixture(scope="module")
def module_database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandle]:
    """As conftest's `store`, but the PostgreSQL tests of this module share one database,
    emptied before each test (dropping its schema takes milliseconds; creating and dropping
    a database per test took most of this file's time)."""
    data_dir = tmp_path / "ledger-data"
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'ledger.db'}"
        yield SQLiteStore(settings=Settings(store_url=url, data_dir=data_dir), workdir=data_dir)
        return
    url = request.getfixturevalue("module_database")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"DROP SCHEMA public CASCADE")
        conn.execute(b"CREATE SCHEMA public")
    settings = Settings(store_url=url, data_dir=data_dir)
    yield PostgresStore(settings=settings, workdir=data_dir, dsn=url)


@dataclass
class Story:
    """Two sessions: heads of size 3 and 7 are signed when each closes.

    position: 1 a v1 | 2 b v1 | 3 a v2 | 4 c v1 | 5 read of a | 6 b v2 | 7 a v3
    """

    a: UUID
    b: UUID
    c: UUID
    positions: dict[tuple[UUID, int], int]
    read_position: int


def tell(store: StoreHandle) -> Story:
    with store.open() as ledger:
        a = ledger.register(person(), actor="clerk")
        b = ledger.register(person(given_name="Bea"), actor="clerk")
        ledger.change(a, {"tags": ["vip"]}, actor="clerk")
    with store.open() as ledger:
        c = ledger.register(person(given_name="Cy"), actor="clerk")
        ledger.read(a, principal="auditor", purpose="check")
        ledger.assign_owner(b, "team.x", actor="clerk")
        ledger.change(a, {"tags": ["vip", "gold"]}, actor="clerk")
    rows = store.execute(
        f"SELECT {position(store)}, originator_id, originator_version FROM {store.events_table} "
        f"ORDER BY {position(store)}"
    )
    positions = {(UUID(str(oid)), int(v)): int(p) for p, oid, v in rows}
    read = next(p for (oid, _), p in positions.items() if oid not in (a, b, c))
    return Story(a, b, c, positions, read)


def position(store: StoreHandle) -> str:
    return "rowid" if store.ph == "?" else "notification_id"


def raw_id(store: StoreHandle, customer_id: UUID) -> Any:
    return customer_id.hex if store.ph == "?" else customer_id


def verify(store: StoreHandle, *extra: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    result = test_cli.run(store, "verify", "--json", *extra, check=False)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def assert_fails_at(store: StoreHandle, expected: int, *words: str) -> dict[str, Any]:
    result, report = verify(store)
    assert result.returncode == 4, result.stderr
    assert f"FAILED at position {expected}:" in result.stderr, result.stderr
    first = report["first_problem"]
    assert first["position"] == expected, report
    for word in words:
        assert word in first["problem"], first
    assert "Traceback" not in result.stderr
    return dict(report)


def test_the_untouched_log_verifies(store: StoreHandle) -> None:
    tell(store)
    result, report = verify(store)
    assert result.returncode == 0, result.stderr
    assert report["ok"] and report["events"] == 7 and report["tree_heads"] == 2
    text = test_cli.run(store, "verify")
    assert "OK: no event was altered" in text.stdout


def test_one_flipped_byte_in_one_events_state(store: StoreHandle) -> None:
    story = tell(store)
    store.flip_sealed_byte(story.b, 1)
    assert_fails_at(store, story.positions[(story.b, 1)], "does not match leaf 1")


def test_a_changed_topic(store: StoreHandle) -> None:
    story = tell(store)
    store.execute(
        f"UPDATE {store.events_table} SET topic = {store.ph} "
        f"WHERE originator_id = {store.ph} AND originator_version = 2",
        ("ledger.domain.customer:Customer.Verified", raw_id(store, story.b)),
    )
    assert_fails_at(store, story.positions[(story.b, 2)], "does not match")


def test_a_deleted_event(store: StoreHandle) -> None:
    story = tell(store)
    store.execute(
        f"DELETE FROM {store.events_table} WHERE originator_id = {store.ph} "
        "AND originator_version = 2",
        (raw_id(store, story.a),),
    )
    report = assert_fails_at(store, story.positions[(story.a, 2)], "missing", "deleted")
    # ... and a's versions now have a gap, found at its next event:
    assert any("version 3 follows version 1" in p["problem"] for p in report["problems"])


def test_two_events_swapped(store: StoreHandle) -> None:
    story = tell(store)
    first, second = story.positions[(story.a, 1)], story.positions[(story.c, 1)]
    column, table, ph = position(store), store.events_table, store.ph
    store.execute(f"UPDATE {table} SET {column} = -1 WHERE {column} = {ph}", (first,))
    store.execute(f"UPDATE {table} SET {column} = {ph} WHERE {column} = {ph}", (first, second))
    store.execute(f"UPDATE {table} SET {column} = {ph} WHERE {column} = -1", (second,))
    assert_fails_at(store, first, "does not match leaf 0")


def test_a_forged_event_inserted(store: StoreHandle) -> None:
    story = tell(store)
    state = store.state_of(story.a, 3)  # a plausible next version of a
    store.execute(
        f"INSERT INTO {store.events_table} (originator_id, originator_version, topic, state) "
        f"VALUES ({store.ph}, 4, 'ledger.domain.customer:Customer.ProfileChanged', {store.ph})",
        (raw_id(store, story.a), state),
    )
    forged = max(story.positions.values()) + 1
    assert_fails_at(store, forged, "inserted after the fact")


def test_the_tail_of_the_log_deleted(store: StoreHandle) -> None:
    story = tell(store)
    cut = story.positions[(story.b, 2)]
    store.execute(f"DELETE FROM {store.events_table} WHERE {position(store)} >= {cut}")
    assert_fails_at(store, cut, "deleted")


def test_the_log_and_its_tree_truncated_together(store: StoreHandle, tmp_path: Path) -> None:
    story = tell(store)
    saved = tmp_path / "head.json"
    saved.write_text(test_cli.run(store, "tree-head").stdout)
    keep = story.read_position  # keep 5 events
    store.execute(f"DELETE FROM {store.events_table} WHERE {position(store)} > {keep}")
    store.execute("DELETE FROM ledger_merkle_leaves WHERE leaf_index >= 5")
    result, report = verify(store)
    assert result.returncode == 4
    first = report["first_problem"]
    assert "covers 7 events but the log holds 5" in first["problem"]
    assert f"after position {keep} were removed (truncated)" in first["problem"]
    # Even with the signed heads that covered the tail deleted too, the head published
    # outside the database exposes it, and so does the auditor's own saved head.
    store.execute("DELETE FROM ledger_tree_heads WHERE tree_size > 5")
    result, report = verify(store)
    assert result.returncode == 4
    assert "the published tree head (size 7" in report["first_problem"]["problem"]
    assert "truncated" in result.stderr
    result, report = verify(store, "--no-published-heads")
    assert result.returncode == 0, "nothing left in the database contradicts itself"
    result, report = verify(store, "--from-tree-head", str(saved))
    assert result.returncode == 4
    assert "your saved tree head (size 7" in report["first_problem"]["problem"]
    assert "truncated" in result.stderr


def test_an_altered_tree_head(store: StoreHandle) -> None:
    story = tell(store)
    store.execute(
        "UPDATE ledger_tree_heads SET timestamp_ms = timestamp_ms + 1 WHERE tree_size = 3"
    )
    report = assert_fails_at(store, story.positions[(story.a, 2)], "tree head #1 (size 3")
    assert "signature does not verify" in report["first_problem"]["problem"]


def test_a_rewrite_of_events_and_tree_together_is_caught_by_the_signed_heads(
    store: StoreHandle,
) -> None:
    """The attacker alters an event and recomputes every leaf and node; only the
    signatures, which need the ledger's private key, still tell."""
    story = tell(store)
    store.flip_sealed_byte(story.b, 1)
    rows = store.execute(
        f"SELECT {position(store)}, originator_id, originator_version, topic, state "
        f"FROM {store.events_table} ORDER BY {position(store)}"
    )
    leaves: list[tuple[int, int, bytes, bytes]] = []
    frontier = merkle.Frontier()
    completed = bytearray()
    for pos, oid, version, topic, state in rows:
        leaf = encode_leaf(int(pos), str(UUID(str(oid))), int(version), topic, bytes(state))
        hashed = merkle.leaf_hash(leaf)
        index = frontier.size
        completed.clear()
        frontier.append(hashed, lambda node, h: completed.extend(h))
        leaves.append((index, int(pos), hashed, bytes(completed)))
    store.execute("DELETE FROM ledger_merkle_leaves")
    for row in leaves:
        store.execute(
            "INSERT INTO ledger_merkle_leaves (leaf_index, position, leaf_hash, nodes) "
            f"VALUES ({store.ph}, {store.ph}, {store.ph}, {store.ph})",
            row,
        )
    start = story.positions[(story.a, 1)]
    # With the ledger's private key, the leaves' MACs (which the attacker could not
    # compute) give the rewrite away at once.
    assert_fails_at(store, start, "has no MAC")
    # An auditor with the public key alone (on a host without the private key): the
    # signed heads tell.
    public_key = store.workdir / "ledger.pub"
    public_key.write_text(test_cli.run(store, "public-key").stdout)
    private_key = store.settings.resolved_signing_key_file
    private_key.rename(private_key.with_suffix(".away"))
    try:
        result, report = verify(store, "--public-key", str(public_key))
    finally:
        private_key.with_suffix(".away").rename(private_key)
    assert result.returncode == 4, result.stderr
    first = report["first_problem"]
    assert first["position"] == start and "tree head #1 (size 3" in first["problem"], report
    assert f"from position {start} to {story.positions[(story.a, 2)]}" in str(report)
    assert report["leaf_macs_checked"] is False


def test_a_tampered_access_record(store: StoreHandle) -> None:
    story = tell(store)
    column = position(store)
    state = bytes(
        store.execute(
            f"SELECT state FROM {store.events_table} WHERE {column} = {store.ph}",
            (story.read_position,),
        )[0][0]
    )
    assert b'"principal":"auditor"' in state
    store.execute(
        f"UPDATE {store.events_table} SET state = {store.ph} WHERE {column} = {store.ph}",
        (state.replace(b"auditor", b"nobody!"), story.read_position),
    )
    assert_fails_at(store, story.read_position, "does not match")


def test_an_altered_interior_node_of_the_proof_cache(store: StoreHandle) -> None:
    story = tell(store)
    # Leaf 3 completes the level-1 node over leaves 2-3 and the level-2 node over 0-3.
    nodes = bytes(
        store.execute("SELECT nodes FROM ledger_merkle_leaves WHERE leaf_index = 3")[0][0]
    )
    assert len(nodes) == 64
    store.execute(
        f"UPDATE ledger_merkle_leaves SET nodes = {store.ph} WHERE leaf_index = 3",
        (nodes[:32] + b"\x00" * 32,),
    )
    assert_fails_at(store, story.positions[(story.c, 1)], "proof cache")


def test_verify_explains_missing_or_bad_input(store: StoreHandle, tmp_path: Path) -> None:
    tell(store)
    bad = tmp_path / "head.json"
    bad.write_text('{"type": "something else"}')
    result, _ = verify(store, "--from-tree-head", str(bad))
    assert result.returncode == 2
    assert "not a tree head" in result.stderr and "Traceback" not in result.stderr
    result, _ = verify(store, "--from-tree-head", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert "from_tree_head: cannot be read" in result.stderr
