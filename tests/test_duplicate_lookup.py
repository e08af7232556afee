"""The real-time look-up on both stores, where names are common: a namesake (in the same
city) is not flagged, the returning customer is, and how many customers a look-up scores
stays bounded however many share the name. Counts, not times."""

from __future__ import annotations

import random
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.projections.duplicate_lookup import COMMON_NAME, MAX_SCORED
from ledger.projections.wiring import duplicate_queries
from tests.helpers import StoreHandle
from tests.namesake_samples import chinese_person, returning

ACTOR = "test-suite"


def _zhang_wei(number: int, **overrides: object) -> dict[str, object]:
    """张伟 number `number`: a birth date and a phone of their own (far from the others')."""
    rng = random.Random(number)
    profile: dict[str, object] = {
        "given_name": "伟",
        "family_name": "张",
        "birth_date": f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(10, 28)}",
        "phones": [f"+86139{rng.randint(10_000_000, 99_999_999)}"],
        "emails": [f"zhang.wei.{number}@example.cn"],
        "addresses": [{"locality": "北京", "country": "CN"}],
    }
    profile.update(overrides)
    return profile


def test_a_common_name_in_the_same_city_is_not_a_duplicate(store: StoreHandle) -> None:
    with store.open() as ledger:
        zhangs = ledger.register_many(
            [(_zhang_wei(n), []) for n in range(COMMON_NAME + 4)], actor=ACTOR
        )
        rare = ledger.register(
            {"given_name": "娜娜", "family_name": "欧阳", "emails": ["oy@example.cn"],
             "addresses": [{"locality": "上海", "country": "CN"}]},
            actor=ACTOR,
        )  # fmt: skip
        queries = duplicate_queries(ledger)
        considered, scored, common = queries.lookup_figures(_zhang_wei(99))
        assert common and scored <= considered

        # A new 张伟 in 北京: name and city agree with every one of them; nothing else does.
        assert queries.candidates(_zhang_wei(99), min_score=0.0) == []
        # Nor is one without a birth date (the namesake's is unknown to compare).
        assert queries.candidates(_zhang_wei(98, birth_date=None)) == []
        # The same person again, with the phone they registered with: found, and first.
        back = queries.candidates(_zhang_wei(97, phones=_zhang_wei(3)["phones"], birth_date=None))
        assert [m.customer_id for m in back][:1] == [str(zhangs[3])]
        back = queries.candidates(_zhang_wei(96, birth_date=_zhang_wei(5)["birth_date"]))
        assert [m.customer_id for m in back][:1] == [str(zhangs[5])]
        # A shared birth date under another family name (a stranger, a twin) is not one.
        stranger = _zhang_wei(95, family_name="李", birth_date=_zhang_wei(2)["birth_date"])
        assert queries.candidates(stranger, min_score=0.0) == []
        # A rare name in the same city still is a likely duplicate.
        again = {"given_name": "娜娜", "family_name": "欧阳", "emails": ["ouyang@example.com"],
                 "addresses": [{"locality": "上海", "country": "CN"}]}  # fmt: skip
        assert [m.customer_id for m in queries.candidates(again)] == [str(rare)]
        # A search by name alone is a search: it lists the namesakes.
        named = queries.candidates({"given_name": "伟", "family_name": "张"}, min_score=0.0)
        assert len(named) == 10 and {m.customer_id for m in named} <= {str(z) for z in zhangs}


def _load(ledger: CustomerLedger, people: list[dict[str, object]]) -> list[UUID]:
    ids: list[UUID] = []
    for first in range(0, len(people), 200):
        ids += ledger.register_many([(p, []) for p in people[first : first + 200]], actor=ACTOR)
    return ids


def test_namesakes_are_not_flagged_and_the_cost_stays_bounded(store: StoreHandle) -> None:
    rng = random.Random(17)
    people = [chinese_person(rng, n) for n in range(800)]
    with store.open() as ledger:
        ids = _load(ledger, people)
        queries = duplicate_queries(ledger)
        asked = random.Random(4)
        new_people = [chinese_person(asked, 10_000 + n) for n in range(60)]
        flagged = sum(bool(queries.candidates(p)) for p in new_people)
        assert flagged <= 3  # at most 5 % of new people wrongly flagged

        picked = asked.sample(range(len(people)), 40)
        found = 0
        for n in picked:
            matches = queries.candidates(returning(asked, people[n], n))
            found += bool(matches) and matches[0].customer_id == str(ids[n])
        assert found >= 38  # the returning customer is found, and ranked first

        most = 0
        for profile in [*new_people, *(people[n] for n in picked)]:
            considered, scored, _ = queries.lookup_figures(profile)
            assert scored <= MAX_SCORED and scored <= considered
            most = max(most, considered)
        # The set has namesake blocks far larger than what is scored.
        biggest = max(
            sum(1 for p in people if (p["given_name"], p["family_name"]) == (q["given_name"],
                q["family_name"])) for q in people[:50]
        )  # fmt: skip
        assert biggest > MAX_SCORED
