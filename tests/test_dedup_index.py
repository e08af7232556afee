"""The duplicate index: key rows follow the customers, look-ups rank likely duplicates."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ledger.projections.dedup.index import DuplicateIndex, InMemoryKeyStore, KeyStore
from ledger.projections.dedup.keys import BlockingKeyer
from ledger.projections.dedup.normalise import romanise
from ledger.projections.dedup.score import plausible
from tests.dedup_samples import person, sample, variant

SECRET = b"i" * 32
ADA = {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1985-12-10"}
ADA_AGAIN = {"given_name": "Ada", "family_name": "Lovelance", "birth_date": "1985-12-10"}
BOB = {"given_name": "Bob", "family_name": "Smith", "birth_date": "1970-01-01"}

# Every KeyStore implementation runs the same contract; a projection-backed one joins here.
KEY_STORES: list[Callable[[], KeyStore]] = [InMemoryKeyStore]


@pytest.fixture(params=KEY_STORES, ids=lambda factory: factory.__name__)
def key_store(request: pytest.FixtureRequest) -> KeyStore:
    factory: Callable[[], KeyStore] = request.param
    return factory()


def test_key_store_contract(key_store: KeyStore) -> None:
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    key_store.put("1", [a, b])
    key_store.put("2", [b, c])
    key_store.put("3", [b])
    assert {k: set(v) for k, v in key_store.members([a, b, c], max_block=10).items()} == {
        a: {"1"},
        b: {"1", "2", "3"},
        c: {"2"},
    }
    assert set(key_store.members([b], max_block=2)) == set()  # too common: ignored
    assert sorted(sorted(block) for block in key_store.shared_blocks(10)) == [["1", "2", "3"]]
    assert sorted(key_store.some_customers(10)) == ["1", "2", "3"]
    assert len(key_store.some_customers(2)) == 2
    key_store.put("2", [a])  # re-keyed after a change
    assert {k: set(v) for k, v in key_store.members([a, c], max_block=10).items()} == {
        a: {"1", "2"}
    }
    key_store.delete("1")
    key_store.delete("2")
    key_store.delete("3")
    key_store.delete("never-added")
    assert key_store.members([a, b, c], max_block=10) == {}
    assert list(key_store.shared_blocks(10)) == []


def test_lookup_ranks_the_duplicate_first_and_explains_it() -> None:
    index = DuplicateIndex(BlockingKeyer(SECRET))
    index.add("ada", ADA)
    index.add("bob", BOB)
    matches = index.lookup(ADA_AGAIN)
    assert [m.customer_id for m in matches] == ["ada"]  # Bob shares no key
    assert matches[0].score > 0.5
    explained = {line.field: line.level for line in matches[0].explanation}
    assert explained == {"given_name": "exact", "family_name": "close", "birth_date": "exact"}
    assert index.lookup_customer("ada") == []  # never its own duplicate
    assert index.lookup(ADA_AGAIN, min_score=0.999_999_999) == []


def test_removed_customers_leave_no_rows_and_are_not_found() -> None:
    store = InMemoryKeyStore()
    index = DuplicateIndex(BlockingKeyer(SECRET), store=store)
    index.add("ada", ADA)
    index.add("bob", BOB)
    index.erase("ada")
    assert {customer for _, customer in store.rows()} == {"bob"}
    assert romanise.cache_info().currsize == 0  # no memoised name of Ada's either
    assert index.lookup(ADA_AGAIN) == []
    index.add("ada-2", ADA)  # the same person registered again: a new customer
    assert [m.customer_id for m in index.lookup(ADA_AGAIN)] == ["ada-2"]


def test_a_change_re_keys_the_customer() -> None:
    index = DuplicateIndex(BlockingKeyer(SECRET))
    index.add("x", ADA)
    index.add("x", BOB)  # profile changed completely
    assert index.lookup(ADA_AGAIN) == []
    assert [m.customer_id for m in index.lookup(BOB)] == ["x"]


def test_keys_shared_by_too_many_customers_are_ignored() -> None:
    index = DuplicateIndex(BlockingKeyer(SECRET), max_block=3)
    for n in range(5):  # five people born the same day
        index.add(f"c{n}", {"family_name": f"Name{n}", "birth_date": "1980-01-01"})
    assert index.candidates({"family_name": "Other", "birth_date": "1980-01-01"}) == set()


def test_refit_learns_from_the_index_and_finds_the_variants() -> None:
    profiles, truth = sample(60)
    index = DuplicateIndex(BlockingKeyer(SECRET))
    for customer_id, profile in profiles.items():
        index.add(customer_id, profile)
    model = index.refit()
    assert model.pairs == len(index.candidate_pairs()) and model.iterations > 1
    found = {
        tuple(sorted((customer_id, m.customer_id)))
        for customer_id in profiles
        for m in index.lookup_customer(customer_id, min_score=0.5)
    }
    assert found == truth


def test_a_ledger_without_duplicates_still_gets_a_same_person_model() -> None:
    """EM alone would split such a ledger along anything (shared streets, common names);
    the estimate then falls back to chance agreement counted on random pairs."""
    rng = random.Random(4)
    people = {f"c{n}": person(rng, n) for n in range(300)}
    index = DuplicateIndex(BlockingKeyer(SECRET))
    for customer_id, profile in people.items():
        index.add(customer_id, profile)
    model = index.refit()
    assert model.method in ("em-sessions", "fallback") and plausible(model)
    returning = variant(people["c7"], rng)
    assert [m.customer_id for m in index.lookup(returning, min_score=0.5)] == ["c7"]
    newcomer = person(rng, 1000)
    assert index.lookup(newcomer, min_score=0.5) == []
