"""Labelled pairs: what people decided about pairs of customers, folded from the log.

Every merge is a confirmed duplicate (`match`); every unmerge and every "not a duplicate"
decision (`Customer.DuplicateDismissed`) a confirmed non-pair (`non_match`). The latest
decision about a pair wins (merged, unmerged, merged again: a match). Dismissed and
unmerged pairs are never reported as likely duplicates again, and the model fit learns
from both kinds.

Rows hold customer ids and the label only (no personal data), in the duplicate index's
database, written in the same transaction as its other rows. They decide what is hidden
from a duplicate report, so each carries a `row_mac` like the index's records: an edited
or inserted row is an integrity failure, never a silently hidden duplicate. A pair with an
erased customer is deleted (applying `Erased` and the erasure purge leave the same rows).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from ledger.domain.customer import Customer
from ledger.projections.base import PositionedEvent
from ledger.projections.current_view import chunks
from ledger.projections.row_mac import RowMac
from ledger.projections.store import Tx

LABELS = "duplicate_labels"
MATCH, NON_MATCH = "match", "non_match"
LABEL_COLUMNS = ("pair", "first_id", "second_id", "label", "row_mac")
_SELECTED = ", ".join(LABEL_COLUMNS)

LABELS_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {LABELS} (
        pair TEXT PRIMARY KEY,
        first_id TEXT NOT NULL,
        second_id TEXT NOT NULL,
        label TEXT NOT NULL,
        row_mac {{blob}} NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {LABELS}_by_first ON {LABELS} (first_id)",
    f"CREATE INDEX IF NOT EXISTS {LABELS}_by_second ON {LABELS} (second_id)",
]


def pair_of(a: UUID | str, b: UUID | str) -> tuple[str, str]:
    """A pair in its one stored order (so either side finds it)."""
    first, second = sorted((str(a), str(b)))
    return first, second


@dataclass(frozen=True)
class Labels:
    """Confirmed pairs, each as `pair_of` orders it."""

    matches: frozenset[tuple[str, str]]
    non_matches: frozenset[tuple[str, str]]


def label_of(event: Customer.Event) -> tuple[tuple[str, str], str] | None:
    """The pair and label an event decides, if any. Both customers of a dismissal carry
    the event, so each pair is seen twice: the same label both times."""
    me = event.originator_id
    if isinstance(event, Customer.MergedInto):
        return pair_of(me, event.target_id), MATCH
    if isinstance(event, Customer.Unmerged):
        return pair_of(me, event.target_id), NON_MATCH
    if isinstance(event, Customer.DuplicateDismissed):
        return pair_of(me, event.other_id), NON_MATCH
    return None


class LabelTable:
    """Writes and reads `duplicate_labels`, for the duplicate index projection (which owns
    the table) and for its queries."""

    def __init__(self, row_mac: RowMac) -> None:
        self.row_mac = row_mac

    def apply(self, tx: Tx, events: Sequence[PositionedEvent]) -> None:
        decided: dict[tuple[str, str], str] = {}
        erased: list[str] = []
        for positioned in events:
            event = positioned.event
            if isinstance(event, Customer.Erased):
                gone = str(positioned.customer_id)
                erased.append(gone)
                decided = {p: label for p, label in decided.items() if gone not in p}
                continue
            found = label_of(event)
            if found is not None:
                decided.pop(found[0], None)  # latest last: dict order is decision order
                decided[found[0]] = found[1]
        self.forget(tx, erased)
        rows = []
        for (first, second), label in decided.items():
            row = (f"{first} {second}", first, second, label)
            rows.append((*row, self.row_mac.of(row)))
        tx.insert(LABELS, LABEL_COLUMNS, rows, upsert_on="pair", types={"row_mac": "bytea"})

    def forget(self, tx: Tx, customer_ids: Collection[str]) -> None:
        """Every pair of these (erased) customers goes."""
        for chunk in chunks(sorted(set(customer_ids))):
            for column in ("first_id", "second_id"):
                where, params = tx.is_in(column, chunk)
                tx.execute(f"DELETE FROM {LABELS} WHERE {where}", params)

    def tampered(self, tx: Tx) -> list[tuple[str, str]]:
        return [
            (LABELS, str(row[0]))
            for row in tx.rows(f"SELECT {_SELECTED} FROM {LABELS}")
            if not self.row_mac.sound(row)
        ]

    def read(self, tx: Tx, customer_ids: Iterable[str] | None = None) -> Labels:
        """Every labelled pair, or those with one of `customer_ids`; each row checked."""
        if customer_ids is None:
            rows = tx.rows(f"SELECT {_SELECTED} FROM {LABELS}")
        else:
            rows = []
            for chunk in chunks(sorted(set(customer_ids))):
                for column in ("first_id", "second_id"):
                    where, params = tx.is_in(column, chunk)
                    rows += tx.rows(f"SELECT {_SELECTED} FROM {LABELS} WHERE {where}", params)
        matches: set[tuple[str, str]] = set()
        non_matches: set[tuple[str, str]] = set()
        for row in rows:
            self.row_mac.check(row)
            _, first, second, label, _ = row
            (matches if label == MATCH else non_matches).add((str(first), str(second)))
        return Labels(frozenset(matches), frozenset(non_matches))
