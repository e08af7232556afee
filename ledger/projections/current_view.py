"""The current view: one row per customer, what services query instead of replaying events.

Columns that filter and sort (status, owner, country, locale, tags, times, version) are
readable; every personal field is in one sealed column (`personal`, see `sealed_rows`).
Access decisions rest on the readable ones (a salesperson's customers are those whose
`owner` names it), so every row carries `row_mac` (see `row_mac`) and is checked on read:
an edited row is an integrity failure, never another owner's customer.
Tags get their own table so a tag filter uses an index; exact lookups by email, phone and
external id use `current_view_lookup`, whose keys are HMACs (see `lookup`). An erased
customer keeps a tombstone row — id, status, times, version — and nothing else.

Batches are folded in memory (one read of the affected rows, one write each), so applying
events costs a few statements per batch rather than per event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from uuid import UUID

from ledger.crypto_shred.keyring import KeyRing
from ledger.projections.base import FoldingProjection, Tombstone
from ledger.projections.index_key import IndexKey
from ledger.projections.lookup import digests_of
from ledger.projections.row_mac import ProjectionRowTampered, RowMac
from ledger.projections.sealed_rows import RowSealer
from ledger.projections.state import CustomerState
from ledger.projections.store import Tx, iso, parse_iso

TABLE = "current_view"
TAGS = "current_view_tags"
LOOKUP = "current_view_lookup"
COLUMNS = (
    "customer_id",
    "version",
    "status",
    "merged_into",
    "owner",
    "country",
    "locale",
    "tags",
    "created_at",
    "updated_at",
    "verified_at",
    "erased_at",
    "personal",
    "row_mac",
)
COLUMN_TYPES = {"version": "bigint", "personal": "bytea", "row_mac": "bytea"}  # the others are TEXT
PERSONAL = COLUMNS.index("personal")
CHUNK = 500

_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        customer_id TEXT PRIMARY KEY,
        version {{bigint}} NOT NULL,
        status TEXT NOT NULL,
        merged_into TEXT,
        owner TEXT,
        country TEXT,
        locale TEXT,
        tags TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        verified_at TEXT,
        erased_at TEXT,
        personal {{blob}},
        row_mac {{blob}} NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_updated ON {TABLE} (status, updated_at, customer_id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_created ON {TABLE} (status, created_at, customer_id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_owner ON {TABLE} (owner, status)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_country ON {TABLE} (country, status)",
    f"""CREATE TABLE IF NOT EXISTS {TAGS} (
        tag TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        PRIMARY KEY (tag, customer_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {TAGS}_by_customer ON {TAGS} (customer_id)",
    f"""CREATE TABLE IF NOT EXISTS {LOOKUP} (
        digest {{blob}} NOT NULL,
        customer_id TEXT NOT NULL,
        PRIMARY KEY (digest, customer_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {LOOKUP}_by_customer ON {LOOKUP} (customer_id)",
]


def chunks(values: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def scan(tx: Tx, table: str, columns: Sequence[str]) -> Iterator[tuple[object, ...]]:
    """Every row of `table` (keyed by customer_id, its first column), in id order, read a
    chunk at a time so a check of a large table does not hold it all in memory."""
    last = ""
    while True:
        rows = tx.rows(
            f"SELECT {', '.join(columns)} FROM {table} WHERE customer_id > ?"
            " ORDER BY customer_id LIMIT ?",
            (last, CHUNK),
        )
        yield from rows
        if len(rows) < CHUNK:
            return
        last = str(rows[-1][0])


class CurrentView(FoldingProjection):
    name = "current_view"
    description = "one row per customer (personal fields sealed), tags, exact-lookup keys"
    rows_table = TABLE
    schema_version = 2  # 2: row_mac (older rows are rebuilt on open)
    write_weight = 5  # the row, its tags and lookup keys

    def __init__(self, keys: KeyRing, index_key: IndexKey) -> None:
        self.sealer = RowSealer(keys, TABLE)
        self.index_key = index_key
        self.mac = RowMac(index_key, TABLE)

    def tables(self) -> Sequence[str]:
        return (TABLE, TAGS, LOOKUP)

    def create(self, tx: Tx) -> None:
        for statement in _DDL:
            tx.execute(statement)

    def purge(self, tx: Tx, tombstone: Tombstone) -> None:
        """An erasure must succeed even over an edited row: the tombstone replaces it."""
        try:
            existing = self.load(tx, [tombstone.customer_id]).get(tombstone.customer_id)
        except ProjectionRowTampered:
            existing = None
        created_at = existing.created_at if existing is not None else tombstone.created_at
        self.write(
            tx,
            [
                CustomerState.tombstone(
                    tombstone.customer_id, tombstone.version, created_at, tombstone.erased_at
                )
            ],
        )

    def tampered(self, tx: Tx) -> list[tuple[str, str]]:
        """Rows whose MAC fails, and index entries (tags, lookup keys) that their sound row
        does not account for: what `ledger projections --check` reports."""
        found: list[tuple[str, str]] = []
        tags: dict[str, set[str]] = {}
        digests: dict[str, set[bytes]] = {}
        for row in scan(tx, TABLE, COLUMNS):
            customer_id = str(row[0])
            if not self.mac.sound(row):
                found.append((TABLE, customer_id))
                continue
            try:
                state = self.state_of(row)
            except ProjectionRowTampered:  # sound MAC, yet the seal does not open
                found.append((TABLE, customer_id))
                continue
            if state.is_erased:
                continue
            tags[customer_id] = set(state.tags)
            if state.personal is not None and row[PERSONAL] is not None:
                digests[customer_id] = digests_of(self.index_key, state.personal)
        bad = {c for _, c in found}
        for tag, customer_id in tx.rows(f"SELECT tag, customer_id FROM {TAGS}"):
            if str(customer_id) not in bad and str(tag) not in tags.get(str(customer_id), ()):
                found.append((TAGS, str(customer_id)))
        for digest, customer_id in tx.rows(f"SELECT digest, customer_id FROM {LOOKUP}"):
            if str(customer_id) not in bad and bytes(digest) not in digests.get(
                str(customer_id), ()
            ):
                found.append((LOOKUP, str(customer_id)))
        return sorted(set(found), key=lambda item: (item[1], item[0]))

    # Rows -----------------------------------------------------------------------------------

    def load(self, tx: Tx, ids: Sequence[UUID]) -> dict[UUID, CustomerState]:
        states: dict[UUID, CustomerState] = {}
        for chunk in chunks([str(i) for i in ids]):
            where, params = tx.is_in("customer_id", chunk)
            rows = tx.rows(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {where}", params)
            for row in rows:
                state = self.state_of(row)
                states[state.customer_id] = state
        return states

    def state_of(self, row: Sequence[object]) -> CustomerState:
        """The row's state, once its MAC shows nobody changed it (`ProjectionRowTampered`)."""
        self.mac.check(row)
        values = dict(zip(COLUMNS, row, strict=True))
        customer_id = UUID(str(values["customer_id"]))
        version = int(str(values["version"]))
        blob = values["personal"]
        personal = self.sealer.open(customer_id, version, None if blob is None else bytes(blob))  # type: ignore[call-overload]
        created_at = parse_iso(str(values["created_at"]))
        updated_at = parse_iso(str(values["updated_at"]))
        assert created_at is not None and updated_at is not None
        return CustomerState(
            customer_id=customer_id,
            version=version,
            status=str(values["status"]),
            personal=personal if isinstance(personal, dict) else None,
            owner=_text(values["owner"]),
            locale=_text(values["locale"]),
            tags=list(json.loads(str(values["tags"]))),
            merged_into=_text(values["merged_into"]),
            created_at=created_at,
            updated_at=updated_at,
            verified_at=parse_iso(_text(values["verified_at"])),
            erased_at=parse_iso(_text(values["erased_at"])),
        )

    def row_of(self, state: CustomerState) -> tuple[object, ...]:
        sealed = None
        if state.personal is not None and not state.is_erased:
            sealed = self.sealer.seal(state.customer_id, state.version, state.personal)
        row = (
            str(state.customer_id),
            state.version,
            state.status,
            state.merged_into,
            state.owner,
            state.country,
            state.locale,
            json.dumps(sorted(state.tags)),
            iso(state.created_at),
            iso(state.updated_at),
            iso(state.verified_at),
            iso(state.erased_at),
            sealed,
        )
        return (*row, self.mac.of(row))

    def write(self, tx: Tx, states: Sequence[CustomerState]) -> None:
        if not states:
            return
        rows = [self.row_of(state) for state in states]
        tx.insert(TABLE, COLUMNS, rows, upsert_on="customer_id", types=COLUMN_TYPES)
        ids = [str(row[0]) for row in rows]
        for chunk in chunks(ids):
            where, params = tx.is_in("customer_id", chunk)
            tx.execute(f"DELETE FROM {TAGS} WHERE {where}", params)
            tx.execute(f"DELETE FROM {LOOKUP} WHERE {where}", params)
        tags: list[tuple[str, str]] = []
        digests: list[tuple[bytes, str]] = []
        for state, row, customer_id in zip(states, rows, ids, strict=True):
            if state.is_erased:
                continue
            tags += [(tag, customer_id) for tag in sorted(set(state.tags))]
            if row[PERSONAL] is not None and state.personal is not None:
                digests += [
                    (digest, customer_id)
                    for digest in sorted(digests_of(self.index_key, state.personal))
                ]
        tx.insert(TAGS, ("tag", "customer_id"), tags)
        tx.insert(LOOKUP, ("digest", "customer_id"), digests, types={"digest": "bytea"})


def _text(value: object) -> str | None:
    return None if value is None else str(value)
