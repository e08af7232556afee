"""A customer profile in the canonical form that blocking and scoring work on.

Normalising once per customer (not once per comparison) is what makes scoring tens of
thousands of candidate pairs cheap. A `Record` holds personal data in memory only; nothing
here writes it anywhere, and callers that keep records (the in-memory index) drop them on
erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.projections.dedup.normalise import (
    canonical_birth_date,
    canonical_email,
    canonical_identifier,
    canonical_phone,
    canonical_postcode,
    family_readings,
    fold,
    name_words,
    pinyin_keys,
    place,
    romanise,
    split_full_name,
)

Profile = Mapping[str, Any]
"""The domain's profile shape: given_name, family_name, emails, phones, addresses,
birth_date, external_ids ({scheme: value}) and/or ``external_id:SCHEME`` entries."""

_EXTERNAL_ID_PREFIX = "external_id:"


@dataclass(frozen=True, slots=True)
class Address:
    street_number: str
    line1: str
    line2: str
    locality: str
    region: str
    postcode: str
    country: str


@dataclass(frozen=True, slots=True)
class Record:
    """Canonical values; "" or () where the profile has none."""

    given: str  # romanised, without spaces: scored with Jaro-Winkler
    family: str
    given_words: tuple[str, ...]  # canonical words: blocked on
    family_words: tuple[str, ...]
    pinyin: frozenset[str]  # sorted-syllable forms when the name is (or reads as) Chinese
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    birth_date: str
    addresses: tuple[Address, ...]
    external_ids: tuple[tuple[str, str], ...]  # (scheme, canonical value), sorted
    family_readings: tuple[str, ...] = ()  # other romanisations of a Chinese family name


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def _canonical(form: Callable[[str | None], str], values: object) -> tuple[str, ...]:
    """Canonical forms of a list of strings, without empties and repeats, in order."""
    return tuple(dict.fromkeys(c for c in map(form, _strings(values)) if c))


def _text(mapping: Mapping[str, Any], name: str) -> str | None:
    value = mapping.get(name)
    return value if isinstance(value, str) else None


def _address(raw: Mapping[str, Any]) -> Address:
    return Address(
        street_number=canonical_identifier(_text(raw, "street_number")),
        line1=place(_text(raw, "address_line1")),
        line2=place(_text(raw, "address_line2")),
        locality=place(_text(raw, "locality")),
        region=place(_text(raw, "region")),
        postcode=canonical_postcode(_text(raw, "postcode")),
        country=fold(_text(raw, "country")),
    )


def external_ids(profile: Profile) -> dict[str, str]:
    """Scheme → value from both spellings the domain accepts (the ``external_ids`` mapping
    and ``external_id:SCHEME`` entries), as `split_profile` merges them."""
    merged: dict[str, str] = {}
    mapping = profile.get("external_ids")
    if isinstance(mapping, Mapping):
        merged.update({k: v for k, v in mapping.items() if isinstance(v, str)})
    for key, value in profile.items():
        if key.startswith(_EXTERNAL_ID_PREFIX) and isinstance(value, str):
            merged[key[len(_EXTERNAL_ID_PREFIX) :]] = value
    return merged


def prepare(profile: Profile) -> Record:
    """The canonical record of one profile (missing or malformed fields become empty)."""
    given, family = split_full_name(_text(profile, "given_name"), _text(profile, "family_name"))
    raw_addresses = profile.get("addresses")
    addresses = tuple(
        _address(raw)
        for raw in (raw_addresses if isinstance(raw_addresses, list | tuple) else ())
        if isinstance(raw, Mapping)
    )
    identifiers = sorted(
        {
            (fold(scheme), canonical_identifier(value))
            for scheme, value in external_ids(profile).items()
            if canonical_identifier(value)
        }
    )
    return Record(
        given=romanise(given),
        family=romanise(family),
        given_words=name_words(given),
        family_words=name_words(family),
        pinyin=pinyin_keys(given, family),
        emails=_canonical(canonical_email, profile.get("emails")),
        phones=_canonical(canonical_phone, profile.get("phones")),
        birth_date=canonical_birth_date(_text(profile, "birth_date")),
        addresses=tuple(dict.fromkeys(addresses)),
        external_ids=tuple(identifiers),
        family_readings=family_readings(family),
    )
