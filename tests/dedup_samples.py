"""Small, deterministic synthetic customers with known duplicates, for the dedup tests.

Each person gets an original profile and a few variants with the kinds of errors real data
has (typos, swapped day/month, +tags on emails, a missing field, names in another order),
so tests can measure precision and recall on known truth in milliseconds.
"""

from __future__ import annotations

import random
from typing import Any


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GIVEN = _words(
    "Olivia Liam Emma Noah Amelia Oliver Isla Jack Mia William Ava Henry Grace Leo Chloe "
    "Thomas Ella James Zoe Lucas Ruby Charlie Sophie Mason Lily Ethan Evie Oscar Harper "
    "Max"
)
FAMILY = _words(
    "Smith Jones Williams Brown Wilson Taylor Johnson White Martin Anderson Thompson "
    "Nguyen Thomas Walker Harris Lee Ryan Robinson Kelly King Davis Wright Evans Roberts "
    "Green Hall Wood Jackson Clarke Patel"
)
STREETS = (
    "wallaby place",
    "kent street",
    "hoseason street",
    "gundulu place",
    "yuranigh court",
    "mountain creek road",
    "mckillop circuit",
    "hemmings crescent",
    "blamey crescent",
    "pridham street",
    "solomon crescent",
    "murphy street",
    "groom street",
    "ammon place",
    "teakle place",
    "disney court",
)
LOCALITIES = "cleveland marsden granville utakarra towradgi eaton corio banyo"
DOMAINS = ("example.org", "example.com", "gmail.com", "mail.example")


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip: a substituted, dropped or transposed letter (never the first)."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("substitute", "drop", "transpose"))
    if kind == "substitute":
        return word[:i] + rng.choice("aeioustrnl") + word[i + 1 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def person(rng: random.Random, number: int) -> dict[str, Any]:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    year, month, day = rng.randint(1940, 2004), rng.randint(1, 12), rng.randint(1, 28)
    return {
        "given_name": given,
        "family_name": family,
        "emails": [f"{given}.{family}{number}@{rng.choice(DOMAINS)}".lower()],
        "phones": [f"+614{rng.randint(10_000_000, 99_999_999)}"],
        "birth_date": f"{year:04d}-{month:02d}-{day:02d}",
        "addresses": [
            {
                "street_number": str(rng.randint(1, 300)),
                "address_line1": rng.choice(STREETS),
                "locality": rng.choice(LOCALITIES),
                "region": rng.choice(("nsw", "vic", "qld", "sa", "wa")),
                "postcode": str(rng.randint(2000, 7999)),
                "country": "AU",
            }
        ],
        "external_ids": {"CRM": f"C-{rng.randint(100_000, 999_999)}"},
    }


def variant(original: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same person entered again, with two random differences."""
    profile = {**original, "addresses": [dict(original["addresses"][0])]}
    for change in rng.sample(range(7), 2):
        if change == 0:
            profile["given_name"] = typo(profile["given_name"], rng)
        elif change == 1:
            profile["family_name"] = typo(profile["family_name"], rng)
        elif change == 2:  # day and month swapped (when that is still a date)
            year, month, day = profile["birth_date"].split("-")
            if int(day) <= 12:
                profile["birth_date"] = f"{year}-{day}-{month}"
        elif change == 3:
            local, domain = profile["emails"][0].split("@")
            profile["emails"] = [f"{local}+shop@{domain}"]
        elif change == 4:
            profile.pop("phones")
        elif change == 5:
            profile["addresses"][0]["address_line1"] = typo(
                profile["addresses"][0]["address_line1"], rng
            )
        else:
            profile["given_name"], profile["family_name"] = (
                profile["family_name"],
                profile["given_name"],
            )
    return profile


def sample(
    people: int = 60, *, seed: int = 7
) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str]]]:
    """Profiles by id, and the true duplicate pairs (a < b). About half the people have
    one or two variants; the rest appear once."""
    rng = random.Random(seed)
    profiles: dict[str, dict[str, Any]] = {}
    truth: set[tuple[str, str]] = set()
    for number in range(people):
        original = person(rng, number)
        ids = [f"p{number:03d}-0"]
        profiles[ids[0]] = original
        for copy in range(1, rng.choice((1, 1, 2, 3))):
            ids.append(f"p{number:03d}-{copy}")
            profiles[ids[-1]] = variant(original, rng)
        truth.update((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    return profiles, truth
