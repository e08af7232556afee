"""Synthetic customers for the real-time look-up benchmark, from Faker's en_AU locale.

Faker is slow per call (tens of microseconds), so it fills pools of names, streets and
places once, and a seeded generator combines them: 100,000 customers in a few seconds,
the same ones on every run. Name frequencies follow Faker's lists (about 600 given and
900 family names), so common names collide as in real data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

POOL = 5_000
REGIONS = ("ACT", "NSW", "NT", "QLD", "SA", "TAS", "VIC", "WA")


@dataclass(frozen=True)
class Pools:
    given: tuple[str, ...]
    family: tuple[str, ...]
    streets: tuple[str, ...]
    localities: tuple[str, ...]
    domains: tuple[str, ...]


def pools(seed: int) -> Pools:
    from faker import Faker

    fake = Faker("en_AU")
    fake.seed_instance(seed)

    def unique(make: Any) -> tuple[str, ...]:
        return tuple(sorted({make() for _ in range(POOL)}))

    return Pools(
        given=unique(fake.first_name),
        family=unique(fake.last_name),
        streets=unique(fake.street_name),
        localities=unique(fake.city),
        domains=(*unique(fake.free_email_domain), "example.com", "example.org"),
    )


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1935, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def customer(pool: Pools, rng: random.Random, number: int) -> dict[str, Any]:
    given, family = rng.choice(pool.given), rng.choice(pool.family)
    profile: dict[str, Any] = {
        "given_name": given,
        "family_name": family,
        "emails": [f"{given}.{family}{number}@{rng.choice(pool.domains)}".lower()],
        "phones": [f"+614{rng.randint(10_000_000, 99_999_999)}"],
        "birth_date": _date(rng),
        "addresses": [
            {
                "street_number": str(rng.randint(1, 250)),
                "address_line1": rng.choice(pool.streets),
                "locality": rng.choice(pool.localities),
                "region": rng.choice(REGIONS),
                "postcode": str(rng.randint(800, 7999)).zfill(4),
                "country": "AU",
            }
        ],
        "external_ids": {"CRM": f"C{number:07d}"},
    }
    if rng.random() < 0.3:  # not everyone gave a phone number
        del profile["phones"]
    return profile


def customers(count: int, *, seed: int = 1) -> dict[str, dict[str, Any]]:
    pool, rng = pools(seed), random.Random(seed)
    return {f"cust-{n:06d}": customer(pool, rng, n) for n in range(count)}


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def returning(profile: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same person registering again: a typo in the family name, a new email address,
    no customer number; phone, birth date and address as before."""
    again = {k: v for k, v in profile.items() if k != "external_ids"}
    again["family_name"] = _typo(profile["family_name"], rng)
    local, _, domain = profile["emails"][0].partition("@")
    again["emails"] = [f"{local[::-1]}@{domain}"]
    return again


@dataclass(frozen=True)
class Query:
    profile: dict[str, Any]
    expected: str | None  # the customer it duplicates, or None for a new person


def queries(existing: dict[str, dict[str, Any]], count: int, *, seed: int = 2) -> list[Query]:
    """Three in four queries are returning customers, the rest new people."""
    rng = random.Random(seed)
    ids = sorted(existing)
    pool = pools(seed + 100)
    out: list[Query] = []
    for n in range(count):
        if n % 4 == 3:
            out.append(Query(customer(pool, rng, 10_000_000 + n), None))
        else:
            customer_id = rng.choice(ids)
            out.append(Query(returning(existing[customer_id], rng), customer_id))
    return out
