"""The Splink baseline: a Splink 4 model (DuckDB backend) as its documentation builds one.

For each set, on the frame of `bench.standardise` (the columns the set has):

* comparisons from `splink.comparison_library`: `NameComparison` on given and family name
  with term-frequency adjustments, `DateOfBirthComparison` (exact, one character,
  within a month, a year, ten years), `EmailComparison`, `LevenshteinAtThresholds` on
  phone (with term frequencies: a household's shared number is weak evidence) and
  postcode, `JaroWinklerAtThresholds` on the address line and on the second line,
  `ExactMatch` on street number, locality (with term frequencies) and region,
  `DamerauLevenshteinAtThresholds` on an id where there is one;
* the prior (probability that two random records match) from deterministic rules
  (name + birth date, name + postcode, email, phone) at an assumed recall of 0.7;
* u by random sampling (`estimate_u_using_random_sampling`), m by EM on two or three
  blocking sessions (name; birth date or postcode; email or phone), as the tutorials do;
* predictions over the union of blocking rules (name, family name + birth date, given
  name + birth date, family name + postcode, postcode + street number, address line +
  locality, email, phone), pairs with match probability ≥ 0.5 (the threshold used
  throughout the docs for "a match").

Same run, same records as the ledger; the timing covers training and prediction.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

from bench.sets import LabelledSet, Pair, pair
from bench.standardise import frame

THRESHOLD = 0.5


@dataclass(frozen=True)
class SplinkResult:
    pairs: frozenset[Pair]
    seconds: float
    comparisons: list[str]


def _comparisons(columns: set[str]) -> list[Any]:
    import splink.comparison_library as cl

    chosen: list[Any] = []
    for name in ("given_name", "family_name"):
        if name in columns:
            chosen.append(cl.NameComparison(name).configure(term_frequency_adjustments=True))
    if "birth_date" in columns:
        chosen.append(cl.DateOfBirthComparison("birth_date", input_is_string=True))
    if "ssn" in columns:
        chosen.append(cl.DamerauLevenshteinAtThresholds("ssn", [2]))
    if "email" in columns:
        chosen.append(cl.EmailComparison("email"))
    if "phone" in columns:
        chosen.append(
            cl.LevenshteinAtThresholds("phone", [2]).configure(term_frequency_adjustments=True)
        )
    if "street_number" in columns:
        chosen.append(cl.ExactMatch("street_number"))
    if "address_line1" in columns:
        chosen.append(
            cl.JaroWinklerAtThresholds("address_line1", [0.9, 0.8]).configure(
                term_frequency_adjustments=True
            )
        )
    if "address_line2" in columns:
        chosen.append(cl.JaroWinklerAtThresholds("address_line2", [0.9]))
    if "locality" in columns:
        chosen.append(cl.ExactMatch("locality").configure(term_frequency_adjustments=True))
    if "region" in columns:
        chosen.append(cl.ExactMatch("region"))
    if "postcode" in columns:
        chosen.append(cl.LevenshteinAtThresholds("postcode", [1, 2]))
    return chosen


def _rules(columns: set[str], candidates: list[tuple[str, ...]]) -> list[Any]:
    from splink import block_on

    return [block_on(*rule) for rule in candidates if set(rule) <= columns]


PREDICTION_RULES: list[tuple[str, ...]] = [
    ("given_name", "family_name"),
    ("family_name", "birth_date"),
    ("given_name", "birth_date"),
    ("family_name", "postcode"),
    ("given_name", "postcode"),
    ("postcode", "street_number"),
    ("address_line1", "locality"),
    ("address_line1", "street_number"),
    ("ssn",),
    ("email",),
    ("phone",),
]
DETERMINISTIC_RULES: list[tuple[str, ...]] = [
    ("given_name", "family_name", "birth_date"),
    ("given_name", "family_name", "postcode"),
    ("ssn",),
    ("email",),
    ("phone",),
]
EM_SESSIONS: list[list[tuple[str, ...]]] = [
    [("given_name", "family_name")],
    [("birth_date",), ("postcode",)],  # the first of these that the set has
    [("email",), ("phone",), ("address_line1", "street_number")],
]


def train(table: Any, *, max_pairs: float = 2e6, seed: int = 1) -> Any:
    """A trained Splink linker on a standardised frame (a `unique_id` column and the
    columns of `bench.standardise` that the records have)."""
    from splink import DuckDBAPI, Linker, SettingsCreator

    logging.getLogger("splink").setLevel(logging.ERROR)
    columns = set(table.columns)
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=_comparisons(columns),
        blocking_rules_to_generate_predictions=_rules(columns, PREDICTION_RULES),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )
    linker: Any = Linker(table, settings, db_api=DuckDBAPI(), set_up_basic_logging=False)
    deterministic = _rules(columns, DETERMINISTIC_RULES)
    if deterministic:
        linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    for session in EM_SESSIONS:
        rules = _rules(columns, session)
        if rules:
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(rules[0])
            except Exception as failure:
                logging.getLogger(__name__).info("EM session skipped: %s", failure)
    return linker


def prediction_rules(columns: set[str]) -> list[Any]:
    return _rules(columns, PREDICTION_RULES)


def deterministic_rules(columns: set[str]) -> list[Any]:
    return _rules(columns, DETERMINISTIC_RULES)


def run(data: LabelledSet, *, max_pairs: float = 2e6, seed: int = 1) -> SplinkResult:
    table = frame(data).reset_index()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        linker = train(table, max_pairs=max_pairs, seed=seed)
        predictions = linker.inference.predict(threshold_match_probability=THRESHOLD)
        found = predictions.as_pandas_dataframe()
        seconds = time.perf_counter() - start
    pairs = frozenset(
        pair(str(a), str(b))
        for a, b, p in zip(
            found["unique_id_l"], found["unique_id_r"], found["match_probability"], strict=True
        )
        if p >= THRESHOLD
    )
    return SplinkResult(pairs, seconds, [type(c).__name__ for c in _comparisons(set(table))])
