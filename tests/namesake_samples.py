"""Chinese customers with realistic (Zipf) name frequencies: many namesakes, few cities.

For the real-time look-up's tests: a new person shares a name (and often a city) with many
customers who are other people; a returning customer comes back under the same name with a
new email and keeps a phone number or a birth date. Deterministic per seed.
"""

from __future__ import annotations

import random
from typing import Any

FAMILY = tuple("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰",
         "娟", "涛", "明", "超", "秀兰", "霞")  # fmt: skip
CITIES = ("北京", "上海", "广州", "深圳", "成都")
MOBILE = ("138", "139", "135", "136", "137", "150", "151", "158", "159", "186", "188", "189")


def _zipf(rng: random.Random, items: tuple[str, ...]) -> str:
    return rng.choices(items, [1 / (rank + 1) for rank in range(len(items))])[0]


def chinese_person(rng: random.Random, number: int) -> dict[str, Any]:
    born = f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {
        "given_name": _zipf(rng, GIVEN),
        "family_name": _zipf(rng, FAMILY),
        "birth_date": born,
        "phones": [f"+86{rng.choice(MOBILE)}{rng.randint(10_000_000, 99_999_999)}"],
        "emails": [f"person{number}@example.cn"],
        "addresses": [{"locality": _zipf(rng, CITIES), "country": "CN"}],
    }


def returning(rng: random.Random, original: dict[str, Any], number: int) -> dict[str, Any]:
    """The same person again: same name and city, a new email, and the phone or the birth
    date (or both) of the original."""
    kept = rng.choice((("phones",), ("birth_date",), ("phones", "birth_date")))
    again = {
        "given_name": original["given_name"],
        "family_name": original["family_name"],
        "emails": [f"back{number}@example.com"],
        "addresses": original["addresses"],
    }
    again.update({name: original[name] for name in kept})
    return again
