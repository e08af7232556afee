"""The labelled sets of the duplicate benchmark (bench/sets): what other work tunes and is
judged on, so their labels must say what the records show, the same on every run."""

from __future__ import annotations

from datetime import date

import pytest

from bench.sets import LabelledSet, chinese, frequencies, typos


def _consistent(data: LabelledSet) -> None:
    ids = [row["rec_id"] for row in data.rows]
    assert len(ids) == len(set(ids))
    known = set(ids)
    assert all(a < b and a in known and b in known for a, b in data.truth)
    assert set(data.variation) == set(data.truth)
    assert not set(data.hard_negatives) & data.truth
    assert all(set(row) - {"rec_id"} <= set(data.columns) for row in data.rows)


def test_chinese_set_is_deterministic_and_labelled() -> None:
    first, again = chinese.build(400, seed=5), chinese.build(400, seed=5)
    assert first.rows == again.rows and first.truth == again.truth
    assert first.hard_negatives == again.hard_negatives
    assert chinese.build(400, seed=6).rows != first.rows
    _consistent(first)
    kinds = set(first.variation.values())
    assert {"pinyin", "pinyin_swapped", "one_field", "homophone"} <= kinds
    traps = set(first.hard_negatives.values())
    assert {"namesake_same_city", "household_address", "household_phone"} <= traps


def test_surname_readings_are_spelled_as_surnames() -> None:
    assert chinese.family_pinyin("区") == "Ou"
    assert chinese.family_pinyin("单") == "Shan"
    assert chinese.family_pinyin("张") == "Zhang"


def test_household_traps_share_the_address_but_not_the_given_name() -> None:
    data = chinese.build(600, seed=2)
    rows = {row["rec_id"]: row for row in data.rows}
    households = [p for p, kind in data.hard_negatives.items() if kind == "household_phone"]
    assert households
    for a, b in households:
        assert rows[a].get("given_name") != rows[b].get("given_name")


def test_common_names_are_common() -> None:
    surnames = frequencies.chinese_surnames()
    assert surnames.share("王") > 0.06
    assert surnames.share("王") > 20 * surnames.share("常")


def test_birth_date_typos_stay_valid_dates_or_are_impossible_on_purpose() -> None:
    import random

    rng = random.Random(1)
    born = date(1975, 3, 11)
    for _ in range(50):
        changed = typos.date_digits_off(born, 2, rng)
        assert date.fromisoformat(changed) != born
        assert sum(a != b for a, b in zip(changed, born.isoformat(), strict=True)) == 2
    assert typos.day_month_swapped(born) == "1975-11-03"
    assert typos.day_month_swapped(date(1975, 3, 20)) is None
    for _ in range(20):
        with pytest.raises(ValueError):
            date.fromisoformat(typos.impossible_date(born, rng))


@pytest.mark.parametrize("name", ["german", "english", "english_contact"])
def test_faker_sets_are_deterministic_and_labelled(name: str) -> None:
    from bench.sets import build

    first, again = build(name, 500, 3), build(name, 500, 3)
    assert first.rows == again.rows and first.truth == again.truth
    _consistent(first)
    assert len(set(first.variation.values())) >= 7
    assert first.hard_negatives
