"""ListCustomers' `filter` and `order_by` (AIP-160, AIP-132), turned into the current view's
query (`ledger.projections.queries.ListFilter`).

Only the subset the view can answer from its readable columns is accepted, so a filter
never needs personal data: comparisons joined by `AND`, each field at most once —
`owner = "x"`, `country = "GB"`, `tags = "vip"` (or the has-operator `tags:"vip"`),
`state = ACTIVE|MERGED|ERASED|ANY`, `update_time >= "RFC 3339 time"`. Anything else is
INVALID_ARGUMENT naming `filter` (or `order_by`) and what was expected, never echoing a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ledger.api import filters
from ledger.api.errors import ApiError
from ledger.domain.customer import ACTIVE, ERASED_STATUS, MERGED_STATUS
from ledger.domain.errors import ValidationFailed
from ledger.projections.queries import ListFilter

MAX_FILTER = filters.MAX_FILTER

_ORDER = re.compile(r"\s*(update_time|create_time|name)(?:\s+(asc|desc))?\s*")

STATES = {"ACTIVE": ACTIVE, "MERGED": MERGED_STATUS, "ERASED": ERASED_STATUS, "ANY": "any"}
ORDER_FIELDS = {"update_time": "updated_at", "create_time": "created_at", "name": "id"}
# Per field: the operators it takes and the ListFilter attribute it sets.
FIELDS: dict[str, tuple[frozenset[str], str]] = {
    "owner": (frozenset({"="}), "owner"),
    "country": (frozenset({"="}), "country"),
    "tags": (frozenset({"=", ":"}), "tag"),
    "state": (frozenset({"="}), "status"),
    "update_time": (frozenset({">="}), "updated_since"),
}


@dataclass(frozen=True)
class ListQuery:
    filters: ListFilter
    # `show_erased` without a state in the filter: the view is asked for every state and
    # merged customers are dropped from the page (pages may then be shorter than asked).
    hide_merged: bool = False


def _terms(text: str) -> dict[str, tuple[str, str]]:
    """field -> (operator, value), in the order given; the grammar (shared with the audit
    listings) only, not the values. Each field at most once: two `owner` terms joined by
    AND could only ever match nothing, which is more likely a mistake than a question."""
    allowed = {name: operators for name, (operators, _) in FIELDS.items()}
    terms: dict[str, tuple[str, str]] = {}
    for comparison in filters.parse_filter(text, allowed):
        if comparison.field in terms:
            raise ApiError.invalid("filter", f"{comparison.field} given more than once")
        terms[comparison.field] = (comparison.op, comparison.value)
    return terms


def _time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError.invalid("filter", "update_time needs an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ApiError.invalid("filter", "update_time needs a UTC offset, e.g. Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. year 9999 with a negative offset
        raise ApiError.invalid("filter", "update_time is out of range") from None


def parse_filter(text: str, *, show_erased: bool = False) -> ListQuery:
    if len(text) > MAX_FILTER:
        raise ApiError.invalid("filter", f"at most {MAX_FILTER} characters")
    terms = _terms(text) if text.strip() else {}
    values: dict[str, object] = {}
    for field, (_, value) in terms.items():
        attribute = FIELDS[field][1]
        if field == "state":
            if value.upper() not in STATES:
                raise ApiError.invalid("filter", f"state must be one of {', '.join(STATES)}")
            values[attribute] = STATES[value.upper()]
        elif field == "update_time":
            values[attribute] = _time(value)
        elif not value:
            raise ApiError.invalid("filter", f"{field} needs a value")
        elif not value.isprintable():
            raise ApiError.invalid("filter", f"{field} must be printable text")
        else:
            values[attribute] = value
    hide_merged = show_erased and "state" not in terms
    if hide_merged:
        values["status"] = "any"
    try:
        filters = ListFilter(**values).checked()  # type: ignore[arg-type]
    except ValidationFailed as error:
        raise ApiError.invalid("filter", "; ".join(str(v) for v in error.violations)) from None
    return ListQuery(filters, hide_merged)


def restricted_to(query: ListQuery, owner: str) -> ListQuery:
    return replace(query, filters=replace(query.filters, owner=owner))


def parse_order(text: str) -> tuple[str, bool]:
    """(the view's order column name, descending)."""
    if not text.strip():
        return "updated_at", False
    order = _ORDER.fullmatch(text)
    if order is None:
        raise ApiError.invalid(
            "order_by", "must be one of update_time, create_time, name, optionally with desc"
        )
    return ORDER_FIELDS[order.group(1)], order.group(2) == "desc"
