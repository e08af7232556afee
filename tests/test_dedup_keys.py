"""Blocking keys: what should meet does, and nothing is stored in a guessable form."""

from __future__ import annotations

import hashlib

import pytest

from ledger.projections.dedup.keys import KEY_BYTES, KEY_KINDS, BlockingKeyer, key_values
from ledger.projections.dedup.record import prepare

SECRET = b"s" * 32


def keys(profile: dict[str, object], secret: bytes = SECRET) -> frozenset[bytes]:
    return BlockingKeyer(secret).keys(prepare(profile))


def test_every_kind_of_key_is_produced() -> None:
    profile = {
        "given_name": "Wei",
        "family_name": "Zhang",
        "emails": ["wei.zhang+shop@example.org"],
        "phones": ["+61412345678"],
        "birth_date": "1980-02-29",
        "addresses": [
            {
                "street_number": "12",
                "address_line1": "Kent St",
                "locality": "Sydney",
                "postcode": "2000",
                "country": "AU",
            }
        ],
        "external_ids": {"CRM": "C-1"},
        "external_id:TAX": "T 9",
    }
    values = list(key_values(prepare(profile)))
    assert {kind for kind, _ in values} == set(KEY_KINDS)
    assert ("email", "wei.zhang@example.org") in values
    assert ("external_id", "crm:c1") in values and ("external_id", "tax:t9") in values
    assert ("postcode_initial", "2000:z") in values and ("postcode_initial", "2000:w") in values
    assert ("address", "au::12:kent") in values


def test_keys_are_truncated_hmacs_under_the_secret() -> None:
    profile = {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1985-12-10"}
    mine = keys(profile)
    assert mine and all(len(key) == KEY_BYTES for key in mine)
    # Another secret gives unrelated keys: a leaked table is useless without the secret.
    assert not mine & keys(profile, b"t" * 32)
    # Not an unkeyed hash of any key value (the brute-forceable form DESIGN forbids).
    unkeyed = set()
    for kind, value in key_values(prepare(profile)):
        for text in (value, f"{kind}\x1f{value}"):
            unkeyed.add(hashlib.sha256(text.encode()).digest()[:KEY_BYTES])
    assert not mine & unkeyed


def test_kinds_are_separated() -> None:
    keyer = BlockingKeyer(SECRET)
    assert keyer.digest("name", "2000") != keyer.digest("postcode_initial", "2000")


def test_two_entries_of_one_person_share_keys_despite_typos() -> None:
    first = {"given_name": "Joel", "family_name": "Ryan", "birth_date": "1972-06-15"}
    second = {"given_name": "Joel", "family_name": "Ryamn"}  # typo, no birth date
    assert keys(first) & keys(second)  # "joel" + family initial


def test_unrelated_people_share_no_key() -> None:
    first = {"given_name": "Joel", "family_name": "Ryan", "birth_date": "1972-06-15"}
    second = {"given_name": "Mia", "family_name": "Patel", "birth_date": "1990-01-01"}
    assert not keys(first) & keys(second)


def test_bad_secrets_and_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BlockingKeyer(b"short")
    with pytest.raises(ValueError, match="unknown blocking key kinds: surname"):
        BlockingKeyer(SECRET, ["surname"])


def test_a_subset_of_kinds_can_be_chosen() -> None:
    profile = {"given_name": "伟", "family_name": "张", "birth_date": "1980-01-01"}
    without_pinyin = BlockingKeyer(SECRET, [k for k in KEY_KINDS if k != "pinyin"])
    everything = BlockingKeyer(SECRET)
    record = prepare(profile)
    assert everything.digest("pinyin", "wei zhang") in everything.keys(record)
    assert everything.digest("pinyin", "wei zhang") not in without_pinyin.keys(record)
