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

Two refinements of the textbook model, both from where it failed on real-looking data:

* **Term frequencies** (as Splink does): agreeing on a value that many customers share (Wang,
  Müller, 1 January, a big city) is weaker evidence than agreeing on a rare one. For exact
  agreement on a `TERM_FIELDS` field the chance of agreement u is the share of records
  holding that value, counted on the ledger's own records (`TermFrequencies`, keyed by a
  keyed hash: no value is kept in plaintext with the model).
* **Identity conflicts.** Independence fails for relatives: twins share surname, birth
  date, address and phone; namesakes in one city share name and city. When two records
  disagree outright on a given name, or on a birth date both hold, the fields such
  people share (`HOUSEHOLD`, `NAMESAKE`) may together raise the odds at most to 1:2: only
  evidence that belongs to one person (an external id; an email or phone for namesakes,
  since a family shares its email as often as its phone) can then make the pair a match.
  A real duplicate with a mistyped name or date lands in the near or close levels, not in
  "different", so it is unaffected. Without birth dates, a wholly different street and
  postcode is such a conflict too (a namesake elsewhere, or a move).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ledger.projections.dedup.compare import (
    FIELD_NAMES,
    FIELDS,
    MISSING,
    TERM_FIELDS,
    Levels,
    Similarities,
)

_LOG2 = _LN2 = math.log(2)
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


MAX_COMMON_TERMS = 2_000  # per field: the values whose share is kept one by one


@dataclass(frozen=True)
class TermFrequencies:
    """How common values are among the ledger's records, per `TERM_FIELDS` field.

    `common` holds, per field, the share of records holding each value seen more than once
    (the most common `MAX_COMMON_TERMS`), keyed by the index's keyed hash of the value
    (`BlockingKeyer.term`), so the table can be stored with the model without revealing
    names or dates. Any other value counts as held by one record in `records`."""

    records: int
    common: Mapping[str, Mapping[str, float]]

    def share(self, field_name: str, term: str) -> float:
        found = self.common.get(field_name, {}).get(term)
        return found if found is not None else 1.0 / max(self.records, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "common": {k: dict(v) for k, v in self.common.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TermFrequencies:
        common = {
            str(name): {str(term): float(share) for term, share in values.items()}
            for name, values in data["common"].items()
        }
        return cls(records=int(data["records"]), common=common)

    @classmethod
    def count(cls, records: Iterable[Iterable[tuple[str, str]]]) -> TermFrequencies:
        """From each record's (field, term) pairs."""
        counts: dict[str, Counter[str]] = {name: Counter() for name in TERM_FIELDS}
        total = 0
        for terms in records:
            total += 1
            for name, term in set(terms):
                counts[name][term] += 1
        common = {
            name: {term: n / total for term, n in counter.most_common(MAX_COMMON_TERMS) if n > 1}
            for name, counter in counts.items()
        }
        return cls(records=total, common=common)


_FIELD = {name: i for i, name in enumerate(FIELD_NAMES)}
# What relatives in one household share, and what namesakes in one place share (see the
# module docstring): capped when the given name, or the birth date, disagrees outright.
# A full street address agreeing survives a conflict (records of one person re-keyed with a
# wrong name or date keep it; FEBRL's duplicates do), a town or postcode does not.
HOUSEHOLD = frozenset(_FIELD[n] for n in ("family_name", "birth_date", "phone", "email"))
_ADDRESS = frozenset(
    _FIELD[n]
    for n in ("street_number", "address_line1", "address_line2", "locality", "postcode", "region")
)
_GIVEN, _FAMILY, _BIRTH = _FIELD["given_name"], _FIELD["family_name"], _FIELD["birth_date"]
_GIVEN_DIFFERENT = len(FIELDS[_GIVEN].levels) - 1
_EMAIL, _EMAIL_NEAR = _FIELD["email"], 1
_FAMILY_DIFFERENT = len(FIELDS[_FAMILY].levels) - 1
# A wholly different address (street and postcode): a namesake elsewhere, or the person
# moved, which only evidence that moves with a person (email, phone, id, birth date) shows.
_MOVED = tuple(
    (_FIELD[n], len(FIELDS[_FIELD[n]].levels) - 1) for n in ("address_line1", "postcode")
)
NAMESAKE = frozenset(_FIELD[n] for n in ("given_name", "family_name", "locality", "postcode"))
_CONFLICTS = (
    (_FIELD["given_name"], len(FIELDS[_FIELD["given_name"]].levels) - 1, HOUSEHOLD),
    (_FIELD["birth_date"], len(FIELDS[_FIELD["birth_date"]].levels) - 1, NAMESAKE),
)
Adjustments = Sequence[tuple[int, float]]  # (field index, natural-log weight change)


@dataclass(frozen=True)
class Model:
    """Prior match probability among candidate pairs, and m/u per field and level."""

    prior: float
    fields: Mapping[str, FieldParameters]
    iterations: int = 0
    pairs: int = 0  # how many candidate pairs the estimate came from
    method: str = "start"  # "em-sessions", "em", "fallback" (see `estimate`) or "start"
    frequencies: TermFrequencies | None = field(default=None, compare=False)
    labels: int = 0  # confirmed pairs and non-pairs the estimate learnt from
    _weights: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)
    _cache: dict[Levels, float] = field(init=False, repr=False, compare=False)
    _plain: dict[Levels, float] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "_plain", {})

    def score(self, levels: Levels, adjustments: Adjustments = ()) -> float:
        """Posterior probability that the pair is one person. Without term-frequency
        `adjustments` it is cached per level vector (a data set has only a few hundred)."""
        if adjustments:
            logit = self._logit(levels, self._field_weights(levels, adjustments))
            return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        cached = self._cache.get(levels)
        if cached is not None:
            return cached
        logit = self._logit(levels, self._field_weights(levels, ()))
        score = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        self._cache[levels] = score
        return score

    def independent_score(self, levels: Levels) -> float:
        """The textbook posterior (fields independent, no term frequencies, no conflict
        rule): what EM's expectation step needs, since that is the model it fits."""
        cached = self._plain.get(levels)
        if cached is not None:
            return cached
        logit = math.log(self.prior / (1.0 - self.prior)) + sum(self._field_weights(levels, ()))
        score = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        self._plain[levels] = score
        return score

    def _field_weights(self, levels: Levels, adjustments: Adjustments) -> list[float]:
        weights = [
            0.0 if level == MISSING else field_weights[level]
            for field_weights, level in zip(self._weights, levels, strict=True)
        ]
        for f, change in adjustments:
            weights[f] += change
        return weights

    def _logit(self, levels: Levels, weights: list[float]) -> float:
        prior = math.log(self.prior / (1.0 - self.prior))
        capped: frozenset[int] = frozenset()
        for f, different, shared in _CONFLICTS:
            if levels[f] == different:
                capped |= shared
        if levels[_GIVEN] == _GIVEN_DIFFERENT and levels[_FAMILY] in (0, _FAMILY_DIFFERENT):
            # Same family name and address, another given name: a relative; both names
            # different: a neighbour or a flatmate.
            capped |= _ADDRESS
        if levels[_BIRTH] == MISSING and all(levels[f] == last for f, last in _MOVED):
            # Another street and postcode: a namesake, or the person moved. The address
            # then tells nothing more (its disagreement is the question), and the names
            # cannot answer it: evidence that moves with a person must.
            weights = [0.0 if f in _ADDRESS else w for f, w in enumerate(weights)]
            capped |= NAMESAKE
        if capped and levels[_EMAIL] == _EMAIL_NEAR:
            capped |= {_EMAIL}  # j.smith@ / j.smith1@: as common among namesakes as the name
        logit = prior + sum(weights)
        if capped:
            support = sum(weights[f] for f in capped if weights[f] > 0)
            logit -= max(0.0, support - max(0.0, -prior - _LN2))
        return logit

    def term_adjustments(self, terms: Iterable[tuple[str, str]]) -> list[tuple[int, float]]:
        """Weight changes for exact agreement on these (field, keyed term) values: u becomes
        the value's share of records instead of the field's average chance agreement."""
        frequencies = self.frequencies
        if frequencies is None:
            return []
        out = []
        for name, term in terms:
            chance = self.fields[name].u[0]
            share = max(frequencies.share(name, term), 1e-9)
            out.append((_FIELD[name], math.log(chance / share)))
        return out

    def explain(
        self, levels: Levels, similarities: Similarities, adjustments: Adjustments = ()
    ) -> tuple[FieldScore, ...]:
        """The compared fields with similarity, agreement level and weight in bits (after
        term-frequency adjustment)."""
        weights = self._field_weights(levels, adjustments)
        return tuple(
            FieldScore(
                spec.name,
                similarity if similarity is not None else 0.0,
                spec.levels[level],
                weight / _LOG2,
            )
            for spec, weight, level, similarity in zip(
                FIELDS, weights, levels, similarities, strict=True
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
            "labels": self.labels,
            "term_frequencies": self.frequencies.as_dict() if self.frequencies else None,
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
        if any(
            spec.name not in data["fields"] or set(data["fields"][spec.name]) != set(spec.levels)
            for spec in FIELDS
        ):
            # Saved before the fields or levels changed: start again (the next refit
            # replaces it) rather than mis-read it.
            return starting_model()
        fields = {
            spec.name: FieldParameters(
                m=tuple(float(data["fields"][spec.name][level]["m"]) for level in spec.levels),
                u=tuple(float(data["fields"][spec.name][level]["u"]) for level in spec.levels),
            )
            for spec in FIELDS
        }
        frequencies = data.get("term_frequencies")
        return cls(
            frequencies=TermFrequencies.from_dict(frequencies) if frequencies else None,
            labels=int(data.get("labels", 0)),
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
    confirmed: Iterable[Levels] = (),
    rejected: Iterable[Levels] = (),
    conflicts: bool = False,
) -> Model:
    """EM estimate of the prior and m/u from unlabelled candidate pairs' level vectors.
    With `fixed_u` only the prior and m are estimated; u stays as in `initial`. With
    `conflicts` the expectation step uses the scoring model's conflict rule (see the
    module docstring) rather than the textbook posterior: the model fitted is then the
    one that scores, and relatives and namesakes do not pull m towards themselves.

    `confirmed` and `rejected` are labelled pairs (merged; marked "not a duplicate"): they
    take part in every step with their class known instead of guessed, so each label moves
    m (confirmed) or u (rejected, unless u is fixed) towards what the ledger's reviewers
    decided. They do not count towards the prior: reviewers see flagged pairs, not a sample.
    """
    patterns = Counter(level_vectors)
    known = [(levels, 1.0) for levels in confirmed] + [(levels, 0.0) for levels in rejected]
    model = initial or starting_model()
    total = sum(patterns.values())
    if total == 0 and not known:
        return model
    items: Sequence[tuple[Levels, int]] = list(patterns.items())
    sizes = [len(spec.levels) for spec in FIELDS]
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        m_counts = [[_PSEUDO_COUNT] * n for n in sizes]
        u_counts = [[_PSEUDO_COUNT] * n for n in sizes]
        matches = 0.0
        for levels, count in items:
            posterior = model.score(levels) if conflicts else model.independent_score(levels)
            as_match, as_other = count * posterior, count * (1.0 - posterior)
            matches += as_match
            for f, level in enumerate(levels):
                if level != MISSING:
                    m_counts[f][level] += as_match
                    u_counts[f][level] += as_other
        for levels, label in known:
            for f, level in enumerate(levels):
                if level != MISSING:
                    m_counts[f][level] += label
                    u_counts[f][level] += 1.0 - label
        prior = model.prior if total == 0 else matches / total
        prior = min(max(prior, _MIN_PROBABILITY), 1.0 - _MIN_PROBABILITY)
        fields = {
            spec.name: FieldParameters(
                m=_normalised(m_counts[f]),
                u=model.fields[spec.name].u if fixed_u else _normalised(u_counts[f]),
            )
            for f, spec in enumerate(FIELDS)
        }
        method = "em-chance-u" if fixed_u else "em"
        updated = Model(
            prior=prior,
            fields=fields,
            iterations=iteration,
            pairs=total,
            method=method,
            labels=len(known),
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
MIN_OBSERVED = 30  # candidate pairs comparing a field before its estimate is judged
FALLBACK_PRIOR = 1e-3
_DUPLICATE_M = {
    2: (0.95, 0.05),
    3: (0.9, 0.05, 0.05),
    4: (0.85, 0.08, 0.04, 0.03),
    5: (0.85, 0.07, 0.03, 0.02, 0.03),
}


def observed(level_vectors: Iterable[Levels]) -> list[int]:
    """Per field, how many of the pairs compared it (both records hold it)."""
    counts = [0] * len(FIELDS)
    for levels in level_vectors:
        for f, level in enumerate(levels):
            if level != MISSING:
                counts[f] += 1
    return counts


def plausible(model: Model, seen: Sequence[int] | None = None) -> bool:
    """Whether a solution's "match" class is plausibly "same person".

    EM finds the strongest two-way split of the candidate pairs. When the data holds enough
    duplicates that split is duplicates / the rest. A ledger with few or none still gets
    split, along whatever else clusters among candidates: people sharing an address, say,
    whose names then come out as no evidence, or evidence *against* a match. Such a model
    is refused. Only fields the pairs actually compared (`seen`, at least `MIN_OBSERVED`
    times) are judged: a ledger without birth dates learns nothing about them, and that is
    no reason to refuse what it learnt about names. At least one name must be judged.
    """
    judged = 0
    for name in IDENTITY_FIELDS:
        f = _FIELD[name]
        if seen is not None and seen[f] < MIN_OBSERVED:
            continue
        judged += name != "birth_date"
        parameters = model.fields[name]
        last = len(parameters.m) - 1
        if parameters.weight(0) <= 0 or parameters.weight(last) > -MIN_DISAGREEMENT_BITS:
            return False
    return judged > 0 or seen is None


def _with_unseen_from(model: Model, other: Model, seen: Sequence[int]) -> Model:
    """`model` with the parameters of fields it hardly saw taken from `other`: EM's values
    for them are its starting guesses, not estimates."""
    fields = {
        spec.name: model.fields[spec.name] if seen[f] >= MIN_OBSERVED else other.fields[spec.name]
        for f, spec in enumerate(FIELDS)
    }
    return replace(model, fields=fields)


_CHANCE_PRIOR_PAIRS = 2.0  # weight of the prior guess below, in random pairs


def _chance_prior(levels: int) -> list[float]:
    """The guess for u before random pairs are counted: two people rarely agree by chance.
    It decides u only for a field that random pairs hardly ever compare (an email or phone
    that few customers give): without it such a field would count as agreeing by chance
    one time in `levels`, and an equal email would be no evidence at all."""
    near = [0.01] * (levels - 2)
    return [0.001, *near, 1.0 - 0.001 - sum(near)]


def chance_model(
    random_pair_levels: Iterable[Levels], *, pairs: int = 0, rejected: Iterable[Levels] = ()
) -> Model:
    """u counted on random pairs of the ledger's own records (almost all of them different
    people, so no labels are needed) and on pairs reviewers marked "not a duplicate", m from
    the general expectation that duplicates mostly agree field by field; the prior is a
    guess (1 in 1,000 candidate pairs)."""
    sizes = [len(spec.levels) for spec in FIELDS]
    counts = [[_CHANCE_PRIOR_PAIRS * u for u in _chance_prior(n)] for n in sizes]
    for levels in (*random_pair_levels, *rejected):
        for f, level in enumerate(levels):
            if level != MISSING:
                counts[f][level] += 1
    fields = {
        spec.name: FieldParameters(m=_DUPLICATE_M[sizes[f]], u=_normalised(counts[f]))
        for f, spec in enumerate(FIELDS)
    }
    return Model(prior=FALLBACK_PRIOR, fields=fields, pairs=pairs, method="fallback")


# Blocking sessions, as Splink trains: the candidate pairs agreeing exactly on the first
# fields; EM in that session estimates m of every field but those (they agree by selection).
SESSIONS: tuple[tuple[str, ...], ...] = (
    ("given_name", "family_name"),
    ("postcode",),
    ("address_line1",),
    ("birth_date",),
    ("email",),
    ("phone",),
)


def _session_m(
    candidates: Sequence[Levels], chance: Model, confirmed: Sequence[Levels]
) -> tuple[Model, list[int], int]:
    """m per field averaged over the blocking sessions that estimated it (`SESSIONS`), u
    from `chance`, and how many session pairs compared each field."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    seen = [0] * len(FIELDS)
    iterations = 0
    for blocked in SESSIONS:
        fixed = [_FIELD[name] for name in blocked]
        chosen = [levels for levels in candidates if all(levels[f] == 0 for f in fixed)]
        if len(chosen) < MIN_OBSERVED:
            continue
        hidden = [_hide(levels, fixed) for levels in chosen]
        fitted = fit(hidden, initial=chance, fixed_u=True, confirmed=confirmed, conflicts=True)
        iterations += fitted.iterations
        session_seen = observed(hidden)
        for f, spec in enumerate(FIELDS):
            if f in fixed or session_seen[f] < MIN_OBSERVED:
                continue
            seen[f] += session_seen[f]
            m = fitted.fields[spec.name].m
            total = sums.setdefault(spec.name, [0.0] * len(m))
            for i, value in enumerate(m):
                total[i] += value
            counts[spec.name] = counts.get(spec.name, 0) + 1
    fields = {
        spec.name: (
            FieldParameters(
                m=_normalised([x / counts[spec.name] for x in sums[spec.name]]),
                u=chance.fields[spec.name].u,
            )
            if spec.name in counts
            else chance.fields[spec.name]
        )
        for spec in FIELDS
    }
    return replace(chance, fields=fields), seen, iterations


def _hide(levels: Levels, fields: Sequence[int]) -> Levels:
    out = list(levels)
    for f in fields:
        out[f] = MISSING
    return tuple(out)


def _prior(candidates: Sequence[Levels], model: Model, iterations: int = 50) -> float:
    """The share of candidate pairs that are matches, by EM on the prior alone."""
    prior = model.prior
    patterns = Counter(candidates)
    total = sum(patterns.values())
    if not total:
        return prior
    for _ in range(iterations):
        current = replace(model, prior=prior)
        updated = sum(count * current.score(levels) for levels, count in patterns.items()) / total
        updated = min(max(updated, _MIN_PROBABILITY), 1.0 - _MIN_PROBABILITY)
        if abs(updated - prior) < 1e-7:
            break
        prior = updated
    return prior


def estimate(
    candidate_levels: Iterable[Levels],
    random_pair_levels: Callable[[], Iterable[Levels]],
    *,
    confirmed: Iterable[Levels] = (),
    rejected: Iterable[Levels] = (),
) -> Model:
    """The model for a ledger, from its own data and its reviewers' labels, as Splink trains
    one: u from random pairs (chance agreement: almost all random pairs are two people);
    m by EM with u held there, within blocking sessions (`SESSIONS`): among pairs that
    agree on the names, how often do duplicates agree on the address, and the other way
    round. A field the session selected on is left out of it, so agreement that blocking
    forced is never read as evidence, and relatives sharing an address cannot become the
    "match" class of the address session. Then the prior by EM on all candidate pairs.
    Confirmed pairs (merges) and rejected ones ("not a duplicate") join in with their class
    known (see `fit`); rejected ones count towards u.

    Fallbacks, the first plausible one is used: the session estimate; EM for everything on
    the candidate pairs (the classic estimate); the random-pair u with the general m
    (`chance_model`) when neither finds a "same person" class.
    """
    candidates = list(candidate_levels)
    confirmed, rejected = list(confirmed), list(rejected)
    chance = chance_model(random_pair_levels(), pairs=len(candidates), rejected=rejected)
    sessions, seen, iterations = _session_m(candidates, chance, confirmed)
    sessions = replace(
        sessions,
        iterations=iterations,
        prior=_prior(candidates, sessions),
        method="em-sessions",
        labels=len(confirmed) + len(rejected),
    )
    if plausible(sessions, seen):
        return sessions
    seen = observed([*candidates, *confirmed])
    free = _with_unseen_from(fit(candidates, confirmed=confirmed, rejected=rejected), chance, seen)
    return free if plausible(free, seen) else replace(chance, labels=len(confirmed + rejected))
