"""The recordlinkage baseline: what a competent user of that library builds for FEBRL.

Indexing: exact blocks on given name, surname, social security id and birth date, plus a
sorted-neighbourhood index (window 5) on surname and on given name. Comparison: Jaro-Winkler
(≥ 0.85) on given name, surname and first address line; exact on birth date, social
security id, suburb, postcode, state and street number. Classification: the library's
unsupervised ECM classifier (Fellegi-Sunter by EM on binary features). It reads the same
CSV file the ledger imports. `run_set` is the same recipe for any labelled set.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench.febrl import ID_COLUMN
from bench.sets import LabelledSet, pair
from bench.standardise import frame as standardised


@dataclass(frozen=True)
class BaselineResult:
    pairs: frozenset[tuple[str, str]]
    candidate_pairs: int
    seconds: float  # indexing, comparison and classification; not reading the file


def run(csv_path: Path) -> BaselineResult:
    import pandas as pd
    import recordlinkage as rl

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False).set_index(ID_COLUMN)
    frame = frame.replace("", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's pandas/sklearn deprecation noise
        start = time.perf_counter()
        indexer = rl.Index()
        for column in ("given_name", "surname", "soc_sec_id", "date_of_birth"):
            indexer.block(column)
        indexer.sortedneighbourhood("surname", window=5)
        indexer.sortedneighbourhood("given_name", window=5)
        candidates = indexer.index(frame)
        compare = rl.Compare()
        for column in ("given_name", "surname", "address_1"):
            compare.string(column, column, method="jarowinkler", threshold=0.85, label=column)
        for column in (
            "date_of_birth",
            "soc_sec_id",
            "suburb",
            "postcode",
            "state",
            "street_number",
        ):
            compare.exact(column, column, label=column)
        features = compare.compute(candidates, frame)
        matches = rl.ECMClassifier(binarize=0.8).fit_predict(features)
        seconds = time.perf_counter() - start
    pairs = frozenset(tuple(sorted((str(a), str(b)))) for a, b in matches)
    return BaselineResult(pairs, len(candidates), seconds)  # type: ignore[arg-type]


def run_set(data: LabelledSet) -> BaselineResult:
    """The same baseline on any labelled set, over the standardised frame of
    `bench.standardise` (the columns the set has): exact blocks on each name, birth date,
    postcode, email and phone, sorted neighbourhood (window 5) on each name; Jaro-Winkler
    (≥ 0.85) on names and address lines, exact on the rest; ECM."""
    import recordlinkage as rl

    frame = standardised(data)
    columns = set(frame.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        indexer = rl.Index()
        for column in ("given_name", "family_name", "birth_date", "postcode", "email", "phone"):
            if column in columns:
                indexer.block(column)
        for column in ("family_name", "given_name"):
            if column in columns:
                indexer.sortedneighbourhood(column, window=5)
        candidates = indexer.index(frame)
        compare = rl.Compare()
        for column in ("given_name", "family_name", "address_line1", "address_line2"):
            if column in columns:
                compare.string(column, column, method="jarowinkler", threshold=0.85, label=column)
        for column in (
            "birth_date",
            "ssn",
            "email",
            "phone",
            "street_number",
            "locality",
            "region",
            "postcode",
        ):
            if column in columns:
                compare.exact(column, column, label=column)
        features = compare.compute(candidates, frame)
        matches = rl.ECMClassifier(binarize=0.8).fit_predict(features)
        seconds = time.perf_counter() - start
    pairs = frozenset(pair(str(a), str(b)) for a, b in matches)
    return BaselineResult(pairs, len(candidates), seconds)
