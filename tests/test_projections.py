"""Projections on both stores: exactly-once across crashes, rebuilds byte-identical to
incremental processing, erasure reaching every projection, lag, and the queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from ledger.application import CustomerLedger
from ledger.bootstrap import open_ledger
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.projections.quality import quality_report
from ledger.projections.queries import ListFilter
from ledger.projections.runner import ProjectionRunner
from ledger.projections.store import ProjectionDatabase
from ledger.projections.wiring import customer_queries, runner_of
from tests.helpers import StoreHandle, person
from tests.projection_support import Crash, Trail, dump_tables

ACTOR = "test-suite"
REPO = Path(__file__).resolve().parent.parent


def build_history(ledger: CustomerLedger) -> dict[str, UUID]:
    """Every kind of event, including a merge, an unmerge and an erasure."""
    ids = {
        "ada": ledger.register(person(given_name="Ada", emails=["ada@example.org"]), actor=ACTOR),
        "bob": ledger.register(
            person(
                given_name="Bob",
                emails=["bob@example.org"],
                phones=["+4930111111"],
                tags=["vip"],
                owner="sales.b",
                external_ids={"CRM": "B-1"},
            ),
            actor=ACTOR,
        ),
        "cy": ledger.register(
            {"family_name": "Cy", "addresses": [{"country": "FR", "postcode": "75001"}]},
            actor=ACTOR,
        ),
        "dee": ledger.register(person(given_name="Dee", emails=["dee@example.org"]), actor=ACTOR),
        "eve": ledger.register(person(given_name="Eve", emails=["eve@example.org"]), actor=ACTOR),
    }
    imported = ledger.register_many(
        [({"family_name": "Imp", "phones": ["+4930222222"]},
          [FieldViolation("birth_date", "not a real date (YYYY-MM-DD)")])],
        actor=ACTOR,
    )  # fmt: skip
    ids["imp"] = imported[0]
    ledger.change(ids["ada"], {"phones": ["+4930333333"], "tags": ["new"]}, actor=ACTOR)
    ledger.assign_owner(ids["ada"], "sales.a", actor=ACTOR)
    ledger.mark_verified(ids["bob"], actor=ACTOR)
    ledger.merge(ids["ada"], ids["bob"], take=["given_name"], actor=ACTOR)
    ledger.merge(ids["dee"], ids["eve"], actor=ACTOR)
    ledger.unmerge(ids["eve"], actor=ACTOR)
    ledger.change(ids["imp"], {"birth_date": "1970-01-01"}, actor=ACTOR)
    ledger.erase(ids["cy"], actor="dpo", legal_basis="GDPR Art. 17")
    return ids


def test_rebuild_gives_byte_identical_rows(store: StoreHandle) -> None:
    with store.open() as ledger:
        build_history(ledger)
        incremental = dump_tables(store)
        assert incremental["current_view"] and incremental["current_view_lookup"]
        runner = runner_of(ledger)
        rebuilt_events = runner.rebuild()
        assert rebuilt_events == runner.head()
        assert dump_tables(store) == incremental
        # One projection alone, in tiny batches: the same again.
        runner.batch_size = runner.rebuild_batch_size = 3
        runner.rebuild(["current_view"])
        assert dump_tables(store) == incremental
    with store.open() as reopened:  # a fresh process: no key cache, nothing in memory
        runner_of(reopened).rebuild()
        assert dump_tables(store) == incremental


def _customer_positions(ledger: CustomerLedger) -> list[int]:
    return [n.id for n in ledger.recorder.select_notifications(start=1, limit=10_000)]


def _trail(store: StoreHandle) -> list[int]:
    return sorted(int(r[0]) for r in store.execute("SELECT position FROM test_trail"))


def test_failure_inside_the_transaction_applies_nothing_twice_and_skips_nothing(
    store: StoreHandle,
) -> None:
    with store.open() as ledger:
        for i in range(12):
            ledger.register(person(given_name=f"N{i}"), actor=ACTOR)
        db = ProjectionDatabase.open(store.settings)
        runner = ProjectionRunner(ledger, db, [Trail(fail_at=7)], batch_size=5)
        runner.setup()
        with pytest.raises(Crash):
            runner.catch_up()
        # The batch holding position 7 rolled back with its position: 1..5 stay applied.
        assert _trail(store) == [1, 2, 3, 4, 5]
        assert runner.positions()["test_trail"] == 5
        assert runner.catch_up() == 7
        assert _trail(store) == _customer_positions(ledger) == list(range(1, 13))
        db.close()


def test_killed_process_mid_batch_leaves_nothing_half_applied(store: StoreHandle) -> None:
    with store.open() as ledger:
        for i in range(30):
            ledger.register(person(given_name=f"K{i}"), actor=ACTOR)
        expected = _customer_positions(ledger)
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from ledger.bootstrap import open_ledger
        from ledger.config import Settings
        from ledger.projections.runner import ProjectionRunner
        from ledger.projections.store import ProjectionDatabase
        from tests.projection_support import Trail
        settings = Settings(store_url={store.settings.store_url!r},
                            data_dir=Path({str(store.settings.data_dir)!r}),
                            projection_mode="worker")
        ledger = open_ledger(settings)
        runner = ProjectionRunner(ledger, ProjectionDatabase.open(settings),
                                  [Trail(exit_at=17)], batch_size=8)
        runner.setup()
        runner.catch_up()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 17, result.stderr
    assert _trail(store) == list(range(1, 17))  # two batches committed, the third died
    with store.open() as ledger:
        db = ProjectionDatabase.open(store.settings)
        runner = ProjectionRunner(ledger, db, [Trail()], batch_size=8)
        runner.setup()
        assert runner.positions()["test_trail"] == 16
        runner.catch_up()
        assert _trail(store) == expected
        db.close()


def test_concurrent_runners_apply_each_event_once(store: StoreHandle) -> None:
    with store.open() as ledger:
        for i in range(40):
            ledger.register(person(given_name=f"C{i}"), actor=ACTOR)
        databases = [ProjectionDatabase.open(store.settings) for _ in range(3)]
        runners = [ProjectionRunner(ledger, db, [Trail()], batch_size=4) for db in databases]
        runners[0].setup()
        errors: list[BaseException] = []

        def work(runner: ProjectionRunner) -> None:
            try:
                runner.catch_up()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert _trail(store) == _customer_positions(ledger)
        for db in databases:
            db.close()


def test_lag_is_visible_and_a_worker_catches_up(store: StoreHandle) -> None:
    worker_settings = replace(store.settings, projection_mode="worker")
    with open_ledger(worker_settings) as ledger:
        first = ledger.register(person(), actor=ACTOR)
        ledger.change(first, {"tags": ["x"]}, actor=ACTOR)
        runner = runner_of(ledger)
        status = {s.name: s for s in runner.status()}
        assert status["current_view"].lag == 2
        assert status["current_view"].head == 2
        stop = threading.Event()
        worker = threading.Thread(target=runner.run, args=(stop,), kwargs={"interval": 0.05})
        worker.start()
        try:
            assert runner.wait_until_caught_up(timeout=10)
            ledger.register(person(given_name="Later"), actor=ACTOR)
            assert runner.wait_until_caught_up(timeout=10)
        finally:
            stop.set()
            worker.join(timeout=10)
        assert not worker.is_alive()
        assert all(s.lag == 0 for s in runner.status())
        assert {s.name: s.rows for s in runner.status()}["current_view"] == 2


def test_erasure_removes_every_index_row_and_a_lagging_worker_cannot_bring_it_back(
    store: StoreHandle,
) -> None:
    worker_settings = replace(store.settings, projection_mode="worker")
    with open_ledger(worker_settings) as ledger:
        gone = ledger.register(person(tags=["vip"]), actor=ACTOR)
        ledger.change(gone, {"emails": ["other@example.org"]}, actor=ACTOR)
        runner = runner_of(ledger)
        runner.catch_up()
        ledger.change(gone, {"phones": ["+4930444444"]}, actor=ACTOR)  # not projected yet
        ledger.erase(gone, actor="dpo", legal_basis="GDPR Art. 17")
        # The purge ran with the erasure, before the worker saw any of the new events.
        _assert_no_trace(store, gone)
        runner.catch_up()  # the lagging worker now applies the change, then the erasure
        _assert_no_trace(store, gone)
        tombstone = store.execute(
            f"SELECT status, version, personal, owner, tags FROM current_view"
            f" WHERE customer_id = {store.ph}",
            (str(gone),),
        )
        assert tombstone == [("erased", 4, None, None, "[]")]
        incremental = dump_tables(store)
        runner.rebuild()
        assert dump_tables(store) == incremental


def _assert_no_trace(store: StoreHandle, customer_id: UUID) -> None:
    for table in ("current_view_lookup", "current_view_tags"):
        rows = store.execute(
            f"SELECT COUNT(*) FROM {table} WHERE customer_id = {store.ph}", (str(customer_id),)
        )
        assert rows[0][0] == 0, table
    quality = store.execute(
        f"SELECT status, score, missing, warnings FROM data_quality WHERE customer_id = {store.ph}",
        (str(customer_id),),
    )
    assert quality == [("erased", None, None, "[]")]
    personal = store.execute(
        f"SELECT personal, country FROM current_view WHERE customer_id = {store.ph}",
        (str(customer_id),),
    )
    assert personal == [(None, None)]


def test_reregistered_person_is_not_linked_to_the_erased_one(store: StoreHandle) -> None:
    profile = person(emails=["same@example.org"], external_ids={"CRM": "S-1"})
    with store.open() as ledger:
        old = ledger.register(profile, actor=ACTOR)
        queries = customer_queries(ledger)
        assert [r.id for r in queries.lookup(email="same@example.org")] == [old]
        ledger.erase(old, actor="dpo", legal_basis="GDPR Art. 17")
        _assert_no_trace(store, old)
        assert queries.lookup(email="same@example.org") == []
        new = ledger.register(profile, actor=ACTOR)
        assert new != old
        for query in ({"email": "SAME@example.org"}, {"phone": "+49 30 1234567"},
                      {"external_id": "CRM:S-1"}):  # fmt: skip
            assert [r.id for r in queries.lookup(**query)] == [new]
        linked = store.execute(
            f"SELECT COUNT(*) FROM current_view_lookup WHERE customer_id = {store.ph}",
            (str(old),),
        )
        assert linked[0][0] == 0
        assert queries.get(old) is not None and queries.get(old).status == "erased"  # type: ignore[union-attr]


def test_list_filters_order_and_page_tokens(store: StoreHandle) -> None:
    with store.open() as ledger:
        ids = []
        for i in range(7):
            ids.append(
                ledger.register(
                    person(given_name=f"P{i}", owner="sales.a" if i % 2 else "sales.b",
                           tags=["vip"] if i < 3 else [],
                           addresses=[{"country": "DE" if i < 5 else "FR"}]),
                    actor=ACTOR,
                )
            )  # fmt: skip
        queries = customer_queries(ledger)
        seen: list[UUID] = []
        token = None
        while True:
            page = queries.list_customers(page_size=3, page_token=token, order_by="created_at")
            seen += [r.id for r in page.records]
            token = page.next_page_token
            if token is None:
                break
        assert seen == ids
        newest_first = queries.list_customers(order_by="created_at", descending=True, page_size=2)
        assert [r.id for r in newest_first.records] == ids[::-1][:2]
        assert newest_first.next_page_token is not None
        again = queries.list_customers(
            order_by="created_at", descending=True, page_size=2,
            page_token=newest_first.next_page_token,
        )  # fmt: skip
        assert [r.id for r in again.records] == ids[::-1][2:4]
        assert {r.id for r in queries.list_customers(ListFilter(owner="sales.a")).records} == {
            ids[1],
            ids[3],
            ids[5],
        }
        assert {r.id for r in queries.list_customers(ListFilter(tag="vip")).records} == set(ids[:3])
        assert {r.id for r in queries.list_customers(ListFilter(country="fr")).records} == {
            ids[5],
            ids[6],
        }
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert queries.list_customers(ListFilter(updated_since=later)).records == []
        first = queries.list_customers(page_size=2)
        assert first.records[0].personal["given_name"] == "P0"  # type: ignore[index]
        with pytest.raises(ValidationFailed) as refused:
            queries.list_customers(ListFilter(owner="sales.a"), page_size=2,
                                   page_token=first.next_page_token)  # fmt: skip
        assert refused.value.violations[0].field == "page_token"
        with pytest.raises(ValidationFailed):
            queries.list_customers(page_token="not-a-token")
        with pytest.raises(ValidationFailed) as bad:
            queries.list_customers(ListFilter(status="gone", country="Deutschland"))
        assert {v.field for v in bad.value.violations} == {"status", "country"}


def test_quality_report_counts_missing_fields_warnings_and_reviews(store: StoreHandle) -> None:
    with store.open() as ledger:
        full = ledger.register(person(), actor=ACTOR)
        sparse = ledger.register({"family_name": "Sparse"}, actor=ACTOR)
        [flagged] = ledger.register_many(
            [(person(phones=[]), [FieldViolation("phones[0]", "not a valid phone number")])],
            actor=ACTOR,
        )
        ledger.mark_verified(full, actor=ACTOR)
        db = runner_of(ledger).db
        report = quality_report(db, review_after_days=365)
        assert report.customers == 3
        assert report.complete == 1
        assert report.with_warnings == 1
        assert report.review_due == 0
        assert report.worst[0].customer_id == str(sparse)
        assert report.worst[0].missing == [
            "given_name", "emails", "phones", "birth_date", "addresses", "postcode", "locality"
        ]  # fmt: skip
        assert report.worst[1].customer_id == str(flagged)
        assert report.worst[1].warnings == [
            {"field": "phones[0]", "reason": "not a valid phone number"}
        ]
        later = quality_report(db, review_after_days=30, now=datetime.now(UTC) + timedelta(days=31))
        assert later.review_due == 3
        # Fixing the field clears its warning; verifying resets the review clock.
        ledger.change(flagged, {"phones": ["+4930555555"]}, actor=ACTOR)
        ledger.mark_verified(flagged, actor=ACTOR)
        report = quality_report(db, review_after_days=365)
        assert report.with_warnings == 0
        assert report.complete == 2


def test_queries_decrypt_on_read_and_rows_do_not_open_elsewhere(store: StoreHandle) -> None:
    with store.open() as ledger:
        a = ledger.register(person(given_name="Ana"), actor=ACTOR)
        b = ledger.register(person(given_name="Ben"), actor=ACTOR)
        queries = customer_queries(ledger)
        assert queries.get(a).personal["given_name"] == "Ana"  # type: ignore[union-attr,index]
        # Copy Ana's sealed row into Ben's: it is bound to Ana's id and key, so it fails.
        sealed = store.execute(
            f"SELECT personal FROM current_view WHERE customer_id = {store.ph}", (str(a),)
        )[0][0]
        store.execute(
            f"UPDATE current_view SET personal = {store.ph} WHERE customer_id = {store.ph}",
            (sealed, str(b)),
        )
        from ledger.crypto_shred.mapper import SealError

        with pytest.raises(SealError):
            queries.get(b)
