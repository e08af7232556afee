"""Queries on the current view: get by id, list with filters and page tokens, and exact
lookup by email, phone or external id. Personal fields are decrypted on read, per row,
with the customer's own key; an erased customer reads as a tombstone with `ERASED` data.

Every row read is checked against its MAC (`ledger.projections.row_mac`) before anything in
it is believed, and a row reached through an index table (tags, lookup keys) must hold what
the index claims: access decisions made on these rows rest on nothing an insider with only
the database could have edited.

A merged customer is hidden from lists (unless asked for by status) and lookups lead to the
customer it was merged into. Page tokens are opaque to callers and bound to the query that
made them: a token replayed with other filters or another order is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.domain.customer import ACTIVE, ERASED_STATUS, MERGED_STATUS
from ledger.domain.erased import ERASED, ErasedValue
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS
from ledger.domain.text import has_nul
from ledger.projections.current_view import COLUMNS, LOOKUP, TABLE, TAGS, CurrentView
from ledger.projections.lookup import digests_of, email_key, external_id_key, phone_key
from ledger.projections.row_mac import ProjectionRowTampered
from ledger.projections.state import CustomerState
from ledger.projections.store import ProjectionDatabase, iso

STATUSES = (ACTIVE, MERGED_STATUS, ERASED_STATUS, "any")
ORDERS = {"updated_at": "updated_at", "created_at": "created_at", "id": "customer_id"}
MAX_PAGE_SIZE = 1000
MAX_MERGE_HOPS = 32


@dataclass(frozen=True)
class CustomerRecord:
    """A customer as the current view holds it."""

    id: UUID
    version: int
    status: str
    merged_into: UUID | None
    personal: dict[str, Any] | ErasedValue
    owner: str | None
    country: str | None
    locale: str | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None
    erased_at: datetime | None

    @classmethod
    def of(cls, state: CustomerState) -> CustomerRecord:
        return cls(
            id=state.customer_id,
            version=state.version,
            status=state.status,
            merged_into=UUID(state.merged_into) if state.merged_into else None,
            personal=ERASED if state.personal is None else state.personal,
            owner=state.owner,
            country=state.country,
            locale=state.locale,
            tags=list(state.tags),
            created_at=state.created_at,
            updated_at=state.updated_at,
            verified_at=state.verified_at,
            erased_at=state.erased_at,
        )

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.personal, ErasedValue):
            personal: dict[str, Any] = {"personal_data": "erased", **dict.fromkeys(PERSONAL_FIELDS)}
        else:
            personal = {"personal_data": "available"}
            personal |= {k: self.personal.get(k) for k in PERSONAL_FIELDS}
        return {
            "id": str(self.id),
            "version": self.version,
            "status": self.status,
            "merged_into": str(self.merged_into) if self.merged_into else None,
            **personal,
            "owner": self.owner,
            "country": self.country,
            "locale": self.locale,
            "tags": self.tags,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "verified_at": iso(self.verified_at),
            "erased_at": iso(self.erased_at),
        }


@dataclass(frozen=True)
class ListFilter:
    owner: str | None = None
    country: str | None = None
    tag: str | None = None
    status: str = ACTIVE
    updated_since: datetime | None = None

    def checked(self) -> ListFilter:
        violations = []
        if self.status not in STATUSES:
            violations.append(FieldViolation("status", f"must be one of {', '.join(STATUSES)}"))
        country = self.country.upper() if self.country else None
        if country is not None and not (
            len(country) == 2 and country.isascii() and country.isalpha()
        ):
            violations.append(FieldViolation("country", "not an ISO 3166-1 alpha-2 country code"))
        if self.updated_since is not None and self.updated_since.tzinfo is None:
            violations.append(FieldViolation("updated_since", "needs a UTC offset, e.g. Z"))
        if violations:
            raise ValidationFailed(violations)
        return ListFilter(
            owner=self.owner,
            country=country,
            tag=self.tag.lower() if self.tag else None,
            status=self.status,
            updated_since=self.updated_since,
        )

    def fingerprint(self) -> str:
        """Binds page tokens to the filters (no personal data in here, so a plain hash)."""
        data = [self.owner, self.country, self.tag, self.status, iso(self.updated_since)]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Page:
    records: list[CustomerRecord]
    next_page_token: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": [r.to_json() for r in self.records],
            "next_page_token": self.next_page_token,
        }


def _bad_token() -> ValidationFailed:
    return ValidationFailed([FieldViolation("page_token", "not a page token of this query")])


class CustomerQueries:
    def __init__(self, db: ProjectionDatabase, view: CurrentView, default_region: str | None):
        self.db = db
        self.view = view
        self.default_region = default_region

    def get(self, customer_id: UUID, *, follow_merges: bool = False) -> CustomerRecord | None:
        """The customer's row; with `follow_merges`, the customer it now lives on in."""
        with self.db.reading(snapshot=follow_merges) as tx:
            state = self.view.load(tx, [customer_id]).get(customer_id)
            hops = 0
            while (
                follow_merges and state is not None and state.merged_into and hops < MAX_MERGE_HOPS
            ):
                target = UUID(state.merged_into)
                state = self.view.load(tx, [target]).get(target)
                hops += 1
        return None if state is None else CustomerRecord.of(state)

    def list_customers(
        self,
        filters: ListFilter = ListFilter(),
        *,
        order_by: str = "updated_at",
        descending: bool = False,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> Page:
        filters = filters.checked()
        if order_by not in ORDERS:
            raise ValidationFailed(
                [FieldViolation("order_by", f"must be one of {', '.join(ORDERS)}")]
            )
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValidationFailed([FieldViolation("page_size", f"must be 1 to {MAX_PAGE_SIZE}")])
        column = ORDERS[order_by]
        where: list[str] = []
        params: list[object] = []
        if filters.status != "any":
            where.append("status = ?")
            params.append(filters.status)
        for name in ("owner", "country"):
            value: str | None = getattr(filters, name)
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        if filters.tag is not None:
            where.append(f"customer_id IN (SELECT customer_id FROM {TAGS} WHERE tag = ?)")
            params.append(filters.tag)
        if filters.updated_since is not None:
            where.append("updated_at >= ?")
            params.append(iso(filters.updated_since))
        context = [order_by, descending, filters.fingerprint()]
        if page_token:
            value, last_id = self._read_token(page_token, context)
            cmp = "<" if descending else ">"
            if column == "customer_id":
                where.append(f"customer_id {cmp} ?")
                params.append(last_id)
            else:
                where.append(f"({column} {cmp} ? OR ({column} = ? AND customer_id {cmp} ?))")
                params += [value, value, last_id]
        direction = "DESC" if descending else "ASC"
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {direction}, customer_id {direction} LIMIT ?"
        with self.db.reading() as tx:
            rows = tx.rows(sql, [*params, page_size + 1])
            states = [self.view.state_of(row) for row in rows[:page_size]]
        if filters.tag is not None:  # the tag table is an index: its rows carry no MAC
            for state in states:
                if filters.tag not in state.tags:
                    raise ProjectionRowTampered(
                        TAGS, str(state.customer_id), "lists a tag its customer does not have"
                    )
        token = None
        if len(rows) > page_size:
            last = rows[page_size - 1]
            last_value = dict(zip(COLUMNS, last, strict=True))[column]
            token = self._make_token(context, str(last_value), str(last[0]))
        return Page([CustomerRecord.of(s) for s in states], token)

    @staticmethod
    def _make_token(context: list[Any], value: str, last_id: str) -> str:
        raw = json.dumps({"c": context, "k": [value, last_id]}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _read_token(token: str, context: list[Any]) -> tuple[str, str]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            value, last_id = data["k"]
            UUID(str(last_id))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise _bad_token() from None
        if data.get("c") != context or not isinstance(value, str) or has_nul(value):
            # NUL: no cursor of ours holds one, and PostgreSQL refuses it in a query.
            raise _bad_token()
        return value, str(last_id)

    def lookup(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        external_id: str | None = None,
    ) -> list[CustomerRecord]:
        """Customers holding exactly this email / phone / external id (SCHEME:VALUE), each
        merged customer replaced by the one it was merged into; erased ones never match
        (their lookup keys were deleted with them)."""
        given = [v for v in (email, phone, external_id) if v is not None]
        if len(given) != 1:
            raise ValidationFailed(
                [FieldViolation("lookup", "give exactly one of email, phone or external id")]
            )
        if email is not None:
            digest = email_key(self.view.index_key, email)
        elif phone is not None:
            digest = phone_key(self.view.index_key, phone, self.default_region)
        else:
            assert external_id is not None
            digest = external_id_key(self.view.index_key, external_id)
        columns = ", ".join(f"v.{c}" for c in COLUMNS)
        with self.db.reading() as tx:
            rows = tx.rows(
                f"SELECT {columns} FROM {LOOKUP} k JOIN {TABLE} v ON v.customer_id = k.customer_id"
                " WHERE k.digest = ? ORDER BY v.customer_id",
                (digest,),
            )
            states = [self.view.state_of(row) for row in rows]
        for state in states:  # the lookup table is an index: its rows carry no MAC
            if state.personal is None or digest not in digests_of(
                self.view.index_key, state.personal
            ):
                raise ProjectionRowTampered(
                    LOOKUP, str(state.customer_id), "leads to a customer without that key"
                )
        found: dict[UUID, CustomerRecord] = {}
        for state in states:
            record: CustomerRecord | None = CustomerRecord.of(state)
            if state.merged_into:  # rare: one more read, to the customer it lives on in
                record = self.get(state.customer_id, follow_merges=True)
            if record is not None and record.status == ACTIVE:
                found.setdefault(record.id, record)
        return list(found.values())

    def resolve(self, customer_ids: Sequence[UUID]) -> list[CustomerRecord | None]:
        return [self.get(customer_id, follow_merges=True) for customer_id in customer_ids]
