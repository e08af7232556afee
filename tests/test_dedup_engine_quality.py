"""Behaviour of the duplicate engine's scoring model on the cases issue 17 names: common
values weigh less, near birth dates still match, surname readings count in scoring,
relatives and namesakes are not matched, clusters do not chain, EM is used without birth
dates, and reviewers' labels are learnt from."""

from __future__ import annotations

import json
import random
from typing import Any

from ledger.projections.dedup import DuplicateIndex, Model, duplicates_among, find_duplicates
from ledger.projections.dedup.cluster import agreeing_groups
from ledger.projections.dedup.compare import FIELD_NAMES, compare
from ledger.projections.dedup.keys import BlockingKeyer
from ledger.projections.dedup.record import prepare

SECRET = b"s" * 32
GIVEN = ["anna", "bernd", "clara", "dieter", "emil", "frieda", "gustav", "hanna", "ida", "jonas"]
FAMILY = [f"{a}{b}" for a in ("kr", "br", "st", "fl", "gr") for b in ("amer", "ohm", "ieg")]
TOWNS = ["ulm", "kiel", "bonn", "jena", "hof"]


def _level(a: dict[str, Any], b: dict[str, Any], field: str) -> str:
    from ledger.projections.dedup.compare import FIELDS

    levels, _ = compare(prepare(a), prepare(b))
    f = FIELD_NAMES.index(field)
    return "missing" if levels[f] < 0 else FIELDS[f].levels[levels[f]]


def _person(rng: random.Random, n: int, *, birth_date: bool = True) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "given_name": rng.choice(GIVEN) + rng.choice(("", "a", "e", "o")),
        "family_name": rng.choice(FAMILY) + f"{chr(97 + n % 26)}{chr(97 + n // 26 % 26)}",
        "addresses": [
            {
                "street_number": str(rng.randint(1, 300)),
                "address_line1": f"{rng.choice(FAMILY)}weg",
                "locality": rng.choice(TOWNS),
                "postcode": str(rng.randint(10000, 99999)),
                "country": "DE",
            }
        ],
    }
    if birth_date:
        profile["birth_date"] = f"19{rng.randint(40, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
    return profile


def _ledger(*, birth_date: bool, people: int = 600) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """People with a third registered twice, the copy with a typo in the family name."""
    rng = random.Random(7)
    profiles: dict[str, Any] = {}
    truth = set()
    for n in range(people):
        person = _person(rng, n, birth_date=birth_date)
        profiles[f"p{n:04d}"] = person
        if n % 3 == 0:
            copy = json.loads(json.dumps(person))
            family = copy["family_name"]
            copy["family_name"] = family[:-1] + ("x" if family[-1] != "x" else "y")
            profiles[f"p{n:04d}d"] = copy
            truth.add((f"p{n:04d}", f"p{n:04d}d"))
    return profiles, truth


def test_birth_dates_two_digits_off_or_transposed_are_near_or_close_not_different() -> None:
    base = {"given_name": "Anna", "family_name": "Kramer", "birth_date": "1980-03-12"}
    assert _level(base, {**base, "birth_date": "1980-03-12"}, "birth_date") == "exact"
    assert _level(base, {**base, "birth_date": "1980-03-13"}, "birth_date") == "near"
    assert _level(base, {**base, "birth_date": "1980-12-03"}, "birth_date") == "near"
    assert _level(base, {**base, "birth_date": "1981-03-22"}, "birth_date") == "close"
    assert _level(base, {**base, "birth_date": "1980-03-27"}, "birth_date") == "close"
    assert _level(base, {**base, "birth_date": "1980-07-25"}, "birth_date") == "year"
    assert _level(base, {**base, "birth_date": "1955-07-25"}, "birth_date") == "different"


def test_surname_readings_are_used_in_scoring_as_in_blocking() -> None:
    hanzi = {"given_name": "一倩", "family_name": "区", "phones": ["+8613800138000"]}
    latin = {"given_name": "Yiqian", "family_name": "OU", "phones": ["+8613800138000"]}
    assert _level(hanzi, latin, "family_name") == "exact"
    shan = {"family_name": "单", "given_name": "伟"}
    assert _level(shan, {"family_name": "Shan", "given_name": "Wei"}, "family_name") == "exact"
    ou = {"family_name": "区", "given_name": "伟"}
    assert _level(ou, {"family_name": "Li", "given_name": "Wei"}, "family_name") == "different"


def test_a_common_surname_is_weaker_evidence_than_a_rare_one() -> None:
    profiles, _ = _ledger(birth_date=False)
    for n in range(60):  # sixty Müllers among the customers
        profiles[f"m{n:03d}"] = {**profiles[f"p{n:04d}"], "family_name": "Müller"}
    report, index = duplicates_among(profiles, SECRET)
    assert report.model.frequencies is not None
    town = {"locality": "ulm", "country": "DE"}
    common = prepare({"given_name": "Ida", "family_name": "Müller", "addresses": [town]})
    rare = prepare({"given_name": "Ida", "family_name": "Quaxenbrink", "addresses": [town]})
    common_score = index.score(common, common)[0]
    rare_score = index.score(rare, rare)[0]
    assert rare_score > common_score


def test_the_model_is_estimated_by_em_without_birth_dates_or_ids() -> None:
    profiles, truth = _ledger(birth_date=False)
    report, _ = duplicates_among(profiles, SECRET)
    assert report.model.method.startswith("em")
    found = {(p.first, p.second) for p in report.pairs}
    assert len(found & truth) >= 0.9 * len(truth)
    assert len(found - truth) <= 0.05 * len(found)


def test_twins_and_namesakes_are_not_matched_but_a_shared_id_still_counts() -> None:
    profiles, _ = _ledger(birth_date=True)
    _, index = duplicates_among(profiles, SECRET)
    twin = {
        "given_name": "Jonas",
        "family_name": "Grohmzz",
        "birth_date": "1977-05-14",
        "phones": ["+4915112345678"],
        "addresses": [{"locality": "kiel", "country": "DE"}],
    }
    sibling = {**twin, "given_name": "Frieda"}
    assert index.score(prepare(twin), prepare(sibling))[0] < 0.5
    namesake = {**twin, "birth_date": "1950-11-02", "phones": []}
    assert index.score(prepare(twin), prepare(namesake))[0] < 0.5
    family_email = {"emails": ["familie@example.de"]}
    shared_email = index.score(
        prepare({**twin, **family_email}), prepare({**sibling, **family_email})
    )
    assert shared_email[0] < 0.5  # a family shares an email as often as a phone
    tax = {"external_ids": {"TAX": "12 345 678 901"}}
    assert index.score(prepare({**twin, **tax}), prepare({**sibling, **tax}))[0] >= 0.5
    mail = {"emails": ["jonas.grohm@example.de"]}
    assert index.score(prepare({**twin, **mail}), prepare({**namesake, **mail}))[0] >= 0.5


def test_clusters_do_not_chain_through_one_weak_link() -> None:
    scores = {("a", "b"): 0.99, ("b", "c"): 0.6, ("a", "c"): 0.01, ("c", "d"): 0.99}
    groups = agreeing_groups(("a", "b", "c", "d"), scores, 0.5)
    assert sorted(groups) == [("a", "b"), ("c", "d")]
    agreeing = {("a", "b"): 0.9, ("b", "c"): 0.9, ("a", "c"): 0.8}
    assert agreeing_groups(("a", "b", "c"), agreeing, 0.5) == [("a", "b", "c")]


def test_labels_are_learnt_from_and_a_non_match_is_never_reported() -> None:
    profiles, truth = _ledger(birth_date=True, people=300)
    index = DuplicateIndex(BlockingKeyer(SECRET))
    for customer_id, profile in profiles.items():
        index.add(customer_id, profile)
    first = sorted(truth)[0]
    report = find_duplicates(index, matches=sorted(truth)[1:20], non_matches=[first])
    assert report.model.labels == 20
    assert first not in {(p.first, p.second) for p in report.pairs}
    assert all(set(first) - set(c.customer_ids) for c in report.clusters)


def test_the_stored_model_holds_keyed_term_frequencies_not_values() -> None:
    profiles, _ = _ledger(birth_date=True, people=300)
    for n in range(20):
        profiles[f"m{n:03d}"] = {**profiles[f"p{n:04d}"], "family_name": "Müller"}
    report, _ = duplicates_among(profiles, SECRET)
    stored = json.dumps(report.model.as_dict())
    assert "ller" not in stored and "kiel" not in stored
    again = Model.from_dict(json.loads(stored))
    assert again.frequencies == report.model.frequencies
    assert again.frequencies is not None and again.frequencies.common["family_name"]


def test_a_namesake_elsewhere_needs_evidence_that_moves_with_a_person() -> None:
    """Without birth dates, the same name at another street and postcode is a namesake or
    someone who moved: only an email, phone or id can tell which."""
    profiles, _ = _ledger(birth_date=False)
    _, index = duplicates_among(profiles, SECRET)
    here = {
        "given_name": "Gundolf",
        "family_name": "Himmelbauer",
        "addresses": [
            {"street_number": "3", "address_line1": "Amselweg", "locality": "ulm",
             "postcode": "89073", "country": "DE"}
        ],
    }  # fmt: skip
    elsewhere = {
        **here,
        "addresses": [
            {"street_number": "71", "address_line1": "Lindenallee", "locality": "ulm",
             "postcode": "89081", "country": "DE"}
        ],
    }  # fmt: skip
    assert index.score(prepare(here), prepare(elsewhere))[0] < 0.5
    mail = {"emails": ["g.himmelbauer@example.de"]}
    moved = index.score(prepare({**here, **mail}), prepare({**elsewhere, **mail}))[0]
    assert moved >= 0.5


def test_a_customer_without_a_name_is_found_by_email_or_phone() -> None:
    profiles, _ = _ledger(birth_date=True, people=300)
    profiles["p0001"]["emails"] = ["anna.k@example.de"]
    profiles["p0002"]["phones"] = ["+4915112345678"]
    _, index = duplicates_among(profiles, SECRET)
    by_email = index.lookup({"emails": ["Anna.K@example.de"]}, min_score=0.5)
    assert [m.customer_id for m in by_email] == ["p0001"]
    by_phone = index.lookup({"phones": ["+49 151 12345678"]}, min_score=0.5)
    assert [m.customer_id for m in by_phone] == ["p0002"]
