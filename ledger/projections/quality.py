"""Data quality: how complete each customer's record is, what warnings it carries, and
whether a review is due.

Holds no personal data at all — only which expected fields are present (by name), the
warnings recorded against the customer (field names and fixed reasons, e.g. from a lenient
import), and the times needed for "review due". Whether a review is due depends on today,
so it is computed when asked, never stored: rows stay a pure function of the log.

A warning about a field is dropped once that field changes (someone fixed it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID

from ledger.domain.customer import ACTIVE, ERASED_STATUS, MERGED_STATUS, Customer
from ledger.domain.erased import ErasedValue
from ledger.projections.base import (
    PositionedEvent,
    Projection,
    Tombstone,
    customers_of,
    keep_preloaded,
    rows_for,
)
from ledger.projections.current_view import chunks
from ledger.projections.store import ProjectionDatabase, Tx, iso, parse_iso

TABLE = "data_quality"
# What a complete record has; the address parts are the first address's.
EXPECTED: tuple[str, ...] = (
    "given_name",
    "family_name",
    "emails",
    "phones",
    "birth_date",
    "addresses",
    "postcode",
    "locality",
)
_EXPECTED_SET = frozenset(EXPECTED)
_ADDRESS_PARTS = ("postcode", "locality")
_FIELD_HEAD = re.compile(r"[a-z_]+")
COLUMNS = ("customer_id", "version", "status", "score", "missing", "warnings", "created_at",
           "verified_at")  # fmt: skip

COLUMN_TYPES = {"version": "bigint", "score": "integer"}  # the others are TEXT
_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        customer_id TEXT PRIMARY KEY,
        version {{bigint}} NOT NULL,
        status TEXT NOT NULL,
        score INTEGER,
        missing TEXT,
        warnings TEXT NOT NULL,
        created_at TEXT NOT NULL,
        verified_at TEXT
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_score ON {TABLE} (status, score, customer_id)",
]


def presence(personal: dict[str, Any]) -> set[str]:
    present = {name for name in EXPECTED if personal.get(name)}
    addresses = personal.get("addresses") or []
    first = addresses[0] if addresses else {}
    present -= set(_ADDRESS_PARTS)
    present |= {part for part in _ADDRESS_PARTS if first.get(part)}
    return present


def field_of(path: str) -> str:
    """The top-level field a warning's path is about: `phones[0]` → `phones`."""
    match = _FIELD_HEAD.match(path)
    head = match.group(0) if match else path
    return "external_ids" if head == "external_id" else head


@dataclass(frozen=True)
class QualityState:
    customer_id: UUID
    version: int
    status: str
    present: frozenset[str]
    warnings: tuple[tuple[str, str], ...]
    created_at: datetime
    verified_at: datetime | None

    @property
    def missing(self) -> list[str]:
        return [name for name in EXPECTED if name not in self.present]

    @property
    def score(self) -> int:
        return round(100 * len(self.present & _EXPECTED_SET) / len(EXPECTED))


def fold_quality(state: QualityState | None, event: Customer.Event) -> QualityState | None:
    if isinstance(event, Customer.Registered):
        if state is not None:
            return state
        personal = event.personal if isinstance(event.personal, dict) else {}
        return QualityState(
            customer_id=event.originator_id,
            version=event.originator_version,
            status=ACTIVE,
            present=frozenset(presence(personal)),
            warnings=(),
            created_at=event.timestamp,
            verified_at=None,
        )
    if state is None or state.status == ERASED_STATUS or event.originator_version <= state.version:
        return state
    # One `replace` per event (it is not cheap): the version, and what the event changes.
    changes: dict[str, Any] = {"version": event.originator_version}
    if isinstance(event, Customer.Erased):
        changes.update(status=ERASED_STATUS, present=frozenset(), warnings=(), verified_at=None)
    elif isinstance(event, Customer.ProfileChanged | Customer.MergeAbsorbed | Customer.MergeUndone):
        present = set(state.present)
        if isinstance(event.personal, dict) and not isinstance(event.personal, ErasedValue):
            for name, value in event.personal.items():
                if name == "addresses":
                    present -= {"addresses", *_ADDRESS_PARTS}
                    present |= presence({"addresses": value or []})
                elif name in EXPECTED:
                    present = present | {name} if value else present - {name}
        fixed = set(event.changed_fields)
        warnings = tuple(w for w in state.warnings if field_of(w[0]) not in fixed)
        changes.update(present=frozenset(present), warnings=warnings)
    elif isinstance(event, Customer.CategoriesErased):
        # Destroyed fields are absent from now on, as a rebuild (which reads them as
        # erased from the start) finds them.
        gone = set(event.fields)
        if "addresses" in gone:
            gone |= set(_ADDRESS_PARTS)
        changes["present"] = frozenset(state.present - gone)
    elif isinstance(event, Customer.Verified):
        changes["verified_at"] = event.timestamp
    elif isinstance(event, Customer.DataQualityFlagged):
        changes["warnings"] = tuple((w["field"], w["reason"]) for w in event.warnings)
    elif isinstance(event, Customer.MergedInto):
        changes["status"] = MERGED_STATUS
    elif isinstance(event, Customer.Unmerged):
        changes["status"] = ACTIVE
    return replace(state, **changes)


class DataQuality(Projection):
    name = "data_quality"
    description = "completeness score, missing fields and warnings per customer (no personal data)"
    schema_version = 1

    def tables(self) -> Sequence[str]:
        return (TABLE,)

    def create(self, tx: Tx) -> None:
        for statement in _DDL:
            tx.execute(statement)

    def preload(self, tx: Tx, events: Sequence[PositionedEvent]) -> None:
        keep_preloaded(self, events, self._load(tx, customers_of(events)))

    def apply(
        self, tx: Tx, events: Sequence[PositionedEvent], *, fresh: Collection[UUID] = ()
    ) -> None:
        states: dict[UUID, QualityState | None] = dict(
            rows_for(self, tx, events, fresh, self._load)
        )
        changed: dict[UUID, QualityState] = {}
        for positioned in events:
            before = states.get(positioned.customer_id)
            after = fold_quality(before, positioned.event)
            if after is not None and after is not before:
                states[positioned.customer_id] = after
                changed[positioned.customer_id] = after
        rows = [_row(s) for s in changed.values()]
        tx.insert(TABLE, COLUMNS, rows, upsert_on="customer_id", types=COLUMN_TYPES)

    def purge(self, tx: Tx, tombstone: Tombstone) -> None:
        existing = self._load(tx, [tombstone.customer_id]).get(tombstone.customer_id)
        state = QualityState(
            customer_id=tombstone.customer_id,
            version=tombstone.version,
            status=ERASED_STATUS,
            present=frozenset(),
            warnings=(),
            created_at=existing.created_at if existing else tombstone.created_at,
            verified_at=None,
        )
        tx.insert(TABLE, COLUMNS, [_row(state)], upsert_on="customer_id", types=COLUMN_TYPES)

    def _load(self, tx: Tx, ids: Sequence[UUID]) -> dict[UUID, QualityState]:
        states: dict[UUID, QualityState] = {}
        for chunk in chunks([str(i) for i in ids]):
            where, params = tx.is_in("customer_id", chunk)
            rows = tx.rows(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {where}", params)
            for row in rows:
                values = dict(zip(COLUMNS, row, strict=True))
                missing = set(json.loads(str(values["missing"]))) if values["missing"] else set()
                created_at = parse_iso(str(values["created_at"]))
                assert created_at is not None
                state = QualityState(
                    customer_id=UUID(str(values["customer_id"])),
                    version=int(str(values["version"])),
                    status=str(values["status"]),
                    present=frozenset(set(EXPECTED) - missing),
                    warnings=tuple(
                        (w["field"], w["reason"]) for w in json.loads(str(values["warnings"]))
                    ),
                    created_at=created_at,
                    verified_at=parse_iso(
                        None if values["verified_at"] is None else str(values["verified_at"])
                    ),
                )
                states[state.customer_id] = state
        return states


@lru_cache(maxsize=1024)
def _missing_json(present: frozenset[str]) -> str:
    """Field names only (no personal data): few distinct values, each encoded once."""
    return json.dumps([name for name in EXPECTED if name not in present])


@lru_cache(maxsize=1024)
def _warnings_json(warnings: tuple[tuple[str, str], ...]) -> str:
    """Field paths and fixed reasons only (no personal data): encoded once per value."""
    return json.dumps([{"field": f, "reason": r} for f, r in warnings])


def _row(state: QualityState) -> tuple[object, ...]:
    erased = state.status == ERASED_STATUS
    return (
        str(state.customer_id),
        state.version,
        state.status,
        None if erased else state.score,
        None if erased else _missing_json(state.present),
        _warnings_json(state.warnings),
        iso(state.created_at),
        iso(state.verified_at),
    )


# Report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityRecord:
    customer_id: str
    score: int
    missing: list[str]
    warnings: list[dict[str, str]]
    review_due: bool
    registered_at: str
    verified_at: str | None  # the review clock runs from here, else from registration

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.customer_id,
            "score": self.score,
            "missing": self.missing,
            "warnings": self.warnings,
            "review_due": self.review_due,
            "registered_at": self.registered_at,
            "verified_at": self.verified_at,
        }


@dataclass(frozen=True)
class QualityReport:
    customers: int
    average_score: float
    complete: int
    with_warnings: int
    review_due: int
    review_after_days: int
    missing: dict[str, int]
    worst: list[QualityRecord]

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "average_score": self.average_score,
            "complete": self.complete,
            "with_warnings": self.with_warnings,
            "review_due": self.review_due,
            "review_after_days": self.review_after_days,
            "missing": self.missing,
            "worst": [r.to_json() for r in self.worst],
        }


def quality_report(
    db: ProjectionDatabase,
    *,
    review_after_days: int,
    worst: int = 10,
    now: datetime | None = None,
) -> QualityReport:
    """Totals over active customers (merged and erased ones are not records of their own)
    and the `worst` records: lowest score first, then those with warnings."""
    cutoff = iso((now or datetime.now(UTC)) - timedelta(days=review_after_days))
    with db.reading() as tx:
        rows = tx.rows(
            f"SELECT customer_id, score, missing, warnings, created_at, verified_at"
            f" FROM {TABLE} WHERE status = ?",
            (ACTIVE,),
        )
    missing: Counter[str] = Counter()
    records = []
    for customer_id, score, missing_json, warnings_json, created, verified in rows:
        absent = json.loads(missing_json)
        missing.update(absent)
        records.append(
            QualityRecord(
                customer_id=str(customer_id),
                score=int(score),
                missing=absent,
                warnings=json.loads(warnings_json),
                review_due=str(verified or created) < str(cutoff),
                registered_at=str(created),
                verified_at=None if verified is None else str(verified),
            )
        )
    records.sort(key=lambda r: (r.score, -len(r.warnings), not r.review_due, r.customer_id))
    count = len(records)
    return QualityReport(
        customers=count,
        average_score=round(sum(r.score for r in records) / count, 1) if count else 0.0,
        complete=sum(1 for r in records if not r.missing),
        with_warnings=sum(1 for r in records if r.warnings),
        review_due=sum(1 for r in records if r.review_due),
        review_after_days=review_after_days,
        missing={name: missing[name] for name in EXPECTED if missing[name]},
        worst=records[:worst],
    )
