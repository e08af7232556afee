"""Wiring: the projections every ledger process feeds, and how they hook into it.

`attach_projections` runs when a ledger opens: it creates the projection tables if needed,
registers the erasure purger (so an erasure drops every derived copy in the same step) and,
in `inline` mode, the catch-up after each save. A new projection adds its factory to
`PROJECTION_FACTORIES`; the runner, `ledger project`, `ledger rebuild` and
`ledger projections` then handle it like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from ledger.projections.base import Projection
from ledger.projections.current_view import CurrentView
from ledger.projections.duplicate_index import DuplicateIndexProjection
from ledger.projections.duplicates import DuplicateQueries
from ledger.projections.index_key import IndexKey
from ledger.projections.quality import DataQuality
from ledger.projections.queries import CustomerQueries
from ledger.projections.runner import ProjectionRunner
from ledger.projections.store import ProjectionDatabase

if TYPE_CHECKING:
    from ledger.application import CustomerLedger

ProjectionFactory = Callable[["CustomerLedger", IndexKey], Projection]

PROJECTION_FACTORIES: list[ProjectionFactory] = [
    lambda ledger, index_key: CurrentView(ledger.keys, index_key),
    lambda ledger, index_key: DataQuality(),
    lambda ledger, index_key: DuplicateIndexProjection(ledger.keys, index_key),
]


def attach_projections(ledger: CustomerLedger) -> ProjectionRunner:
    settings = ledger.settings
    index_key = IndexKey.load_or_create(settings.resolved_index_key_file)
    db = ProjectionDatabase.open(settings)
    try:
        runner = ProjectionRunner(
            ledger, db, [factory(ledger, index_key) for factory in PROJECTION_FACTORIES]
        )
        runner.setup()
    except BaseException:
        db.close()
        raise
    ledger.projections = runner
    ledger.erasure_purgers.append(runner.purge)
    if settings.projection_mode == "inline":
        ledger.inline_projections = runner
        ledger.after_save.append(runner.catch_up_quietly)
    return runner


def runner_of(ledger: CustomerLedger) -> ProjectionRunner:
    if ledger.projections is None:
        raise RuntimeError("this ledger was opened without projections")
    return ledger.projections


def customer_queries(ledger: CustomerLedger) -> CustomerQueries:
    runner = runner_of(ledger)
    view = runner.get(CurrentView.name)
    assert isinstance(view, CurrentView)
    return CustomerQueries(runner.db, view, ledger.settings.default_region)


def duplicate_queries(ledger: CustomerLedger) -> DuplicateQueries:
    """One instance per runner, shared by every call: it keeps the scoring model loaded
    (a look-up per registration must not also read the model)."""
    runner = runner_of(ledger)
    queries = _DUPLICATE_QUERIES.get(runner)
    if queries is None:
        index = runner.get(DuplicateIndexProjection.name)
        assert isinstance(index, DuplicateIndexProjection)
        queries = DuplicateQueries(
            runner.db,
            ledger.keys,
            index.keyer,
            index.row_mac,
            threshold=ledger.settings.duplicate_threshold,
            labels=index.labels,
        )
        _DUPLICATE_QUERIES[runner] = queries
        ledger.erasure_purgers.append(queries.record_cache.forget)
        ledger.category_purgers.append(queries.record_cache.forget)
    return queries


_DUPLICATE_QUERIES: WeakKeyDictionary[ProjectionRunner, DuplicateQueries] = WeakKeyDictionary()
