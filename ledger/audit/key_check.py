"""The key check of `ledger verify`: the log and the key store agree on who is erased.

The log decides who is erased (a `Customer.Erased` event). So every customer the log
registered and does not record as erased must have a live data key — one that is gone was
lost (a deleted row, a key destroyed outside an erasure, a lost or partly restored key
store): an integrity failure, not an erasure. And an erased customer must have no live key
(a key store restored from before the erasure): the ledger never uses it and destroys it
when it next opens, but until then it is a copy of a key that should not exist.

Reads key metadata only (which customers have a live key), never a key's bytes, so no KEK
is needed; the key store is opened read-mostly and a missing SQLite key store file is
reported, not created.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.audit.storage import AuditStore
from ledger.audit.verifier import Problem
from ledger.config import Settings
from ledger.crypto_shred.erasures import ERASED_TOPIC
from ledger.crypto_shred.kek import KeyUnwrapError
from ledger.crypto_shred.keystore import open_key_store, sqlite_key_store_path
from ledger.domain.customer import Customer

REGISTERED_TOPIC = get_topic(Customer.Registered)
MAX_NAMED = 50


class _MetadataOnly:
    """A KEK provider that wraps and unwraps nothing: the check reads no key bytes."""

    def active_kek_id(self) -> str:
        raise KeyUnwrapError("the key check of `ledger verify` uses no KEK")

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        raise KeyUnwrapError("the key check of `ledger verify` uses no KEK")

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        raise KeyUnwrapError("the key check of `ledger verify` uses no KEK")


def check_keys(store: AuditStore, settings: Settings) -> list[Problem]:
    """The problems found (customer ids only, at most `MAX_NAMED` of each kind)."""
    url = settings.resolved_key_store_url
    path = sqlite_key_store_path(url)
    if path is not None and not path.exists():
        return [
            Problem(
                None,
                f"the key store {path} is missing: every customer's data key is lost "
                "(restore it from its backup)",
            )
        ]
    registered = {UUID(i) for i in store.originators(REGISTERED_TOPIC)}
    erased = {UUID(i) for i in store.originators(ERASED_TOPIC)}
    with open_key_store(url, _MetadataOnly()) as key_store:
        live = key_store.live_ids()
    problems: list[Problem] = []
    lost = sorted(registered - erased - live)
    for customer_id in lost[:MAX_NAMED]:
        problems.append(
            Problem(
                None,
                f"the data key of customer {customer_id} is missing, but the log records no "
                "erasure of it: the key was lost (integrity failure)",
            )
        )
    if len(lost) > MAX_NAMED:
        problems.append(Problem(None, f"… and {len(lost) - MAX_NAMED} more lost data keys"))
    revived = sorted(erased & live)
    for customer_id in revived[:MAX_NAMED]:
        problems.append(
            Problem(
                None,
                f"customer {customer_id} is erased in the log but the key store holds a live "
                "key for it (restored from an older copy?): never used; the ledger destroys "
                "it again when it next opens",
            )
        )
    if len(revived) > MAX_NAMED:
        problems.append(Problem(None, f"… and {len(revived) - MAX_NAMED} more revived keys"))
    return problems
