"""German-style customers with birth dates: the traps of a German CRM export.

    build(people, seed) -> LabelledSet      (bench.sets.LabelledSet)

Names follow real frequencies (`bench.sets.frequencies`: Müller, Schmidt, Schneider ... at a
Zipf-like share, Michael, Thomas, Ursula, Sabine ... likewise; a tail of Faker's de_DE,
de_AT and de_CH names), so many different people share a common name. Each person has a
birth date, an address (street, number, five-digit postcode, town), and maybe an email and
a mobile number (national "0151 2345678" or international "+49 151 2345678").

About 40% of people have one more record (10% two more), each with one *variation* (the
label of the true pair; half of them keep the birth date, half carry a birth-date one):

  dob_one_digit     one digit of the birth date mistyped, still a valid date
  dob_two_digits    two digits mistyped (1975-03-14 -> 1957-03-14, 1975-08-19)
  dob_day_month     day and month transposed (1975-03-11 -> 1975-11-03)
  dob_year_only     only the year known, entered as YYYY-01-01
  dob_year_text     only the year known, entered as "1975" (not a date: the import drops it)
  dob_impossible    a date no calendar has (30 February, month 13, day 00), plus a name typo
  dob_missing       no birth date on the second record
  name_typo         a typo in the given or family name
  umlaut            Müller -> Mueller / Muller, Jürgen -> Juergen
  moved             same name and birth date, another address, phone and email
  contact_only      same person, new email; everything else as before

and independently of the variation, a third of the second records have moved (another
address) and most have another or no email.

Hard negatives (labelled in `hard_negatives`):

  twin              same family name and birth date, another given name (not a near
                    spelling), own mobile; same address half the time (1% of people)
  same_dob          same family name and birth date, another given name, elsewhere
  parent_child      same given and family name and address, birth dates 20-35 years apart
  namesake          same given and family name, another birth date (forced for 3% of
                    people, and every chance pair of common names in the set is labelled too)
  namesake_same_town  the same, in the same town
"""

from __future__ import annotations

import importlib
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from bench.sets import Collector, LabelledSet, frequencies, typos

COLUMNS = {
    "vorname": "given_name",
    "nachname": "family_name",
    "geburtsdatum": "birth_date",
    "strasse": "address_line1",
    "hausnummer": "street_number",
    "plz": "postcode",
    "ort": "locality",
    "email": "emails",
    "telefon": "phones",
}
COUNTRY = "DE"
VARIATIONS = (
    "dob_one_digit",
    "dob_two_digits",
    "dob_day_month",
    "dob_year_only",
    "dob_year_text",
    "dob_impossible",
    "dob_missing",
    "name_typo",
    "umlaut",
    "moved",
    "contact_only",
)
# Relative frequencies: half of the second records keep the birth date exactly (as most
# real duplicates do), the other half carry one of the seven birth-date variations.
WEIGHTS = (1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 2)
_DOMAINS = ("web.de", "gmx.de", "t-online.de", "gmail.com", "freenet.de", "posteo.de")


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    born: date
    street: str
    number: str
    postcode: str
    town: str
    email: str
    phone: str


@dataclass(frozen=True)
class _Pools:
    family: frequencies.Weighted
    male: frequencies.Weighted
    female: frequencies.Weighted
    streets: tuple[str, ...]
    towns: tuple[tuple[str, str], ...]  # (town, postcode prefix of 3 digits)


def _provider(module: str) -> Any:
    return importlib.import_module(f"faker.providers.{module}").Provider


def _pools(seed: int) -> _Pools:
    from faker import Faker

    tail = [
        name
        for locale in ("de_DE", "de_AT", "de_CH")
        for name in _provider(f"person.{locale}").last_names
    ]
    person = _provider("person.de_DE")
    fake = Faker("de_DE")
    fake.seed_instance(seed)
    streets = tuple(sorted({fake.street_name() for _ in range(3_000)}))
    rng = random.Random(seed)
    towns = tuple(
        (town, f"{rng.randint(10, 99)}{rng.randint(0, 9)}")
        for town in sorted(set(_provider("address.de_DE").cities))
    )
    return _Pools(
        family=frequencies.german_surnames(sorted(set(tail))),
        male=frequencies.german_given(sorted(set(person.first_names_male)), female=False),
        female=frequencies.german_given(sorted(set(person.first_names_female)), female=True),
        streets=streets,
        towns=towns,
    )


def _email(given: str, family: str, rng: random.Random) -> str:
    local = f"{typos.ascii_fold(given)}.{typos.ascii_fold(family)}".lower().replace(" ", "")
    return f"{local}{rng.randint(1, 999)}@{rng.choice(_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    prefix, number = (
        rng.choice(("151", "160", "170", "171", "176", "157")),
        rng.randint(1_000_000, 9_999_999),
    )
    if rng.random() < 0.5:
        return f"0{prefix} {number}"
    return f"+49 {prefix} {number}"


def _address(pools: _Pools, rng: random.Random) -> dict[str, str]:
    town, prefix = rng.choice(pools.towns)
    return {
        "street": rng.choice(pools.streets),
        "number": str(rng.randint(1, 180)) + ("" if rng.random() < 0.9 else rng.choice("ab")),
        "postcode": f"{prefix}{rng.randint(0, 99):02d}",
        "town": town,
    }


def _relocated(p: Person, pools: _Pools, rng: random.Random) -> Person:
    place = _address(pools, rng)
    return replace(
        p,
        street=place["street"],
        number=place["number"],
        postcode=place["postcode"],
        town=place["town"],
    )


def _person(pools: _Pools, rng: random.Random) -> Person:
    female = rng.random() < 0.5
    given = (pools.female if female else pools.male).draw(rng)
    family = pools.family.draw(rng)
    return Person(
        given=given,
        family=family,
        born=typos.random_date(rng),
        email=_email(given, family, rng) if rng.random() < 0.7 else "",
        phone=_phone(rng) if rng.random() < 0.6 else "",
        **_address(pools, rng),
    )


def _row(p: Person, birth_date: str | None = None) -> dict[str, str]:
    return {
        "vorname": p.given,
        "nachname": p.family,
        "geburtsdatum": p.born.isoformat() if birth_date is None else birth_date,
        "strasse": p.street,
        "hausnummer": p.number,
        "plz": p.postcode,
        "ort": p.town,
        "email": p.email,
        "telefon": p.phone,
    }


def _name_typo(p: Person, rng: random.Random) -> Person:
    if rng.random() < 0.5:
        return replace(p, given=typos.typo(p.given, rng))
    return replace(p, family=typos.typo(p.family, rng))


def _variant(p: Person, kind: str, pools: _Pools, rng: random.Random) -> dict[str, str]:
    """The second record of `p` with variation `kind`."""
    again = p
    if rng.random() < 0.33 or kind == "moved":
        again = _relocated(again, pools, rng)
    if kind in ("moved", "contact_only") or rng.random() < 0.6:
        again = replace(again, email=_email(p.given, p.family, rng) if rng.random() < 0.5 else "")
    if kind == "moved" and again.phone:
        again = replace(again, phone=_phone(rng))
    birth_date: str | None = None
    if kind == "dob_one_digit":
        birth_date = typos.date_digits_off(p.born, 1, rng)
    elif kind == "dob_two_digits":
        birth_date = typos.date_digits_off(p.born, 2, rng)
    elif kind == "dob_day_month":
        birth_date = typos.day_month_swapped(p.born) or typos.date_digits_off(p.born, 1, rng)
    elif kind == "dob_year_only":
        birth_date = f"{p.born.year:04d}-01-01"
    elif kind == "dob_year_text":
        birth_date = f"{p.born.year:04d}"
    elif kind == "dob_impossible":
        birth_date = typos.impossible_date(p.born, rng)
        again = _name_typo(again, rng)
    elif kind == "dob_missing":
        birth_date = ""
    elif kind == "name_typo":
        again = _name_typo(again, rng)
    elif kind == "umlaut":
        if typos.has_umlaut(p.family) and (not typos.has_umlaut(p.given) or rng.random() < 0.5):
            again = replace(again, family=typos.transliterate(p.family, rng))
        elif typos.has_umlaut(p.given):
            again = replace(again, given=typos.transliterate(p.given, rng))
        else:
            again = _name_typo(again, rng)
    return _row(again, birth_date)


def _umlaut_person(pools: _Pools, rng: random.Random) -> Person:
    """A person whose name has an umlaut (the umlaut variation needs one)."""
    for _ in range(50):
        p = _person(pools, rng)
        if typos.has_umlaut(p.given + p.family):
            return p
    return replace(p, family="Müller")


def build(people: int, seed: int = 1) -> LabelledSet:
    """`people` persons, one to three records each (see the module docstring)."""
    pools, rng = _pools(seed), random.Random(seed)
    out = Collector()
    names: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for n in range(people):
        roll = rng.random()
        copies = 2 if roll < 0.10 else 1 if roll < 0.40 else 0
        kinds = rng.choices(VARIATIONS, WEIGHTS, k=copies)
        p = _umlaut_person(pools, rng) if "umlaut" in kinds else _person(pools, rng)
        records = [(out.add(f"de{n:06d}-0", _row(p)), "original")]
        for copy, kind in enumerate(kinds, start=1):
            records.append((out.add(f"de{n:06d}-{copy}", _variant(p, kind, pools, rng)), kind))
        out.person(records)
        for rec_id, _ in records:
            names[(p.given, p.family)].append((rec_id, n))
        _negatives(out, p, n, pools, rng, names)
    for members in names.values():  # chance namesakes among the set's common names
        for i, (a, person_a) in enumerate(members):
            for b, person_b in members[i + 1 : i + 30]:
                if person_a != person_b and (a, b) not in out.hard_negatives:
                    out.negative(a, b, "namesake")
    return out.done("german", COLUMNS, COUNTRY)


def _similar(a: str, b: str) -> bool:
    from rapidfuzz.distance import JaroWinkler

    return JaroWinkler.normalized_similarity(a.casefold(), b.casefold()) >= 0.8


def _negatives(
    out: Collector,
    p: Person,
    n: int,
    pools: _Pools,
    rng: random.Random,
    names: dict[tuple[str, str], list[tuple[str, int]]],
) -> None:
    """Another person who looks like `p`, for some people (see the module docstring)."""
    roll = rng.random()
    original = f"de{n:06d}-0"
    other: Person | None = None
    kind = ""
    if roll < 0.01:
        # Adult twins: another given name (not a near-spelling of the first: that would be
        # a typo, not a trap), own mobile; living together half the time.
        kind = "twin"
        twin_female = rng.random() < 0.5
        given = p.given
        while _similar(given, p.given):
            given = (pools.female if twin_female else pools.male).draw(rng)
        other = replace(
            p,
            given=given,
            email=_email(given, p.family, rng),
            phone=_phone(rng) if p.phone else "",
        )
        if rng.random() < 0.5:
            other = _relocated(other, pools, rng)
    elif roll < 0.025:
        kind = "same_dob"
        fresh = _person(pools, rng)
        if not _similar(fresh.given, p.given):
            other = replace(
                fresh, family=p.family, born=p.born, email=_email(fresh.given, p.family, rng)
            )
    elif roll < 0.035:
        kind = "parent_child"
        years = rng.randint(20, 35)
        born = p.born - timedelta(days=365 * years + rng.randint(0, 300))
        if born.year >= 1900:
            other = replace(p, born=born, email="", phone=p.phone if rng.random() < 0.5 else "")
    elif roll < 0.065:
        same_town = rng.random() < 0.5
        kind = "namesake_same_town" if same_town else "namesake"
        fresh = _person(pools, rng)
        other = replace(fresh, given=p.given, family=p.family, email=_email(p.given, p.family, rng))
        if same_town:
            other = replace(other, town=p.town, postcode=p.postcode)
    if other is None:
        return
    rec_id = out.add(f"de{n:06d}-x", _row(other))
    out.negative(original, rec_id, kind)
    names[(other.given, other.family)].append((rec_id, -n - 1))


def people(seed: int) -> Callable[[random.Random], tuple[dict[str, str], dict[str, str]]]:
    """For populations (`bench.population`): a function drawing one new person, as
    (their first record, the record they would give when coming back: a variation drawn
    as in `build`)."""
    pools = _pools(seed)

    def draw(rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
        kind = rng.choices(VARIATIONS, WEIGHTS)[0]
        p = _umlaut_person(pools, rng) if kind == "umlaut" else _person(pools, rng)
        return _row(p), _variant(p, kind, pools, rng)

    return draw
