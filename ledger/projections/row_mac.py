"""Projection rows that nobody with only the database can forge.

Access decisions read projection rows: a `sales` principal lists the customers whose
`owner` column names it, merged customers are hidden by their `status`, an erased one is a
tombstone. Those columns are readable (they are what the queries filter on), so someone
who can write to the database — and nothing else — could hand a customer to another owner
by editing one column. Every row of a folded projection therefore carries `row_mac`:
HMAC-SHA256 over its table, every other column and the sealed personal blob, under a
secret derived from the index key (which lives outside the database, like the KEK). Rows
are checked when read, before anything in them is believed; one that fails is an integrity
failure naming the table and the customer id, never a value.

The MAC covers every column, so one check (a microsecond or so) makes the whole row
sound, whether or not it holds a sealed value: tombstones, rows whose key was destroyed
before their `Erased` event was applied, owner, status, merged_into, tags and times alike.
It is deterministic, so a rebuild writes the same bytes as incremental processing.

What a MAC cannot tell is a whole row put back from an older state of the same customer (a
sound row, once). The log can: `ledger projections --check` compares every row's version
with its customer's last version in the log, and a catch-up that meets a row behind its
customer's next event replaces it from the log instead of folding onto it
(`FoldingProjection.apply`). Until then such a row is served as it is: checking each read
against the log would cost a round trip per call.

A row that fails its check during a catch-up is replaced the same way (folding it would
launder the edit under a fresh MAC; refusing it would stall every projection). A row that
fails when queried fails the call: DATA_LOSS, reason PROJECTION_ROW_TAMPERED.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ledger.crypto_shred.mapper import SealError
from ledger.projections.index_key import IndexKey

ROW_MAC_KIND = "projection-row-mac"
ROW_MAC_VERSION = b"ledger.row-mac.v1"


class ProjectionRowTampered(SealError):
    """A projection row, or an index entry leading to it, does not match what this ledger
    wrote: it was altered in the database. Names the table and the customer id only; the
    projection is repaired by `ledger rebuild`."""

    def __init__(
        self, table: str, customer_id: str, what: str = "fails its integrity check"
    ) -> None:
        self.table = table
        self.customer_id = customer_id
        super().__init__(
            f"{table} row of customer {customer_id} {what}: altered outside the ledger"
            " (repair with `ledger rebuild`)"
        )


def _encoded(prefix: bytes, values: Sequence[object]) -> bytes:
    """Unambiguous bytes of a row: each value typed and length-prefixed. (Single-type
    `isinstance` checks: a union type costs several times more, and this runs per row.)"""
    parts = [prefix]
    for value in values:
        if value is None:
            parts.append(b"n")
        elif isinstance(value, str):
            text = value.encode()
            parts += (b"s%d:" % len(text), text)
        elif isinstance(value, int):
            parts.append(b"i%d;" % value)
        elif isinstance(value, bytes):
            parts += (b"b%d:" % len(value), value)
        elif isinstance(value, bytearray) or isinstance(value, memoryview):  # noqa: SIM101
            data = bytes(value)
            parts += (b"b%d:" % len(data), data)
        else:
            text = str(value).encode()
            parts += (b"s%d:" % len(text), text)
    return b"".join(parts)


class RowMac:
    """The MAC of one table's rows. The row's first value is its customer id."""

    def __init__(self, index_key: IndexKey, table: str) -> None:
        self.table = table
        self._secret = index_key.digest(ROW_MAC_KIND, table)
        self._prefix = ROW_MAC_VERSION + b"|" + table.encode() + b"|"

    def of(self, values: Sequence[object]) -> bytes:
        return hmac.digest(self._secret, _encoded(self._prefix, values), hashlib.sha256)

    def sound(self, row: Sequence[object]) -> bool:
        """Whether `row` (its MAC last) is as this ledger wrote it."""
        mac = row[-1]
        if isinstance(mac, memoryview):
            mac = bytes(mac)
        if not isinstance(mac, bytes):
            return False
        return hmac.compare_digest(self.of(row[:-1]), mac)

    def check(self, row: Sequence[object]) -> None:
        """Raise `ProjectionRowTampered` unless `row` (its MAC last) is sound."""
        if not self.sound(row):
            raise ProjectionRowTampered(self.table, str(row[0]))

    def __repr__(self) -> str:
        return f"RowMac({self.table}, <secret>)"
