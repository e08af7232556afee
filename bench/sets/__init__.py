"""Labelled data sets for the duplicate-detection benchmark, generated or loaded.

Every set is a `LabelledSet`: flat rows as a CSV file would bring them (one record id
column, `rec_id`, plus text columns), the `ledger import` column map that turns a row into
a profile, the default country for national phone numbers, the true duplicate pairs, and
two labels that say *why* a pair is hard:

* `variation`: for each true pair, what differs between the two records (e.g.
  ``dob_two_digits``, ``pinyin_swapped``), so recall can be read per difficulty;
* `hard_negatives`: pairs of different people that look alike on purpose (twins, namesakes
  in one city, household members), each with its kind, so false pairs can be read per trap.

The generators are deterministic by seed (Python's `random.Random` and Faker seeded, pools
drawn once) and take the number of *people*; each makes one to three records per person.

    from bench.sets import SETS, build
    data = build("german", people=2_000, seed=1)
    data.truth, data.variation, data.hard_negatives, data.rows

`SETS` names what `bench.dedup` evaluates: ``german``, ``english``, ``english_contact``,
``chinese`` (generated here), ``febrl3_bare`` and ``febrl4_bare`` (FEBRL with ids and birth
dates removed).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ID_COLUMN = "rec_id"
Pair = tuple[str, str]


def pair(a: str, b: str) -> Pair:
    """A pair in the one order every set and every evaluator uses."""
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class LabelledSet:
    name: str
    rows: tuple[dict[str, str], ...]  # each has ID_COLUMN and every column of `columns`
    columns: dict[str, str]  # CSV column -> ledger field (`ledger import --map`)
    default_country: str
    truth: frozenset[Pair]
    variation: dict[Pair, str] = field(default_factory=dict)  # true pair -> what differs
    hard_negatives: dict[Pair, str] = field(default_factory=dict)  # not a pair -> the trap

    @property
    def records(self) -> int:
        return len(self.rows)

    def write_csv(self, path: Path) -> Path:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([ID_COLUMN, *self.columns])
            for row in self.rows:
                writer.writerow([row[ID_COLUMN], *(row.get(c, "") for c in self.columns)])
        return path

    def import_args(self, csv_path: Path) -> list[str]:
        """`ledger import` arguments (without the program name) for this set's CSV file."""
        args = ["import", str(csv_path)]
        for column, target in self.columns.items():
            args += ["--map", f"{column}={target}"]
        return [*args, "--default-country", self.default_country]

    def field_values(self) -> list[dict[str, str]]:
        """Rows keyed by ledger field instead of column (list fields by their name:
        `emails`, `phones`), for the baselines, which read the same values."""
        return [
            {ID_COLUMN: row[ID_COLUMN], **{t: row.get(c, "") for c, t in self.columns.items()}}
            for row in self.rows
        ]


def all_pairs(ids: Iterable[str]) -> set[Pair]:
    listed = sorted(ids)
    return {(a, b) for i, a in enumerate(listed) for b in listed[i + 1 :]}


class Collector:
    """Builds a LabelledSet person by person: `person` groups the records of one person
    and labels each new record's pairs with its variation."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.truth: set[Pair] = set()
        self.variation: dict[Pair, str] = {}
        self.hard_negatives: dict[Pair, str] = {}
        self.members: dict[str, list[str]] = {}  # record id -> all records of its person

    def add(self, rec_id: str, row: Mapping[str, str]) -> str:
        self.rows.append({ID_COLUMN: rec_id, **{k: v for k, v in row.items() if v}})
        return rec_id

    def person(self, records: list[tuple[str, str]]) -> None:
        """[(rec_id, variation of this record against the first)] of one person."""
        labels = dict(records)
        ids = [rec_id for rec_id, _ in records]
        for rec_id in ids:
            self.members[rec_id] = ids
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                kind = labels[b] if i == 0 else f"{labels[a]}+{labels[b]}"
                self.truth.add(pair(a, b))
                self.variation[pair(a, b)] = kind

    def negative(self, a: str, b: str, kind: str) -> None:
        """`b` is another person made to look like `a`'s person: a trap against each of
        that person's records (the first label of a pair stays)."""
        for record in self.members.get(a, [a]):
            if pair(record, b) not in self.truth:
                self.hard_negatives.setdefault(pair(record, b), kind)

    def done(self, name: str, columns: dict[str, str], country: str) -> LabelledSet:
        return LabelledSet(
            name,
            tuple(self.rows),
            columns,
            country,
            frozenset(self.truth),
            self.variation,
            self.hard_negatives,
        )


def _german(people: int, seed: int) -> LabelledSet:
    from bench.sets import german

    return german.build(people, seed)


def _english(people: int, seed: int) -> LabelledSet:
    from bench.sets import english

    return english.build(people, seed, contact=False)


def _english_contact(people: int, seed: int) -> LabelledSet:
    from bench.sets import english

    return english.build(people, seed, contact=True)


def _chinese(people: int, seed: int) -> LabelledSet:
    from bench.sets import chinese

    return chinese.build(people, seed)


def _febrl3_bare(people: int, seed: int) -> LabelledSet:
    from bench.sets import febrl_bare

    return febrl_bare.build("febrl3")


def _febrl4_bare(people: int, seed: int) -> LabelledSet:
    from bench.sets import febrl_bare

    return febrl_bare.build("febrl4")


SETS: dict[str, Callable[[int, int], LabelledSet]] = {
    "german": _german,
    "english": _english,
    "english_contact": _english_contact,
    "chinese": _chinese,
    "febrl3_bare": _febrl3_bare,
    "febrl4_bare": _febrl4_bare,
}


def build(name: str, people: int = 2_000, seed: int = 1) -> LabelledSet:
    """The named set (see `SETS`); FEBRL sets have a fixed size and ignore both numbers."""
    return SETS[name](people, seed)
