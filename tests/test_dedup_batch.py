"""Batch search: all pairs and clusters, with no personal value in the report."""

from __future__ import annotations

import json

from ledger.projections.dedup.batch import duplicates_among
from ledger.projections.dedup.cluster import clusters
from tests.dedup_samples import sample

SECRET = b"b" * 32


def test_clusters_are_connected_groups() -> None:
    pairs = [("a", "b"), ("c", "b"), ("x", "y"), ("d", "d")]
    assert clusters(pairs) == [("a", "b", "c"), ("x", "y")]
    assert clusters([]) == []


def test_finds_the_known_duplicates() -> None:
    profiles, truth = sample(80, seed=11)
    reports: list[tuple[str, int, int]] = []
    report, _ = duplicates_among(profiles, SECRET, progress=lambda *a: reports.append(a))
    assert reports[0] == ("compare", 0, report.candidate_pairs)
    assert reports[-1] == ("compare", report.candidate_pairs, report.candidate_pairs)
    found = {(pair.first, pair.second) for pair in report.pairs}
    assert found == truth
    people = {frozenset(c.customer_ids) for c in report.clusters}
    expected = {}
    for a, b in truth:
        expected.setdefault(a.split("-")[0], set()).update((a, b))
    assert people == {frozenset(group) for group in expected.values()}
    assert report.customers == len(profiles) and report.candidate_pairs >= len(truth)
    assert all(0.5 <= pair.score <= 1.0 for pair in report.pairs)
    assert [p.score for p in report.pairs] == sorted((p.score for p in report.pairs), reverse=True)


def test_groups_are_completed_with_pairs_no_key_proposed() -> None:
    # A~B share the birth date, B~C share the email; A and C share no key at all.
    a = {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1985-12-10"}
    b = {**a, "emails": ["ada@example.org"]}
    c = {"given_name": "Ada", "family_name": "Lovelace", "emails": ["ada@example.org"]}
    others, _ = sample(40, seed=3)
    report, index = duplicates_among(
        {"a": a, "b": b, "c": c, **others}, SECRET, kinds=["email", "birth_date"]
    )
    assert ("a", "c") not in index.candidate_pairs()
    assert {(p.first, p.second) for p in report.pairs} >= {("a", "b"), ("b", "c"), ("a", "c")}
    assert report.clusters[0].customer_ids == ("a", "b", "c")


def _strings(value: object) -> list[str]:
    """Every string value in a JSON-like structure (keys are our vocabulary, not data)."""
    if isinstance(value, str):
        return [value.casefold()]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_the_report_holds_no_personal_values() -> None:
    profiles, _ = sample(30, seed=5)
    report, _ = duplicates_among(profiles, SECRET)
    as_dict = json.loads(json.dumps(report.as_dict()))
    strings = _strings(as_dict)
    for profile in profiles.values():
        personal = [profile["given_name"], profile["family_name"], profile["birth_date"]]
        personal += profile["emails"] + profile.get("phones", [])
        for value in personal:
            assert not any(value.casefold() in text for text in strings)
    first = as_dict["pairs"][0]
    assert set(first) == {"customer_ids", "score", "explanation"}
    assert set(first["explanation"][0]) == {"field", "similarity", "agreement", "weight"}
