"""What a store holds, counted the same way for the live ledger and a restored copy, so a
restore drill can say what the backup would lose."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.audit.key_check import REGISTERED_TOPIC
from ledger.audit.storage import AuditStore
from ledger.config import Settings
from ledger.crypto_shred.erasures import ERASED_TOPIC
from ledger.crypto_shred.kek import LocalKeyFileProvider
from ledger.crypto_shred.keystore import open_key_store


@dataclass(frozen=True)
class Counts:
    events: int
    customers: int
    erased: int
    live_keys: int
    destroyed_keys: int
    # The newest event's position in the log (events are never removed, so the live
    # store's events above a backup's last position are what restoring it would lose).
    last_position: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def count(settings: Settings) -> Counts:
    """One consistent read of the event log plus one of the key store (two stores: a
    write between them can make the key counts one customer ahead of the log)."""
    with AuditStore.open(settings) as store:
        store.check_tables()
        with store.snapshot():
            events, last = _events(store)
            customers = len(store.originators(REGISTERED_TOPIC))
            erased = len(store.originators(ERASED_TOPIC))
    provider = LocalKeyFileProvider(settings.resolved_kek_file)
    with open_key_store(settings.resolved_key_store_url, provider) as keys:
        live, destroyed = len(keys.live_ids()), len(keys.destroyed_ids())
    return Counts(events, customers, erased, live, destroyed, last)


def _events(store: AuditStore) -> tuple[int, int]:
    d = store.dialect
    rows = store._rows(f"SELECT COUNT(*), MAX({d.position}) FROM {d.events_table}")  # noqa: S608
    total, last = rows[0]
    return int(total), int(last or 0)


def now() -> datetime:
    return datetime.now(UTC)
