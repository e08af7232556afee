"""Field comparison levels and the Fellegi-Sunter model estimated by EM."""

from __future__ import annotations

import math
import random

from ledger.projections.dedup.compare import FIELD_NAMES, FIELDS, MISSING, compare
from ledger.projections.dedup.record import prepare
from ledger.projections.dedup.score import FieldParameters, Model, fit, starting_model


def levels_of(a: dict[str, object], b: dict[str, object]) -> dict[str, str]:
    levels, _ = compare(prepare(a), prepare(b))
    return {
        spec.name: spec.levels[level]
        for spec, level in zip(FIELDS, levels, strict=True)
        if level != MISSING
    }


def test_levels_of_typical_differences() -> None:
    base = {
        "given_name": "Mitchell",
        "family_name": "Green",
        "birth_date": "1956-04-09",
        "addresses": [{"address_line1": "12 wallaby place", "postcode": "2119", "country": "AU"}],
        "external_ids": {"SSN": "1804974"},
    }
    other = {
        "given_name": "Michell",
        "family_name": "Green",
        "birth_date": "1956-09-04",  # day and month transposed
        "addresses": [{"address_line1": "wallaby place 12", "postcode": "2191", "country": "AU"}],
        "external_ids": {"SSN": "1804947"},  # adjacent digits transposed
    }
    assert levels_of(base, other) == {
        "given_name": "close",
        "family_name": "exact",
        "birth_date": "near",
        "external_id": "near",
        "address_line1": "exact",  # same words, another order (token measure)
        "postcode": "near",
    }


def test_names_in_the_other_order_still_agree() -> None:
    a = {"given_name": "Wei", "family_name": "Zhang"}
    for b in (
        {"given_name": "Zhang", "family_name": "Wei"},
        {"given_name": "伟", "family_name": "张"},
        {"family_name": "张伟"},
        {"family_name": "Zhangwei"},
    ):
        assert set(levels_of(a, b).values()) == {"exact"}, b


def test_missing_fields_are_not_compared() -> None:
    assert levels_of(
        {"family_name": "Green"}, {"family_name": "Green", "birth_date": "1990-01-01"}
    ) == {"family_name": "exact"}


def _simulate(truth: Model, pairs: int, rng: random.Random) -> list[tuple[int, ...]]:
    vectors = []
    for _ in range(pairs):
        match = rng.random() < truth.prior
        vector = []
        for spec in FIELDS:
            parameters = truth.fields[spec.name]
            weights = parameters.m if match else parameters.u
            vector.append(rng.choices(range(len(spec.levels)), weights=weights)[0])
        vectors.append(tuple(vector))
    return vectors


def test_em_recovers_known_parameters_without_labels() -> None:
    """Level vectors drawn from a known mixture: EM, seeing no labels, finds it again."""
    rng = random.Random(3)
    fields = {}
    for spec in FIELDS:
        n = len(spec.levels)
        m = [0.8] + [0.2 / (n - 1)] * (n - 1)
        u = [0.05] + [0.15 / max(n - 2, 1)] * (n - 2) + [0.8] if n > 2 else [0.1, 0.9]
        fields[spec.name] = FieldParameters(m=tuple(m), u=tuple(u))
    truth = Model(prior=0.3, fields=fields)
    fitted = fit(_simulate(truth, 20_000, rng))
    assert math.isclose(fitted.prior, 0.3, abs_tol=0.02)
    for name in FIELD_NAMES:
        assert math.isclose(fitted.fields[name].m[0], truth.fields[name].m[0], abs_tol=0.03)
        assert math.isclose(fitted.fields[name].u[0], truth.fields[name].u[0], abs_tol=0.03)
    assert fitted.iterations > 1 and fitted.pairs == 20_000


def test_score_is_a_probability_explained_field_by_field() -> None:
    model = starting_model()
    a = {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1985-12-10"}
    b = {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1985-12-10"}
    c = {"given_name": "Bob", "family_name": "Smith", "birth_date": "1970-01-01"}
    same, same_sim = compare(prepare(a), prepare(b))
    other, _ = compare(prepare(a), prepare(c))
    assert 0.0 < model.score(other) < 0.5 < model.score(same) < 1.0
    explanation = model.explain(same, same_sim)
    assert [line.field for line in explanation] == ["given_name", "family_name", "birth_date"]
    assert all(line.level == "exact" and line.weight > 0 for line in explanation)
    logit = math.log(model.prior / (1 - model.prior)) + sum(
        x.weight for x in explanation
    ) * math.log(2)
    assert math.isclose(model.score(same), 1 / (1 + math.exp(-logit)))


def test_model_round_trips_through_its_dict_form() -> None:
    model = fit(_simulate(starting_model(), 2_000, random.Random(1)))
    again = Model.from_dict(model.as_dict())
    assert again.prior == model.prior and again.fields == model.fields
