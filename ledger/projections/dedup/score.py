"""Fellegi-Sunter scoring, with weights estimated by EM on the ledger's own candidate pairs.

For each field and agreement level the model holds m = P(level | same person) and
u = P(level | different people). A pair's evidence is the sum over its compared fields of
log2(m/u) (the field's *weight*, in bits: positive for agreement that is rare by chance,
negative for disagreement that is rare among duplicates); the score is the posterior
probability of a match, a logistic function of that sum plus the prior log-odds.

No labelled pairs are needed: m, u and the prior are the parameters of a two-class mixture
over the candidate pairs' level vectors, and expectation-maximisation finds them (the
classic unsupervised Fellegi-Sunter estimation, Winkler 1988). Fields are assumed
conditionally independent given the class, which is what makes the model this cheap.
Missing fields are simply left out of the product.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger.projections.dedup.compare import FIELDS, MISSING, Levels, Similarities

_LOG2 = math.log(2)
_PSEUDO_COUNT = 0.5  # per level; keeps estimates off 0 and 1, negligible with real data
_MIN_PROBABILITY = 1e-6


@dataclass(frozen=True)
class FieldParameters:
    m: tuple[float, ...]
    u: tuple[float, ...]

    def weight(self, level: int) -> float:
        """log2(m/u) of a level, in bits."""
        return math.log2(self.m[level] / self.u[level])


class FieldScore(NamedTuple):
    """One line of an explanation: how a field compared and what that contributed.
    (A named tuple: thousands are made per batch, and it is the cheapest record type.)"""

    field: str
    similarity: float
    level: str
    weight: float  # bits of evidence for (+) or against (-) a match

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "similarity": round(self.similarity, 4),
            "agreement": self.level,
            "weight": round(self.weight, 3),
        }


@dataclass(frozen=True)
class Model:
    """Prior match probability among candidate pairs, and m/u per field and level."""

    prior: float
    fields: Mapping[str, FieldParameters]
    iterations: int = 0
    pairs: int = 0  # how many candidate pairs the estimate came from
    method: str = "start"  # "em", "em-chance-u", "fallback" (see `estimate`) or "start"
    _weights: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)
    _cache: dict[Levels, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [spec.name for spec in FIELDS if spec.name not in self.fields]
        if missing or not 0.0 < self.prior < 1.0:
            raise ValueError("a model needs a prior in (0, 1) and parameters for every field")
        weights = tuple(
            tuple(
                math.log(self.fields[spec.name].m[level] / self.fields[spec.name].u[level])
                for level in range(len(spec.levels))
            )
            for spec in FIELDS
        )
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_cache", {})

    def score(self, levels: Levels) -> float:
        """Posterior probability that the pair is one person (cached per level vector:
        a data set has only a few hundred distinct vectors)."""
        cached = self._cache.get(levels)
        if cached is not None:
            return cached
        logit = math.log(self.prior / (1.0 - self.prior))
        for weights, level in zip(self._weights, levels, strict=True):
            if level != MISSING:
                logit += weights[level]
        score = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        self._cache[levels] = score
        return score

    def explain(self, levels: Levels, similarities: Similarities) -> tuple[FieldScore, ...]:
        """The compared fields with similarity, agreement level and weight in bits."""
        return tuple(
            FieldScore(
                spec.name,
                similarity if similarity is not None else 0.0,
                spec.levels[level],
                weights[level] / _LOG2,
            )
            for spec, weights, level, similarity in zip(
                FIELDS, self._weights, levels, similarities, strict=True
            )
            if level != MISSING
        )

    def as_dict(self) -> dict[str, Any]:
        """Non-personal (probabilities only): safe to store, log and print."""
        return {
            "method": self.method,
            "prior": self.prior,
            "iterations": self.iterations,
            "pairs": self.pairs,
            "fields": {
                spec.name: {
                    level: {
                        "m": self.fields[spec.name].m[i],
                        "u": self.fields[spec.name].u[i],
                        "weight": self.fields[spec.name].weight(i),
                    }
                    for i, level in enumerate(spec.levels)
                }
                for spec in FIELDS
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Model:
        fields = {
            spec.name: FieldParameters(
                m=tuple(float(data["fields"][spec.name][level]["m"]) for level in spec.levels),
                u=tuple(float(data["fields"][spec.name][level]["u"]) for level in spec.levels),
            )
            for spec in FIELDS
        }
        return cls(
            prior=float(data["prior"]),
            fields=fields,
            iterations=int(data.get("iterations", 0)),
            pairs=int(data.get("pairs", 0)),
            method=str(data.get("method", "start")),
        )


def _spread(first: float, levels: int) -> tuple[float, ...]:
    """`first` on level 0, the rest spread geometrically over the others."""
    rest = [2.0 ** (levels - 1 - i) for i in range(1, levels)]
    total = sum(rest)
    return (first, *((1.0 - first) * r / total for r in rest))


def starting_model() -> Model:
    """Deliberately vague starting values for EM (and the cold-start model before any data
    has been seen): agreement is likely for duplicates and unlikely by chance. EM moves
    away from these within a few iterations; they only fix which class is "match"."""
    fields = {}
    for spec in FIELDS:
        n = len(spec.levels)
        m = _spread(0.85, n)
        u = tuple(reversed(_spread(0.7, n))) if n > 2 else (0.1, 0.9)
        fields[spec.name] = FieldParameters(m=m, u=u)
    return Model(prior=0.1, fields=fields)


def fit(
    level_vectors: Iterable[Levels],
    *,
    initial: Model | None = None,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
    fixed_u: bool = False,
) -> Model:
    """EM estimate of the prior and m/u from unlabelled candidate pairs' level vectors.
    With `fixed_u` only the prior and m are estimated; u stays as in `initial`."""
    patterns = Counter(level_vectors)
    model = initial or starting_model()
    total = sum(patterns.values())
    if total == 0:
        return model
    items: Sequence[tuple[Levels, int]] = list(patterns.items())
    sizes = [len(spec.levels) for spec in FIELDS]
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        m_counts = [[_PSEUDO_COUNT] * n for n in sizes]
        u_counts = [[_PSEUDO_COUNT] * n for n in sizes]
        matches = 0.0
        for levels, count in items:
            posterior = model.score(levels)
            as_match, as_other = count * posterior, count * (1.0 - posterior)
            matches += as_match
            for f, level in enumerate(levels):
                if level != MISSING:
                    m_counts[f][level] += as_match
                    u_counts[f][level] += as_other
        prior = min(max(matches / total, _MIN_PROBABILITY), 1.0 - _MIN_PROBABILITY)
        fields = {
            spec.name: FieldParameters(
                m=_normalised(m_counts[f]),
                u=model.fields[spec.name].u if fixed_u else _normalised(u_counts[f]),
            )
            for f, spec in enumerate(FIELDS)
        }
        method = "em-chance-u" if fixed_u else "em"
        updated = Model(
            prior=prior, fields=fields, iterations=iteration, pairs=total, method=method
        )
        change = _largest_change(model, updated)
        model = updated
        if change < tolerance:
            break
    return model


def _normalised(counts: list[float]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(max(c / total, _MIN_PROBABILITY) for c in counts)


def _largest_change(old: Model, new: Model) -> float:
    change = abs(old.prior - new.prior)
    for spec in FIELDS:
        a, b = old.fields[spec.name], new.fields[spec.name]
        change = max(
            change,
            max(abs(x - y) for x, y in zip(a.m, b.m, strict=True)),
            max(abs(x - y) for x, y in zip(a.u, b.u, strict=True)),
        )
    return change


# Fields whose exact agreement must count for a match, and whose disagreement against it,
# in any model that describes "same person" (rather than "same household", say).
IDENTITY_FIELDS = ("given_name", "family_name", "birth_date")
MIN_DISAGREEMENT_BITS = 1.0  # duplicates disagree on them at most half as often as others
FALLBACK_PRIOR = 1e-3
_DUPLICATE_M = {2: (0.95, 0.05), 3: (0.9, 0.05, 0.05), 4: (0.85, 0.08, 0.04, 0.03)}


def plausible(model: Model) -> bool:
    """Whether a solution's "match" class is plausibly "same person".

    EM finds the strongest two-way split of the candidate pairs. When the data holds enough
    duplicates that split is duplicates / the rest. A ledger with few or none still gets
    split, along whatever else clusters among candidates: people sharing an address, say,
    whose names then come out as no evidence, or evidence *against* a match. Such a model
    is refused.
    """
    for name in IDENTITY_FIELDS:
        parameters = model.fields[name]
        last = len(parameters.m) - 1
        if parameters.weight(0) <= 0 or parameters.weight(last) > -MIN_DISAGREEMENT_BITS:
            return False
    return True


def chance_model(random_pair_levels: Iterable[Levels], *, pairs: int = 0) -> Model:
    """u counted on random pairs of the ledger's own records (almost all of them different
    people, so no labels are needed), m from the general expectation that duplicates
    mostly agree field by field; the prior is a guess (1 in 1,000 candidate pairs)."""
    sizes = [len(spec.levels) for spec in FIELDS]
    counts = [[_PSEUDO_COUNT] * n for n in sizes]
    for levels in random_pair_levels:
        for f, level in enumerate(levels):
            if level != MISSING:
                counts[f][level] += 1
    fields = {
        spec.name: FieldParameters(m=_DUPLICATE_M[sizes[f]], u=_normalised(counts[f]))
        for f, spec in enumerate(FIELDS)
    }
    return Model(prior=FALLBACK_PRIOR, fields=fields, pairs=pairs, method="fallback")


def estimate(
    candidate_levels: Iterable[Levels], random_pair_levels: Callable[[], Iterable[Levels]]
) -> Model:
    """The model for a ledger, from its own data and no labels, in three tries:

    1. EM for prior, m and u on the candidate pairs (the classic estimate; best when
       duplicates are a sizeable share of candidates, as in FEBRL);
    2. else EM for prior and m only, u fixed at its value among random pairs: chance
       agreement then cannot be mistaken for the match class, which finds the duplicates
       even when they are rare among candidates;
    3. else (no duplicates to learn from) that u with the general m (`chance_model`).

    Random pairs are only drawn (by calling `random_pair_levels`) when step 1 fails.
    """
    candidates = list(candidate_levels)
    model = fit(candidates)
    if plausible(model):
        return model
    chance = chance_model(random_pair_levels(), pairs=len(candidates))
    anchored = fit(candidates, initial=chance, fixed_u=True)
    return anchored if plausible(anchored) else chance
