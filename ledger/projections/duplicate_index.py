"""The duplicate index projection: blocking keys of every active customer, as keyed hashes.

Four tables:

* `duplicate_keys (key_hash, customer_id)`: the blocking keys of `ledger.projections.dedup`,
  HMACs under a secret derived from the ledger's index key (DESIGN invariant 7), so a dump
  cannot be brute-forced back to names or birth dates. Only active customers have rows: a
  customer merged into another loses them (and gets them back on unmerge); an erased one
  loses them for good.
* `duplicate_records`: the customer's state as this projection folds it (status, owner,
  personal fields sealed under the customer's own key, like the current view). A change
  event carries only what changed, so re-keying needs the whole profile, and a projection
  may read only its own tables (the current view can be at another position, e.g. while one
  of them rebuilds). The same rows give candidates' records for scoring, so keys and records
  always come from one position. An erased customer keeps a tombstone (id, version, status).
  A salesperson's candidates are the rows whose `owner` names it, so each row carries
  `row_mac` (see `row_mac`) and is checked whenever it is read: an edited owner or status is
  an integrity failure, never another owner's customer scored or named.
* `duplicate_model`: the fitted Fellegi-Sunter model (probabilities only, no personal
  data). It is estimated from the data, not folded from the log, so a rebuild keeps it;
  `DuplicateQueries.refit` (run by `ledger duplicates` and after an import) replaces it.
* `duplicate_labels`: pairs people decided about (merged: a match; unmerged or dismissed
  as "not a duplicate": a non-match), ids only; see `duplicate_labels`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ledger.crypto_shred.keyring import KeyRing
from ledger.domain.customer import ACTIVE, MERGED_STATUS
from ledger.projections.base import FoldingProjection, PositionedEvent, Tombstone
from ledger.projections.current_view import CHUNK, chunks, scan
from ledger.projections.dedup import BlockingKeyer, DuplicateIndex, Model, Record, prepare
from ledger.projections.dedup.normalise import clear_caches
from ledger.projections.duplicate_labels import LABELS, LABELS_DDL, LabelTable
from ledger.projections.duplicate_lookup import compound_keys
from ledger.projections.index_key import IndexKey
from ledger.projections.record_cache import RecordCache
from ledger.projections.row_mac import ProjectionRowTampered, RowMac
from ledger.projections.sealed_rows import RowSealer
from ledger.projections.state import CustomerState
from ledger.projections.store import ProjectionDatabase, Tx

KEYS = "duplicate_keys"
RECORDS = "duplicate_records"
MODEL = "duplicate_model"
MODEL_NAME = "current"
RECORD_COLUMNS = ("customer_id", "version", "status", "owner", "personal", "row_mac")
RECORD_TYPES = {"version": "bigint", "personal": "bytea", "row_mac": "bytea"}
# The blocking secret is derived from the index key, domain-separated from lookup digests.
BLOCKING_SECRET_KIND = "duplicate-blocking-key"  # noqa: S105 - a label, not a secret
_SELECTED = ", ".join(RECORD_COLUMNS)
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # the fold wants times; these rows keep none

_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {KEYS} (
        key_hash {{blob}} NOT NULL,
        customer_id TEXT NOT NULL,
        PRIMARY KEY (key_hash, customer_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {KEYS}_by_customer ON {KEYS} (customer_id)",
    f"""CREATE TABLE IF NOT EXISTS {RECORDS} (
        customer_id TEXT PRIMARY KEY,
        version {{bigint}} NOT NULL,
        status TEXT NOT NULL,
        owner TEXT,
        personal {{blob}},
        row_mac {{blob}} NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {RECORDS}_by_owner ON {RECORDS} (owner, status)",
    f"""CREATE TABLE IF NOT EXISTS {MODEL} (
        name TEXT PRIMARY KEY,
        model TEXT NOT NULL
    )""",
]


def blocking_keyer(index_key: IndexKey) -> BlockingKeyer:
    return BlockingKeyer(index_key.digest(BLOCKING_SECRET_KIND, ""))


class DuplicateIndexProjection(FoldingProjection):
    name = "duplicate_index"
    description = "blocking keys (keyed hashes) of active customers, for duplicate detection"
    rows_table = RECORDS
    # 2: row_mac; 3: labelled pairs and compound look-up keys (older tables rebuilt on open)
    schema_version = 3
    write_weight = 20  # a record, some fifteen blocking keys and a few compound ones

    def __init__(self, keys: KeyRing, index_key: IndexKey) -> None:
        self.sealer = RowSealer(keys, RECORDS)
        self.row_mac = RowMac(index_key, RECORDS)
        self.keyer = blocking_keyer(index_key)
        self._engine = DuplicateIndex(self.keyer)  # key derivation only; holds no rows
        self.labels = LabelTable(RowMac(index_key, LABELS))

    def tables(self) -> Sequence[str]:
        return (KEYS, RECORDS, MODEL, LABELS)

    def keys_of(self, personal: Mapping[str, Any]) -> frozenset[bytes]:
        """The key rows of one customer: the engine's blocking keys and the real-time
        look-up's compound ones (`duplicate_lookup`)."""
        record = prepare(personal)
        return self._engine.keys_for(record) | compound_keys(self.keyer, record)

    def tampered(self, tx: Tx) -> list[tuple[str, str]]:
        """Records whose MAC fails. (A forged blocking key only makes a customer a
        candidate; it is scored, and its owner checked, on its sound record.)"""
        records = [
            (RECORDS, str(row[0]))
            for row in scan(tx, RECORDS, RECORD_COLUMNS)
            if not self.row_mac.sound(row)
        ]
        return records + self.labels.tampered(tx)

    def create(self, tx: Tx) -> None:
        for statement in [*_DDL, *LABELS_DDL]:
            tx.execute(statement)

    def apply(
        self, tx: Tx, events: Sequence[PositionedEvent], *, fresh: Collection[UUID] = ()
    ) -> None:
        super().apply(tx, events, fresh=fresh)
        self.labels.apply(tx, events)

    def drop(self, tx: Tx) -> None:
        """Keys and records are rebuilt from the log; the model is not a function of the
        log (it is estimated from the data) and holds no personal data, so it stays."""
        for table in (KEYS, RECORDS, LABELS):
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def purge(self, tx: Tx, tombstone: Tombstone) -> None:
        clear_caches()  # memoised canonical names are copies too (DESIGN invariant 3)
        self.labels.forget(tx, [str(tombstone.customer_id)])
        self.write(
            tx,
            [CustomerState.tombstone(tombstone.customer_id, tombstone.version, _NO_TIME, _NO_TIME)],
        )

    # Rows -----------------------------------------------------------------------------------

    def load(self, tx: Tx, ids: Sequence[UUID]) -> dict[UUID, CustomerState]:
        states: dict[UUID, CustomerState] = {}
        for chunk in chunks([str(i) for i in ids]):
            where, params = tx.is_in("customer_id", chunk)
            rows = tx.rows(
                f"SELECT {', '.join(RECORD_COLUMNS)} FROM {RECORDS} WHERE {where}", params
            )
            for row in rows:
                self.row_mac.check(row)
                customer_id, version, status, owner, blob, _ = row
                uid = UUID(str(customer_id))
                personal = self.sealer.open(
                    uid, int(version), None if blob is None else bytes(blob)
                )
                states[uid] = CustomerState(
                    customer_id=uid,
                    version=int(version),
                    status=str(status),
                    personal=personal if isinstance(personal, dict) else None,
                    owner=None if owner is None else str(owner),
                    locale=None,
                    tags=[],
                    merged_into=None,
                    created_at=_NO_TIME,
                    updated_at=_NO_TIME,
                )
        return states

    def write(self, tx: Tx, states: Sequence[CustomerState]) -> None:
        if not states:
            return
        rows = []
        ids = []
        keys: list[tuple[bytes, str]] = []
        for state in states:
            customer_id = str(state.customer_id)
            ids.append(customer_id)
            sealed = None
            if state.personal is not None and not state.is_erased:
                sealed = self.sealer.seal(state.customer_id, state.version, state.personal)
            owner = None if state.is_erased else state.owner
            row = (customer_id, state.version, state.status, owner, sealed)
            rows.append((*row, self.row_mac.of(row)))
            if state.status == ACTIVE and sealed is not None and state.personal is not None:
                digests = self.keys_of(state.personal)
                keys += [(digest, customer_id) for digest in sorted(digests)]
        tx.insert(RECORDS, RECORD_COLUMNS, rows, upsert_on="customer_id", types=RECORD_TYPES)
        for chunk in chunks(ids):
            where, params = tx.is_in("customer_id", chunk)
            tx.execute(f"DELETE FROM {KEYS} WHERE {where}", params)
        tx.insert(KEYS, ("key_hash", "customer_id"), keys, types={"key_hash": "bytea"})


# Reading the tables: the engine's `KeyStore` and `RecordSource` ------------------------------


def members_query(tx: Tx, keys: Sequence[bytes], max_block: int) -> tuple[str, list[Any]]:
    """The members of the blocks named by `keys` that have at most `max_block` members.

    Its cost must follow the blocks asked for, never the size of the index: every
    registration runs it. So the blocks are counted first, through the primary key, and
    only then are the members of the small ones read, block by block, through the same
    index. PostgreSQL is held to that order by a LATERAL subquery that cannot be flattened
    (`OFFSET 0`): given `key_hash IN (subquery)` instead, it planned a hash join over a
    sequential scan of the whole table whenever its statistics overestimated block
    sizes (before the first ANALYZE, say), ~20-60 ms per registration at 9,000
    customers and growing with every one. SQLite looks the members up by index as given.
    """
    where, params = tx.is_in("key_hash", keys)
    small_blocks = (
        f"SELECT key_hash FROM {KEYS} WHERE {where} GROUP BY key_hash HAVING COUNT(*) <= ?"
    )
    if tx.is_postgres:
        query = (
            f"SELECT b.key_hash, m.customer_id FROM ({small_blocks}) AS b CROSS JOIN LATERAL"
            f" (SELECT customer_id FROM {KEYS} AS k WHERE k.key_hash = b.key_hash OFFSET 0) AS m"
        )
    else:
        query = f"SELECT key_hash, customer_id FROM {KEYS} WHERE key_hash IN ({small_blocks})"
    return query, [*params, max_block]


class TableKeyStore:
    """`KeyStore` over `duplicate_keys`, read-only: the projection writes the rows (in the
    runner's transaction), queries only read them."""

    def __init__(self, db: ProjectionDatabase) -> None:
        self.db = db

    def put(self, customer_id: str, keys: Collection[bytes]) -> None:
        raise TypeError("the duplicate index is written by its projection only")

    def delete(self, customer_id: str) -> None:
        raise TypeError("the duplicate index is written by its projection only")

    def members(self, keys: Collection[bytes], max_block: int) -> dict[bytes, Collection[str]]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        found: dict[bytes, list[str]] = {}
        with self.db.reading() as tx:  # one statement: the blocks small enough, and members
            rows = tx.rows(*members_query(tx, wanted, max_block))
        for key_hash, customer_id in rows:
            found.setdefault(bytes(key_hash), []).append(str(customer_id))
        return dict(found)

    def shared_blocks(self, max_block: int) -> Iterable[Collection[str]]:
        with self.db.reading(snapshot=True) as tx:
            rows = tx.rows(
                f"SELECT k.key_hash, k.customer_id FROM {KEYS} k JOIN ("
                f" SELECT key_hash FROM {KEYS} GROUP BY key_hash"
                "  HAVING COUNT(*) BETWEEN 2 AND ?) shared ON shared.key_hash = k.key_hash",
                (max_block,),
            )
        blocks: dict[bytes, list[str]] = {}
        for key_hash, customer_id in rows:
            blocks.setdefault(bytes(key_hash), []).append(str(customer_id))
        return list(blocks.values())

    def some_customers(self, limit: int) -> list[str]:
        with self.db.reading() as tx:
            rows = tx.rows(
                f"SELECT customer_id FROM {RECORDS} WHERE status = ? ORDER BY customer_id LIMIT ?",
                (ACTIVE, limit),
            )
        return [str(row[0]) for row in rows]

    def __len__(self) -> int:
        with self.db.reading() as tx:
            row = tx.one(f"SELECT COUNT(*) FROM {RECORDS} WHERE status = ?", (ACTIVE,))
        return int(row[0]) if row else 0


class SealedRecords:
    """`RecordSource` over `duplicate_records`: opens each active customer's sealed fields
    under its key and prepares the canonical record. With `owner`, only that owner's
    customers exist for the caller (a salesperson never scores, nor learns of, another
    owner's customers): the query filters on `owner`, and every row it returns is checked
    against its MAC before it is believed (`ProjectionRowTampered`). Decrypted data lives in
    memory for one call only; `load_all` (batch runs) keeps it for the run, in an object the
    caller drops afterwards."""

    def __init__(
        self,
        db: ProjectionDatabase,
        keys: KeyRing,
        row_mac: RowMac,
        *,
        owner: str | None = None,
        cache: RecordCache | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.row_mac = row_mac
        self.sealer = RowSealer(keys, RECORDS)
        self.owner = owner
        self.cache = cache
        self._held: dict[str, Record] | None = None
        self._personal: dict[str, dict[str, Any]] = {}

    def records(self, customer_ids: Collection[str]) -> Mapping[str, Record]:
        if self._held is not None:
            held = self._held
            return {i: r for i in customer_ids if (r := held.get(i)) is not None}
        if self.cache is None:
            return {i: prepare(p) for i, p in self.personal(customer_ids).items()}
        found: dict[str, Record] = {}
        to_open: list[tuple[Any, ...]] = []
        for row in self._rows(customer_ids):
            customer_id, version = str(row[0]), int(row[1])
            cached = self.cache.get(customer_id, version)
            if cached is not None:
                found[customer_id] = cached
            else:
                to_open.append(row)
        if to_open:
            self.keys.prefetch([UUID(str(row[0])) for row in to_open])
            versions = {str(row[0]): int(row[1]) for row in to_open}
            for customer_id, personal in self._opened(to_open).items():
                record = prepare(personal)
                self.cache.put(customer_id, versions[customer_id], record)
                found[customer_id] = record
        return found

    def personal(self, customer_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The readable personal fields of those of `customer_ids` that are active (and the
        owner's, with `owner`)."""
        wanted = sorted(set(customer_ids))
        if not wanted:
            return {}
        self.keys.prefetch([UUID(i) for i in wanted])
        return self._opened(self._rows(wanted))

    def _rows(self, customer_ids: Collection[str]) -> list[tuple[Any, ...]]:
        """(customer_id, version, sealed personal) of the active ones (the owner's), each
        row checked against its MAC."""
        wanted = sorted(set(customer_ids))
        rows: list[tuple[Any, ...]] = []
        if not wanted:
            return rows
        with self.db.reading(snapshot=len(wanted) > CHUNK) as tx:
            for chunk in chunks(wanted):
                where, params = tx.is_in("customer_id", chunk)
                query = f"SELECT {_SELECTED} FROM {RECORDS} WHERE {where} AND status = ?"
                params.append(ACTIVE)
                if self.owner is not None:
                    query += " AND owner = ?"
                    params.append(self.owner)
                rows += tx.rows(query, params)
        return self._checked(rows)

    def _checked(self, rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """(customer_id, version, personal) of rows whose MAC holds and whose (now
        believable) status and owner are what the query asked for; else an integrity error."""
        checked = []
        for row in rows:
            self.row_mac.check(row)
            customer_id, version, status, owner, personal, _ = row
            if status != ACTIVE or (self.owner is not None and owner != self.owner):
                raise ProjectionRowTampered(RECORDS, str(customer_id), "does not match its query")
            checked.append((customer_id, version, personal))
        return checked

    def load_all(self) -> int:
        """Hold every active customer's record in memory (a batch run compares most of
        them, many times over). Returns how many."""
        query = f"SELECT {_SELECTED} FROM {RECORDS} WHERE status = ?"
        params: list[Any] = [ACTIVE]
        if self.owner is not None:
            query += " AND owner = ?"
            params.append(self.owner)
        with self.db.reading(snapshot=True) as tx:
            rows = self._checked(tx.rows(query + " ORDER BY customer_id", params))
        self.keys.prefetch([UUID(str(row[0])) for row in rows])
        self._personal = self._opened(rows)
        self._held = {i: prepare(p) for i, p in self._personal.items()}
        return len(self._held)

    def hold_merged(self, customer_ids: Collection[str]) -> int:
        """After `load_all`, also hold the records of those of `customer_ids` that are
        merged into another customer: a merge is a confirmed pair the model fit learns
        from, and its source is no longer active. Nothing leads a look-up to them (a
        merged customer has no key rows). Returns how many."""
        if self._held is None or not customer_ids:
            return 0
        rows: list[tuple[Any, ...]] = []
        with self.db.reading() as tx:
            for chunk in chunks(sorted(set(customer_ids))):
                where, params = tx.is_in("customer_id", chunk)
                rows += tx.rows(
                    f"SELECT {_SELECTED} FROM {RECORDS} WHERE {where} AND status = ?",
                    [*params, MERGED_STATUS],
                )
        opened = []
        for row in rows:
            self.row_mac.check(row)
            customer_id, version, status, owner, personal, _ = row
            if status != MERGED_STATUS or (self.owner is not None and owner != self.owner):
                raise ProjectionRowTampered(RECORDS, str(customer_id), "does not match its query")
            opened.append((customer_id, version, personal))
        self.keys.prefetch([UUID(str(row[0])) for row in opened])
        merged = {i: prepare(p) for i, p in self._opened(opened).items()}
        self._held.update(merged)
        return len(merged)

    def held_personal(self, customer_id: str) -> dict[str, Any] | None:
        return self._personal.get(customer_id)

    def _opened(self, rows: Iterable[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
        opened: dict[str, dict[str, Any]] = {}
        for customer_id, version, blob in rows:
            if blob is None:
                continue
            personal = self.sealer.open(UUID(str(customer_id)), int(version), bytes(blob))
            if isinstance(personal, dict):
                opened[str(customer_id)] = personal
        return opened


def load_model(db: ProjectionDatabase) -> Model | None:
    with db.reading() as tx:
        row = tx.one(f"SELECT model FROM {MODEL} WHERE name = ?", (MODEL_NAME,))
    return None if row is None else Model.from_dict(json.loads(str(row[0])))


def save_model(db: ProjectionDatabase, model: Model) -> None:
    text = json.dumps(model.as_dict(), sort_keys=True)
    with db.transaction() as tx:
        tx.insert(MODEL, ("name", "model"), [(MODEL_NAME, text)], upsert_on="name")
