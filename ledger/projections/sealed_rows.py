"""Personal data in projection rows: sealed under the customer's own data key (DESIGN
invariant 6), so destroying the key also shreds every copy a purge might have missed.

The associated data names the table, the customer and the row's version, so a sealed value
copied to another row, another customer or an older version does not open. The nonce is
synthetic (see `ledger.crypto_shred.sealing`): the same row at the same version always
seals to the same bytes, which is what makes a rebuild byte-identical to the incremental
result. Values are canonical JSON (sorted keys), so equal data means equal plaintext.

A customer registered with category keys (`DataKey.bundled`) has its rows sealed per
category as its events are: a JSON envelope of one part per category present (under that
category's key) and a base part (under the customer key) for anything uncategorised, each
part sealed deterministically with the category in its associated data. Destroying a
category's key then shreds that part in every row and every backup of the projection
database too, not only the rows a purge re-wrote. The format follows the key, never a
prefix of the bytes, so a single-key customer's rows are exactly as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from ledger.crypto_shred.category_keys import key_category_of
from ledger.crypto_shred.keyring import KeyRing
from ledger.crypto_shred.keystore import DataKey
from ledger.crypto_shred.sealing import SealOpenError, open_sealed, seal_deterministic
from ledger.projections.row_mac import ProjectionRowTampered

ROW_AAD_VERSION = b"ledger.row.v1"


class RowSealError(ProjectionRowTampered):
    """A sealed projection value does not open although its key lives: the row was
    altered or copied from elsewhere. Names the table and customer id only."""

    def __init__(self, table: str, customer_id: UUID) -> None:
        super().__init__(table, str(customer_id), "does not open")


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# (customer, version) -> (the data, its canonical JSON), inside `shared_plaintexts` only.
_PLAINTEXTS: ContextVar[dict[tuple[UUID, int], tuple[Any, bytes]] | None] = ContextVar(
    "ledger_row_plaintexts", default=None
)


@contextmanager
def shared_plaintexts() -> Iterator[None]:
    """Within the block (the runner applies one batch in it), projections that seal the
    same customer's data at the same version — the current view and the duplicate index
    fold the same events — encode its canonical JSON once. A value is reused only for
    equal data (the fold is a pure function of the log, so it always is). The memo belongs
    to this thread's block and is dropped when it ends: no plaintext outlives the batch."""
    token = _PLAINTEXTS.set({})
    try:
        yield
    finally:
        _PLAINTEXTS.reset(token)


def _plaintext(customer_id: UUID, version: int, data: Any) -> bytes:
    memo = _PLAINTEXTS.get()
    if memo is None:
        return canonical_json(data)
    hit = memo.get((customer_id, version))
    if hit is not None and hit[0] == data:
        return hit[1]
    encoded = canonical_json(data)
    memo[(customer_id, version)] = (data, encoded)
    return encoded


def row_aad(table: str, customer_id: UUID, version: int) -> bytes:
    return b"|".join([ROW_AAD_VERSION, table.encode(), str(customer_id).encode(), b"%d" % version])


class RowSealer:
    def __init__(self, keys: KeyRing, table: str) -> None:
        self.keys = keys
        self.table = table

    def seal(self, customer_id: UUID, version: int, data: Any) -> bytes | None:
        """None when the customer's key is gone: there is nothing left to keep."""
        key = self.keys.get(customer_id)
        if key is None:
            return None
        if key.bundled and isinstance(data, dict):
            return self._seal_parts(key, customer_id, version, data)
        return seal_deterministic(
            key.key,
            _plaintext(customer_id, version, data),
            row_aad(self.table, customer_id, version),
        )

    def _seal_parts(
        self, key: DataKey, customer_id: UUID, version: int, data: dict[str, Any]
    ) -> bytes:
        groups: dict[str, dict[str, Any]] = {}
        for name, value in data.items():
            groups.setdefault(key_category_of(name) or "", {})[name] = value
        aad = row_aad(self.table, customer_id, version)
        envelope: dict[str, str] = {}
        for category, group in groups.items():
            part_key = key.key if category == "" else _category_key(key, category)
            if part_key is None:
                continue  # destroyed: the field has no place in a row any more
            blob = seal_deterministic(
                part_key, canonical_json(group), aad + b"|" + category.encode()
            )
            envelope[category] = base64.b64encode(blob).decode("ascii")
        return canonical_json(envelope)

    def open(self, customer_id: UUID, version: int, blob: bytes | None) -> Any | None:
        """The value, or None when there is none or its key is gone (erased). In a
        per-category row a destroyed category's part is left out (its key is gone)."""
        if blob is None:
            return None
        key = self.keys.get(customer_id)
        if key is None:
            return None
        aad = row_aad(self.table, customer_id, version)
        if key.bundled:
            return self._open_parts(key, customer_id, bytes(blob), aad)
        try:
            plaintext = open_sealed(key.key, bytes(blob), aad)
        except SealOpenError:
            raise RowSealError(self.table, customer_id) from None
        return json.loads(plaintext)

    def _open_parts(self, key: DataKey, customer_id: UUID, blob: bytes, aad: bytes) -> Any:
        try:
            envelope = json.loads(blob)
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
            opened: dict[str, Any] = {}
            for category, text in envelope.items():
                part_key = key.key if category == "" else _category_key(key, category)
                if part_key is None:
                    continue
                part = open_sealed(
                    part_key, base64.b64decode(text, validate=True), aad + b"|" + category.encode()
                )
                opened.update(json.loads(part))
        except (SealOpenError, ValueError, TypeError):
            raise RowSealError(self.table, customer_id) from None
        return opened


def _category_key(key: DataKey, category: str) -> bytes | None:
    """None when the category is destroyed (the key ring leaves out what the log says is
    destroyed, whatever the key store holds)."""
    found = key.categories.get(category)
    return None if found is None else found.key
