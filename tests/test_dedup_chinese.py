"""Chinese names: hanzi, pinyin in either order, with or without tone marks, one person."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.projections.dedup.index import DuplicateIndex
from ledger.projections.dedup.keys import KEY_KINDS, PINYIN, BlockingKeyer
from ledger.projections.dedup.record import prepare
from tests.dedup_samples import sample

SECRET = b"c" * 32
BORN = {"birth_date": "1988-03-14"}
SPELLINGS: dict[str, dict[str, Any]] = {
    "hanzi": {"given_name": "伟", "family_name": "张", **BORN},
    "pinyin": {"given_name": "Wei", "family_name": "Zhang", **BORN},
    "family-first caps": {"given_name": "ZHANG", "family_name": "Wei", **BORN},
    "family caps": {"given_name": "Wei", "family_name": "ZHANG", **BORN},
    "one field": {"family_name": "张伟", **BORN},
    "tone marks": {"given_name": "Wěi", "family_name": "Zhāng", **BORN},
}


def keys(profile: dict[str, Any], kinds: tuple[str, ...] = KEY_KINDS) -> frozenset[bytes]:
    return BlockingKeyer(SECRET, kinds).keys(prepare(profile))


@pytest.mark.parametrize("spelling", [s for s in SPELLINGS if s != "hanzi"])
def test_every_spelling_of_zhang_wei_blocks_with_the_hanzi(spelling: str) -> None:
    shared = keys(SPELLINGS["hanzi"]) & keys(SPELLINGS[spelling])
    assert BlockingKeyer(SECRET).digest(PINYIN, "wei zhang") in shared


def test_without_pinyin_keys_hanzi_and_latin_only_meet_on_other_fields() -> None:
    no_pinyin = tuple(k for k in KEY_KINDS if k != PINYIN)
    hanzi = {"given_name": "伟", "family_name": "张"}
    latin = {"given_name": "Wei", "family_name": "Zhang"}
    assert keys(hanzi) & keys(latin)
    assert not keys(hanzi, no_pinyin) & keys(latin, no_pinyin)


def test_a_different_name_does_not_block_with_zhang_wei() -> None:
    for other in (
        {"given_name": "娜", "family_name": "李"},
        {"given_name": "Wei", "family_name": "Wang"},
    ):
        assert not keys({"given_name": "伟", "family_name": "张", **BORN}) & keys(
            {**other, **BORN} | {"birth_date": "1990-01-01"}
        )


@pytest.fixture(scope="module")
def index() -> DuplicateIndex:
    """A ledger with ordinary customers, and Zhang Wei entered in every spelling."""
    profiles, _ = sample(60, seed=2)
    index = DuplicateIndex(BlockingKeyer(SECRET))
    for customer_id, profile in profiles.items():
        index.add(customer_id, profile)
    for spelling, profile in SPELLINGS.items():
        index.add(spelling, profile)
    index.refit()
    return index


def test_every_spelling_scores_as_the_same_person(index: DuplicateIndex) -> None:
    for spelling in SPELLINGS:
        found = {m.customer_id for m in index.lookup_customer(spelling, min_score=0.5)}
        assert found == set(SPELLINGS) - {spelling}, spelling


def test_another_zhang_wei_is_not_the_same_person(index: DuplicateIndex) -> None:
    """张伟 is among the most common names in China: the name alone is no duplicate."""
    namesake = {
        "given_name": "伟",
        "family_name": "张",
        "birth_date": "1975-11-02",
        "phones": ["+8613812345678"],
        "addresses": [{"locality": "Chengdu", "postcode": "610000", "country": "CN"}],
    }
    matches = index.lookup(namesake)
    assert {m.customer_id for m in matches} >= set(SPELLINGS)  # blocked together...
    assert all(m.score < 0.5 for m in matches)  # ...and scored apart
