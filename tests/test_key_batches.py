"""Batch key operations (imports create thousands of keys, rebuilds read thousands), on
both key store adapters: all-or-nothing creation, one-query reads, and a cache prefetch
that never brings back a destroyed key."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.crypto_shred.erasures import ErasureRegistry
from ledger.crypto_shred.kek import LocalKeyFileProvider
from ledger.crypto_shred.keyring import KeyMissing, KeyRing
from ledger.crypto_shred.keystore import (
    KeyAlreadyExists,
    PostgresKeyStore,
    SQLiteKeyStore,
    SqlKeyStore,
)


@pytest.fixture(params=["sqlite", "postgres"])
def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlKeyStore]:
    provider = LocalKeyFileProvider(tmp_path / "kek.json")
    if request.param == "sqlite":
        store: SqlKeyStore = SQLiteKeyStore(tmp_path / "keys.db", provider)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store = PostgresKeyStore(dsn, provider, schema=f"batch_{secrets.token_hex(4)}")
    yield store
    store.close()


def test_create_many_then_get_many(key_store: SqlKeyStore) -> None:
    ids = [uuid4() for _ in range(1200)]  # more than one read chunk
    created = key_store.create_many(ids)
    assert [k.customer_id for k in created] == ids
    key_store.destroy(ids[5])
    found = key_store.get_many([*ids, uuid4()])
    assert len(found) == len(ids) - 1 and ids[5] not in found
    assert found[ids[7]] == created[7] == key_store.get(ids[7])


def test_create_many_is_all_or_nothing(key_store: SqlKeyStore) -> None:
    existing = uuid4()
    key_store.create(existing)
    fresh = [uuid4(), uuid4()]
    with pytest.raises(KeyAlreadyExists):
        key_store.create_many([fresh[0], existing, fresh[1]])
    assert key_store.get_many(fresh) == {}


def test_prefetch_fills_the_cache_but_not_with_destroyed_keys(key_store: SqlKeyStore) -> None:
    ids = [uuid4() for _ in range(3)]
    key_store.create_many(ids)
    key_store.destroy(ids[0])
    erasures = ErasureRegistry()
    erasures.add(ids[0])  # the log says ids[0] is erased
    ring = KeyRing(key_store, ttl=60, erasures=erasures)
    ring.prefetch(ids)
    assert ring.get(ids[0]) is None
    key_store.close()  # served from the cache alone now
    assert ring.get(ids[1]) is not None and ring.get(ids[2]) is not None


def test_a_key_gone_without_an_erasure_is_missing_not_erased(key_store: SqlKeyStore) -> None:
    ids = [uuid4() for _ in range(2)]
    key_store.create_many(ids)
    key_store.destroy(ids[0])  # destroyed, but no erasure is known for it
    ring = KeyRing(key_store, ttl=60, erasures=ErasureRegistry())
    ring.prefetch(ids)
    with pytest.raises(KeyMissing) as raised:
        ring.get(ids[0])
    assert raised.value.customer_id == ids[0]
    with pytest.raises(KeyMissing):
        ring.get(uuid4())  # never had one
    assert ring.stored_key(ids[0]) is None  # creation paths: no key (yet), no error
