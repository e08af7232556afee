"""English customers without any id or birth date: names and a UK address, maybe contacts.

    build(people, seed, contact=False) -> LabelledSet      (bench.sets.LabelledSet)

What a mailing list or a shop's loyalty file holds: given and family name, house number,
street, town and postcode. Family names carry the frequencies of Faker's en_GB list
(Smith 1.3%, Jones 0.8%, ...), given names a Zipf-like head (David, John, Sarah, ...). With
`contact=True` (the ``english_contact`` set) most records also have an email address and a
mobile number, and some rows have no name at all, only those: the customer identified by
email or phone.

About 40% of people have a second record (10% a third), each with one *variation*:

  postcode_digits   one or two digits of the postcode mistyped (SW1A 2AA -> SW1A 3AA)
  street_number     the house number changed (12 -> 21, 12 -> 112, 12 -> 12a)
  given_changed     the given name as a nickname (William -> Bill) or as its initial
  family_changed    another family name (marriage), same address
  name_typo         a typo in the given or family name
  address_format    abbreviations and case (Road -> Rd, upper-case town), name as initial
  no_key            postcode off by two digits AND street number changed AND one name
                    typed wrong: the pair shares no usual blocking key (name + postcode,
                    name + street, postcode + number)
  moved             (contact sets only) same name, new address, same email or phone
  no_name           (contact sets only) a row with no name: email and/or phone only

Hard negatives: ``household`` (same family name and address, another given name),
``neighbour`` (same street and postcode, another number and name), ``namesake_same_town``
(same given and family name in the same town, another address).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.sets import Collector, LabelledSet, frequencies, typos

COLUMNS_PLAIN = {
    "first_name": "given_name",
    "last_name": "family_name",
    "house_number": "street_number",
    "street": "address_line1",
    "town": "locality",
    "postcode": "postcode",
}
COLUMNS_CONTACT = {**COLUMNS_PLAIN, "email": "emails", "mobile": "phones"}
COUNTRY = "GB"

GIVEN_HEAD = frequencies.words(
    "David John Michael Paul Andrew Peter James Robert Mark Richard Stephen Christopher "
    "Ian Thomas Daniel Matthew William George Sarah Susan Margaret Elizabeth Helen Julie "
    "Karen Emma Claire Nicola Jennifer Patricia Mary Jane Lisa Rachel Laura Amy Jessica "
    "Emily Olivia Sophie Charlotte Hannah Lucy Rebecca"
)
NICKNAMES = {
    "William": "Bill",
    "Robert": "Bob",
    "Richard": "Dick",
    "Elizabeth": "Liz",
    "Margaret": "Peggy",
    "James": "Jim",
    "Michael": "Mike",
    "Christopher": "Chris",
    "Thomas": "Tom",
    "Daniel": "Dan",
    "Matthew": "Matt",
    "Andrew": "Andy",
    "Stephen": "Steve",
    "Jennifer": "Jenny",
    "Patricia": "Pat",
    "Rebecca": "Becky",
    "Susan": "Sue",
    "Peter": "Pete",
    "Samuel": "Sam",
    "Alexander": "Alex",
}
_ABBREVIATIONS = {
    "Road": "Rd",
    "Street": "St",
    "Avenue": "Ave",
    "Lane": "Ln",
    "Drive": "Dr",
    "Close": "Cl",
    "Crescent": "Cres",
    "Gardens": "Gdns",
}
PLAIN_VARIATIONS = (
    "postcode_digits",
    "street_number",
    "given_changed",
    "family_changed",
    "name_typo",
    "address_format",
    "no_key",
)
CONTACT_VARIATIONS = (*PLAIN_VARIATIONS, "moved", "no_name")
_DOMAINS = ("gmail.com", "hotmail.co.uk", "yahoo.co.uk", "btinternet.com", "outlook.com")


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    number: str
    street: str
    town: str
    postcode: str
    email: str
    mobile: str


@dataclass(frozen=True)
class _Pools:
    given: frequencies.Weighted
    family: frequencies.Weighted
    streets: tuple[str, ...]
    towns: tuple[tuple[str, str], ...]  # (town, outward code area, e.g. "LS")


def _pools(seed: int) -> _Pools:
    from faker import Faker

    person: Any = importlib.import_module("faker.providers.person.en_GB").Provider
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    areas = (
        "AB B BA BD BN BS CB CF CV DE E EH G GL HP L LE LS M MK N NE NG NW OX PO RG S SE SO SW W"
    )
    return _Pools(
        given=frequencies.Weighted(
            GIVEN_HEAD,
            sorted({*person.first_names_male, *person.first_names_female}),
            0.55,
            s=0.7,
        ),
        family=frequencies.Weighted(
            list(person.last_names), (), 1.0, weights=list(person.last_names.values())
        ),
        streets=tuple(sorted({fake.street_name() for _ in range(3_000)})),
        towns=tuple(
            (town, rng.choice(areas.split())) for town in sorted({fake.city() for _ in range(800)})
        ),
    )


def _postcode(area: str, rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return (
        f"{area}{rng.randint(1, 28)} {rng.randint(0, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    )


def _mobile(rng: random.Random) -> str:
    number = f"7{rng.randint(100, 999)} {rng.randint(100_000, 999_999)}"
    return f"0{number}" if rng.random() < 0.6 else f"+44 {number}"


def _email(given: str, family: str, rng: random.Random) -> str:
    local = rng.choice((f"{given}.{family}", f"{given[0]}{family}", f"{given}{family}"))
    return f"{local.lower().replace(' ', '')}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}"


def _address(pools: _Pools, rng: random.Random) -> dict[str, str]:
    town, area = rng.choice(pools.towns)
    return {
        "number": str(rng.randint(1, 150)),
        "street": rng.choice(pools.streets),
        "town": town,
        "postcode": _postcode(area, rng),
    }


def _person(pools: _Pools, rng: random.Random, contact: bool) -> Person:
    given, family = pools.given.draw(rng), pools.family.draw(rng)
    return Person(
        given=given,
        family=family,
        email=_email(given, family, rng) if contact and rng.random() < 0.8 else "",
        mobile=_mobile(rng) if contact and rng.random() < 0.6 else "",
        **_address(pools, rng),
    )


def _row(p: Person) -> dict[str, str]:
    return {
        "first_name": p.given,
        "last_name": p.family,
        "house_number": p.number,
        "street": p.street,
        "town": p.town,
        "postcode": p.postcode,
        "email": p.email,
        "mobile": p.mobile,
    }


def _postcode_off(postcode: str, digits: int, rng: random.Random) -> str:
    positions = [i for i, c in enumerate(postcode) if c.isdigit()]
    chars = list(postcode)
    for i in rng.sample(positions, min(digits, len(positions))):
        chars[i] = rng.choice(
            [d for d in "0123456789" if d not in (chars[i], "0" if i == 0 else "")]
        )
    return "".join(chars)


def _number_changed(number: str, rng: random.Random) -> str:
    options = [f"1{number}", f"{number}a", str(int(number) + rng.choice((-2, -1, 1, 2)) or 3)]
    if len(number) > 1 and number[0] != number[1]:
        options.append(number[::-1])
    return rng.choice(options)


def _name_typo(p: Person, rng: random.Random) -> Person:
    if rng.random() < 0.5:
        return replace(p, given=typos.typo(p.given, rng))
    return replace(p, family=typos.typo(p.family, rng))


def _variant(p: Person, kind: str, pools: _Pools, rng: random.Random) -> dict[str, str]:
    again = p
    if p.email and rng.random() < 0.5 and kind not in ("moved", "no_name"):
        again = replace(again, email=_email(p.given, p.family, rng) if rng.random() < 0.5 else "")
    if kind == "postcode_digits":
        again = replace(again, postcode=_postcode_off(p.postcode, rng.choice((1, 2)), rng))
    elif kind == "street_number":
        again = replace(again, number=_number_changed(p.number, rng))
    elif kind == "given_changed":
        # A nickname, or the initial: never a name of someone else (that is the
        # household trap, which only the given name tells apart).
        again = replace(again, given=NICKNAMES.get(p.given) or p.given[0])
    elif kind == "family_changed":
        again = replace(again, family=pools.family.draw(rng))
    elif kind == "name_typo":
        again = _name_typo(again, rng)
    elif kind == "address_format":
        street = " ".join(_ABBREVIATIONS.get(word, word) for word in p.street.split())
        again = replace(
            again,
            street=street,
            town=p.town.upper(),
            given=p.given[0] if rng.random() < 0.5 else p.given,
            postcode=p.postcode.replace(" ", ""),
        )
    elif kind == "no_key":
        again = _name_typo(again, rng)
        again = replace(
            again,
            postcode=_postcode_off(p.postcode, 2, rng),
            number=_number_changed(p.number, rng),
        )
    elif kind == "moved":
        again = replace(again, **_address(pools, rng))
        if p.email and p.mobile and rng.random() < 0.5:
            again = replace(again, mobile="")
    elif kind == "no_name":
        return {"email": p.email, "mobile": p.mobile}
    return _row(again)


def build(people: int, seed: int = 1, *, contact: bool = False) -> LabelledSet:
    """`people` persons, one to three records each (see the module docstring)."""
    pools, rng = _pools(seed), random.Random(seed + (1000 if contact else 0))
    variations = CONTACT_VARIATIONS if contact else PLAIN_VARIATIONS
    prefix = "ec" if contact else "en"
    out = Collector()
    for n in range(people):
        p = _person(pools, rng, contact)
        roll = rng.random()
        copies = 2 if roll < 0.10 else 1 if roll < 0.40 else 0
        records = [(out.add(f"{prefix}{n:06d}-0", _row(p)), "original")]
        for copy in range(1, copies + 1):
            kind = rng.choice(variations)
            if kind in ("moved", "no_name") and not (p.email or p.mobile):
                kind = "name_typo"
            row = _variant(p, kind, pools, rng)
            records.append((out.add(f"{prefix}{n:06d}-{copy}", row), kind))
        out.person(records)
        _negative(out, p, f"{prefix}{n:06d}", pools, rng, contact)
    return out.done(
        "english_contact" if contact else "english",
        COLUMNS_CONTACT if contact else COLUMNS_PLAIN,
        COUNTRY,
    )


def _negative(
    out: Collector, p: Person, prefix: str, pools: _Pools, rng: random.Random, contact: bool
) -> None:
    roll = rng.random()
    if roll < 0.04:
        kind = "household"
        given = p.given
        while given == p.given:
            given = pools.given.draw(rng)
        other = replace(
            p,
            given=given,
            email=_email(given, p.family, rng) if contact else "",
            mobile=_mobile(rng) if contact and rng.random() < 0.5 else "",
        )
    elif roll < 0.06:
        kind = "neighbour"
        fresh = _person(pools, rng, contact)
        other = replace(
            fresh,
            street=p.street,
            town=p.town,
            postcode=p.postcode,
            number=_number_changed(p.number, rng),
        )
    elif roll < 0.08:
        kind = "namesake_same_town"
        fresh = _person(pools, rng, contact)
        other = replace(fresh, given=p.given, family=p.family, town=p.town)
    else:
        return
    out.negative(f"{prefix}-0", out.add(f"{prefix}-x", _row(other)), kind)


def people(
    seed: int, *, contact: bool = True
) -> Callable[[random.Random], tuple[dict[str, str], dict[str, str]]]:
    """For populations (`bench.population`): a function drawing one new person, as
    (their first record, the record they would give when coming back)."""
    pools = _pools(seed)
    variations = [v for v in (CONTACT_VARIATIONS if contact else PLAIN_VARIATIONS)]
    variations.remove("no_name")

    def draw(rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
        p = _person(pools, rng, contact)
        return _row(p), _variant(p, rng.choice(variations), pools, rng)

    return draw
