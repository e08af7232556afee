"""A customer base for the real-time look-up benchmark, with realistic name frequencies.

A mix of three populations drawn with the generators of `bench.sets` (so with their name
frequencies): 55% English-speaking (family names at Faker en_GB's weights: Smith, Jones,
Williams ...; an email and a mobile number for most), 30% Chinese (王, 李, 张 at about 7%
each, 伟, 芳, 娜, 敏 among the given names, so 王伟, 李娜 and 张敏 are many people; hanzi
names, mobile numbers, city addresses) and 15% German (Müller, Schmidt ...; birth dates).

`customers(count, seed)` gives each customer's first record as a ledger profile, and the
record the same person would give when coming back (a typo, another name form, another
phone format, a new email: the variations of `bench.sets`). `queries` mixes returning
people (expected: their customer), new people drawn from the same populations and new
people who share an existing customer's full name (namesakes; half in the same town):
neither kind is in the ledger, and flagging either is a false alarm.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.sets import chinese, english, german

POPULATIONS: tuple[tuple[str, float, str], ...] = (
    ("en", 0.55, english.COUNTRY),
    ("zh", 0.30, chinese.COUNTRY),
    ("de", 0.15, german.COUNTRY),
)
_COLUMNS = {"en": english.COLUMNS_CONTACT, "zh": chinese.COLUMNS, "de": german.COLUMNS}
Draw = Callable[[random.Random], tuple[dict[str, str], dict[str, str]]]
_LISTS = ("emails", "phones")
_ADDRESS = (
    "street_number",
    "address_line1",
    "address_line2",
    "locality",
    "region",
    "postcode",
)


def _phone(text: str, country: str) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def profile(row: dict[str, str], population: str, *, normalise_phone: bool) -> dict[str, Any]:
    """A generated row as a ledger profile (what `ledger import` makes of it). Customers'
    phones are given in E.164 (as the import stores them); a query keeps the raw format
    (`normalise_phone=False`) only when it is international, since a look-up has no
    default country."""
    country = dict((name, c) for name, _, c in POPULATIONS)[population]
    result: dict[str, Any] = {}
    address: dict[str, str] = {}
    for column, target in _COLUMNS[population].items():
        value = row.get(column, "")
        if not value:
            continue
        if target == "phones":
            if normalise_phone or not value.lstrip("(").startswith(("+", "00")):
                value = _phone(value, country) or ""
            if value:
                result["phones"] = [value]
        elif target in _LISTS:
            result[target] = [value]
        elif target in _ADDRESS:
            address[target] = value
        else:
            result[target] = value
    if address:
        result["addresses"] = [{**address, "country": country}]
    return result


@dataclass(frozen=True)
class Population:
    first: dict[str, dict[str, Any]]  # customer key -> profile as first registered
    returning: dict[str, dict[str, Any]]  # customer key -> profile when coming back
    population_of: dict[str, str]  # customer key -> "en" | "zh" | "de"


def _draws(seed: int) -> dict[str, Draw]:
    return {
        "en": english.people(seed, contact=True),
        "zh": chinese.people(seed),
        "de": german.people(seed),
    }


def _which(rng: random.Random) -> str:
    x = rng.random()
    for name, share, _ in POPULATIONS:
        if x < share:
            return name
        x -= share
    return POPULATIONS[-1][0]


def customers(count: int, *, seed: int = 1) -> Population:
    draws, rng = _draws(seed), random.Random(seed)
    first, returning, population_of = {}, {}, {}
    for n in range(count):
        name = _which(rng)
        original, again = draws[name](rng)
        key = f"{name}-{n:07d}"
        first[key] = profile(original, name, normalise_phone=True)
        returning[key] = profile(again, name, normalise_phone=False)
        population_of[key] = name
    return Population(first, returning, population_of)


@dataclass(frozen=True)
class Query:
    profile: dict[str, Any]
    expected: str | None  # the customer key it duplicates, or None for a new person
    population: str
    kind: str = "returning"  # returning | new | namesake


def _namesake(
    existing: dict[str, Any], fresh: dict[str, Any], rng: random.Random
) -> dict[str, Any]:
    """A new person with an existing customer's full name (and, half the time, town):
    another birth date, phone, email and street."""
    twin = {**fresh}
    for name in ("given_name", "family_name"):
        if name in existing:
            twin[name] = existing[name]
        else:
            twin.pop(name, None)
    theirs = existing.get("addresses", [{}])[0]
    if rng.random() < 0.5 and "addresses" in twin and theirs.get("locality"):
        twin["addresses"] = [{**twin["addresses"][0], "locality": theirs["locality"]}]
    return twin


def queries(existing: Population, count: int, *, seed: int = 2) -> list[Query]:
    """Half returning customers; a quarter new people from the same populations; a
    quarter new people who share an existing customer's full name (half of them in the
    same town): the namesakes that common names make, which must not be flagged either."""
    rng = random.Random(seed)
    draws = _draws(seed + 100)
    keys = sorted(existing.first)
    out: list[Query] = []
    for n in range(count):
        if n % 4 in (1, 3):
            key = rng.choice(keys)
            name = existing.population_of[key] if n % 4 == 3 else _which(rng)
            original, _ = draws[name](rng)
            fresh = profile(original, name, normalise_phone=True)
            if n % 4 == 3:
                namesake = _namesake(existing.first[key], fresh, rng)
                out.append(Query(namesake, None, name, "namesake"))
            else:
                out.append(Query(fresh, None, name, "new"))
        else:
            key = rng.choice(keys)
            out.append(Query(existing.returning[key], key, existing.population_of[key]))
    return out
