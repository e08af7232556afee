"""The duplicate index projection on both stores: its key rows follow every event (register,
change, merge, unmerge, erase), a rebuild from 0 gives byte-identical rows, an erased
person re-imported is a new customer the index does not link to the erased one, and the
queries rank, explain and respect an owner restriction."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from ledger.application import CustomerLedger
from ledger.importer import CsvImporter, parse_mapping
from ledger.projections.duplicate_index import (
    DuplicateIndexProjection,
    TableKeyStore,
    members_query,
    save_model,
)
from ledger.projections.wiring import duplicate_queries, runner_of
from tests.helpers import PostgresStore, StoreHandle, person
from tests.projection_support import dump_tables

ACTOR = "test-suite"
TABLES = ("duplicate_keys", "duplicate_records")


def key_rows(store: StoreHandle, customer_id: UUID) -> set[bytes]:
    rows = store.execute(
        f"SELECT key_hash FROM duplicate_keys WHERE customer_id = {store.ph}", (str(customer_id),)
    )
    return {bytes(row[0]) for row in rows}


def expected_keys(ledger: CustomerLedger, customer_id: UUID) -> set[bytes]:
    """The keys the engine derives from the customer's current profile."""
    projection = runner_of(ledger).get(DuplicateIndexProjection.name)
    assert isinstance(projection, DuplicateIndexProjection)
    personal = ledger.get(customer_id).personal
    assert isinstance(personal, dict)
    return set(projection.keys_of(personal))


def test_key_rows_follow_register_change_merge_unmerge_and_erase(store: StoreHandle) -> None:
    with store.open() as ledger:
        ada = ledger.register(person(given_name="Ada", emails=["ada@example.org"]), actor=ACTOR)
        bob = ledger.register(
            person(given_name="Bob", family_name="Other", emails=["bob@example.org"],
                   phones=["+4930999999"], external_ids={"CRM": "B-2"}, birth_date="1970-02-02"),
            actor=ACTOR,
        )  # fmt: skip
        registered = key_rows(store, ada)
        assert registered == expected_keys(ledger, ada) and len(registered) >= 8
        assert all(len(key) == 16 for key in registered)  # keyed hashes, nothing readable

        ledger.change(ada, {"emails": ["ada.new@example.org"]}, actor=ACTOR)
        changed = key_rows(store, ada)
        assert changed == expected_keys(ledger, ada) and changed != registered
        assert len(changed - registered) == 1 and len(registered - changed) == 1  # re-keyed

        bobs = key_rows(store, bob)
        ledger.merge(ada, bob, take=["phones"], actor=ACTOR)
        assert key_rows(store, bob) == set()  # merged into Ada: no longer a candidate
        assert key_rows(store, ada) == expected_keys(ledger, ada) != changed  # absorbed

        ledger.unmerge(bob, actor=ACTOR)
        assert key_rows(store, bob) == bobs  # restored exactly
        assert key_rows(store, ada) == changed

        ledger.erase(ada, actor="dpo", legal_basis="GDPR Art. 17")
        assert key_rows(store, ada) == set()
        tombstone = store.execute(
            f"SELECT status, owner, personal FROM duplicate_records WHERE customer_id = {store.ph}",
            (str(ada),),
        )
        assert tombstone == [("erased", None, None)]
        assert key_rows(store, bob) == bobs


def _history(ledger: CustomerLedger) -> dict[str, UUID]:
    ids = {
        name: ledger.register(
            person(given_name=name, emails=[f"{name.lower()}@example.org"]), actor=ACTOR
        )
        for name in ("Ada", "Bea", "Cy", "Dee", "Eve")
    }
    ids["twin"] = ledger.register(person(given_name="Ada", emails=[]), actor=ACTOR)
    ledger.change(ids["Ada"], {"phones": ["+4930333333"]}, actor=ACTOR)
    ledger.assign_owner(ids["Bea"], "sales.b", actor=ACTOR)
    ledger.merge(ids["Ada"], ids["twin"], actor=ACTOR)
    ledger.merge(ids["Dee"], ids["Eve"], take=["given_name"], actor=ACTOR)
    ledger.unmerge(ids["Eve"], actor=ACTOR)
    ledger.erase(ids["Cy"], actor="dpo", legal_basis="GDPR Art. 17")
    return ids


def test_rebuild_from_zero_gives_byte_identical_rows(store: StoreHandle) -> None:
    with store.open() as ledger:
        ids = _history(ledger)
        incremental = dump_tables(store, TABLES)
        assert incremental["duplicate_keys"] and len(incremental["duplicate_records"]) == 6
        assert not any(row[1] == str(ids["Cy"]) for row in incremental["duplicate_keys"])
        runner = runner_of(ledger)
        runner.rebuild([DuplicateIndexProjection.name])
        assert dump_tables(store, TABLES) == incremental
        runner.rebuild_batch_size = 2  # batches that split merges and their targets
        runner.rebuild()
        assert dump_tables(store, TABLES) == incremental
    with store.open() as reopened:  # a fresh process: nothing cached
        runner_of(reopened).rebuild([DuplicateIndexProjection.name])
        assert dump_tables(store, TABLES) == incremental


def test_queries_rank_explain_and_respect_the_owner(store: StoreHandle) -> None:
    with store.open() as ledger:
        ada = ledger.register(person(owner="sales.a"), actor=ACTOR)
        typo = ledger.register(person(family_name="Persn", emails=[], owner="sales.b"), actor=ACTOR)
        other = ledger.register(
            person(given_name="Zed", family_name="Quux", emails=["z@example.org"],
                   phones=["+33123456789"], birth_date="1999-09-09", addresses=[],
                   external_ids={"CRM": "Z-9"}),
            actor=ACTOR,
        )  # fmt: skip
        queries = duplicate_queries(ledger)
        found = queries.candidates(person(emails=["new@example.org"]))
        assert [m.customer_id for m in found] == [str(ada), str(typo)]
        assert found[0].score >= found[1].score >= queries.threshold
        fields = {line.field: line.level for line in found[1].explanation}
        assert fields["given_name"] == "exact" and fields["family_name"] != "exact"
        assert str(other) not in {m.customer_id for m in queries.candidates(person(), 0.0)}
        mine = queries.candidates(person(), owner="sales.b")
        assert [m.customer_id for m in mine] == [str(typo)]
        assert [m.customer_id for m in queries.candidates_of(ada)] == [str(typo)]
        assert queries.candidates_of(ada, owner="sales.a") == []  # only itself is Ada's
        blocks = TableKeyStore(runner_of(ledger).db)
        keys = key_rows(store, ada) | key_rows(store, typo)
        shared = {k: set(m) for k, m in blocks.members(keys, 200).items() if len(m) > 1}
        assert shared and all(m == {str(ada), str(typo)} for m in shared.values())
        assert all(len(m) == 1 for m in blocks.members(keys, 1).values())  # big blocks skipped
        assert set(blocks.members(keys, 1)) == keys - set(shared)
        result = queries.report()
        assert [(p.first, p.second) for p in result.report.pairs] == [
            tuple(sorted((str(ada), str(typo))))
        ]
        assert result.external_ids[str(ada)] == {"CRM": "C-1"}


def test_reimported_erased_person_is_a_new_customer_not_linked_to_the_old(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["given", "family", "email", "born", "crm"])
        writer.writerow(["Ada", "Lovelace", "ada@example.org", "1915-12-10", "A-1"])
    mapping = parse_mapping(["given=given_name", "family=family_name", "email=emails",
                             "born=birth_date", "crm=external_id:CRM"])  # fmt: skip
    with store.open() as ledger:
        [(_, old)] = CsvImporter(ledger, mapping, actor=ACTOR).run(path).registered
        ledger.erase(old, actor="dpo", legal_basis="GDPR Art. 17")
        assert key_rows(store, old) == set()
        summary = CsvImporter(ledger, mapping, actor=ACTOR).run(path)
        [(_, new)] = summary.registered
        assert new != old and summary.duplicates == []  # nothing to warn about
        assert key_rows(store, new) == expected_keys(ledger, new)
        everyone = store.execute("SELECT DISTINCT customer_id FROM duplicate_keys")
        assert str(old) not in {row[0] for row in everyone}
        queries = duplicate_queries(ledger)
        assert queries.candidates_of(new, 0.0) == []
        assert queries.candidates({"given_name": "Ada", "family_name": "Lovelace"}, 0.0)[
            0
        ].customer_id == str(new)
        assert queries.report(0.0).report.pairs == ()


def test_import_warns_or_refuses_likely_duplicates_by_line(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["given", "family", "email", "born"])
        writer.writerow(["Ada", "Lovelace", "ada@example.org", "1915-12-10"])
        writer.writerow(["Grace", "Hopper", "grace@example.org", "1906-12-09"])
        writer.writerow(["Ada", "Lovelace", "ada@example.org", "1915-12-10"])  # same file
    mapping = parse_mapping(["given=given_name", "family=family_name", "email=emails",
                             "born=birth_date"])  # fmt: skip
    with store.open() as ledger:
        warned = CsvImporter(ledger, mapping, actor=ACTOR, duplicate_policy="warn").run(path)
        assert warned.imported == 3
        assert [(n.line, n.matches[0][0], n.rejected) for n in warned.duplicates] == [
            (4, "line 2", False)
        ]
        before = store.execute("SELECT COUNT(*) FROM current_view")[0][0]
        refused = CsvImporter(ledger, mapping, actor=ACTOR, duplicate_policy="refuse").run(path)
        assert (refused.imported, refused.rejected) == (0, 3)
        ada_ids = {str(i) for line, i in warned.registered if line in (2, 4)}
        assert {n.line for n in refused.duplicates} == {2, 3, 4}
        assert {of for of, _ in refused.duplicates[0].matches} == ada_ids
        assert "Ada" not in str(refused.duplicates[0]) and "ada@" not in str(refused.to_json())
        assert store.execute("SELECT COUNT(*) FROM current_view")[0][0] == before


def test_fitted_model_is_stored_and_survives_a_rebuild(store: StoreHandle) -> None:
    with store.open() as ledger:
        ledger.register(person(), actor=ACTOR)
        queries = duplicate_queries(ledger)
        assert queries.model.method == "start"  # nothing fitted yet
        fitted = replace(queries.model, prior=0.25, method="em", pairs=1234)
        save_model(runner_of(ledger).db, fitted)
        save_model(runner_of(ledger).db, fitted)  # replaces, one row
        runner_of(ledger).rebuild([DuplicateIndexProjection.name])
        rows = store.execute("SELECT name, model FROM duplicate_model")
        assert len(rows) == 1 and json.loads(rows[0][1])["prior"] == 0.25
    # Another process (or this one, once its loaded model is older than MODEL_TTL) uses it.
    with store.open() as reopened:
        assert duplicate_queries(reopened).model.as_dict() == fitted.as_dict()


def _key(text: str) -> bytes:
    return text.encode().rjust(16, b"0")


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_block_lookup_reads_only_the_blocks_asked_for(store: StoreHandle) -> None:
    """Every registration looks its blocking keys up: the cost must follow the blocks asked
    for, not the size of the index. Checked on a fresh, never-analysed index (PostgreSQL
    then estimates block sizes blindly, as a new ledger's does) in the plan a prepared
    statement gets after a few runs (the generic one): no step reads the whole table."""
    with store.open() as ledger:
        db = runner_of(ledger).db
        rows = [(_key(str(i)), f"c{i}") for i in range(20_000)]
        rows += [(_key("pair"), "c1"), (_key("pair"), "c2")]
        rows += [(_key("big"), f"c{i}") for i in range(300)]
        with db.transaction() as tx:
            tx.executemany("INSERT INTO duplicate_keys (key_hash, customer_id) VALUES (?, ?)", rows)
        wanted = [_key("1"), _key("2"), _key("pair"), _key("big"), _key("absent")]

        found = TableKeyStore(db).members(wanted, max_block=200)
        assert {k: sorted(v) for k, v in found.items()} == {
            _key("1"): ["c1"],
            _key("2"): ["c2"],
            _key("pair"): ["c1", "c2"],
        }  # the block of 300 is too common to compare: left out, its members never read

        with db.reading() as tx:
            query, params = members_query(tx, sorted(wanted), 200)
            if not tx.is_postgres:
                plan = [str(r[-1]) for r in tx.rows(f"EXPLAIN QUERY PLAN {query}", params)]
                assert plan and not [step for step in plan if step.startswith("SCAN")], plan
                return
    assert isinstance(store, PostgresStore)
    numbered = query
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE members (bytea[], bigint) AS {numbered}")
        cursor = psycopg.ClientCursor(conn)
        cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE members (%s, %s)", params)
        row = cursor.fetchone()
        assert row is not None
        nodes = list(_plan_nodes(row[0][0]["Plan"]))
    scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "duplicate_keys"]
    assert scans and "Seq Scan" not in scans, scans


@pytest.mark.parametrize("store", ["postgres"], indirect=True)  # a PostgreSQL plan cache
def test_block_lookup_stays_on_the_index_as_a_new_table_grows(store: StoreHandle) -> None:
    """psycopg prepares a statement after a few runs and PostgreSQL may then keep one
    generic plan for it; made while the table was small (a new ledger, every rebuild), that
    plan scans the table, and would go on scanning it as it grows. What the server would run
    for the look-up on the same connection, once the table is large, reads by index."""
    assert isinstance(store, PostgresStore)
    with store.open() as ledger:
        db = runner_of(ledger).db
        blocks = TableKeyStore(db)

        def grow(start: int, end: int) -> None:
            with db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO duplicate_keys (key_hash, customer_id) VALUES (?, ?)",
                    [(_key(str(i)), f"c{i}") for i in range(start, end)],
                )

        grow(100, 400)  # a new ledger's first few customers
        for _ in range(15):  # prepared, then planned generically, on the small table
            assert blocks.members([_key("1"), _key("2")], max_block=200) == {}
        grow(0, 100)
        grow(400, 20_000)
        assert blocks.members([_key("1"), _key("2")], max_block=200) == {
            _key("1"): ["c1"],
            _key("2"): ["c2"],
        }
        with db.reading() as tx:  # the connection the look-ups just used (idle readers are reused)
            prepared = tx.rows(
                "SELECT name FROM pg_prepared_statements WHERE statement LIKE ?",
                ["%FROM duplicate_keys WHERE key_hash = ANY%"],
            )
            assert len(prepared) == 1
            explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {} ({}, {})").format(
                sql.Identifier(str(prepared[0][0])),
                sql.Literal(sorted([_key("1"), _key("2")])),
                sql.Literal(200),
            )
            plan = tx.rows(explain.as_string())[0][0]
    scans = [n["Node Type"] for n in _plan_nodes(plan[0]["Plan"])]
    assert "Seq Scan" not in scans, scans
