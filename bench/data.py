"""Deterministic synthetic customers (valid for the domain's validation).

Spread over Berlin's postcodes (10115-14199) as a real customer base is: with one postcode
for everyone, the duplicate index's postcode blocks held every customer, so each
registration under the default duplicate policy was compared with hundreds of others,
which no real data does (and which `bench.dedup` measures on real-world test sets)."""

from __future__ import annotations

import random
import string
from typing import Any


def profiles(count: int, seed: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def word(length: int) -> str:
        return rng.choice(string.ascii_uppercase) + "".join(
            rng.choice(string.ascii_lowercase) for _ in range(length - 1)
        )

    result = []
    for i in range(count):
        given, family = word(7), word(9)
        result.append(
            {
                "given_name": given,
                "family_name": family,
                "emails": [f"{given}.{family}.{i}@example.org".lower()],
                "phones": [f"+4915{1_000_000 + i:09d}"],
                "addresses": [
                    {
                        "address_line1": f"{word(8)}str. {i % 200 + 1}",
                        "postcode": str(10115 + (i * 7919) % 4085),
                        "locality": "Berlin",
                        "country": "DE",
                    }
                ],
                "birth_date": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 9}",
                "external_ids": {"CRM": f"C{i:07d}"},
                "owner": f"sales.{i % 10}",
            }
        )
    return result
