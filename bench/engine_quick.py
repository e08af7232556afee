"""A quick in-process quality check of the duplicate engine alone (no CLI, no baselines):
F1 of the reported pairs and of the pairs inside the reported clusters, on FEBRL 1-4, on
FEBRL 3 and 4 without ids and birth dates, and on the Chinese-name set.

    python -m bench.engine_quick [--sets febrl1,febrl3_bare,chinese]

For engine work between full `bench.dedup` runs: seconds, not minutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import chinese_names, febrl
from ledger.projections.dedup import duplicates_among

SETS = (
    "german",
    "english",
    "english_contact",
    "chinese_hard",
    "febrl1",
    "febrl2",
    "febrl3",
    "febrl4",
    "febrl3_bare",
    "febrl4_bare",
    "chinese",
)
Pair = tuple[str, str]


def _bare(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in profile.items() if k != "birth_date" and not k.startswith("external_id")
    }


def generated(name: str, people: int, seed: int) -> tuple[dict[str, Any], frozenset[Pair]]:
    """A `bench.sets` set, each row read as `ledger import` reads it (its own row method,
    with the set's default country; rows it refuses are left out)."""
    from bench import sets
    from ledger.importer import CsvImporter

    data = sets.build(name.removesuffix("_hard"), people, seed)
    reader = CsvImporter(
        None,  # type: ignore[arg-type] # only reads rows: no ledger needed
        dict(data.columns),
        actor="bench",
        default_country=data.default_country,
        duplicate_policy="off",
    )
    profiles = {}
    for line, row in enumerate(data.rows, start=2):
        profile, _, _ = reader.row(line, {c: row.get(c, "") for c in data.columns})
        if profile is not None:
            profiles[row[sets.ID_COLUMN]] = profile
    return profiles, data.truth


def load(
    name: str, directory: Path, people: int = 2_000, seed: int = 1
) -> tuple[dict[str, Any], frozenset[Pair]]:
    if name in ("german", "english", "english_contact", "chinese_hard"):
        return generated(name, people, seed)
    if name == "chinese":
        data = chinese_names.build(2_000)
        return data.profiles, data.truth
    base = name.removesuffix("_bare")
    labelled = febrl.load(base, directory)
    profiles = febrl.import_profiles(labelled.csv_path).profiles
    if name.endswith("_bare"):
        profiles = {k: _bare(v) for k, v in profiles.items()}
    return profiles, labelled.truth


def f1(found: set[Pair], truth: frozenset[Pair]) -> tuple[float, float, float]:
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if hits else 0.0)


def cluster_pairs(groups: Iterable[tuple[str, ...]]) -> set[Pair]:
    return {(a, b) for group in groups for i, a in enumerate(group) for b in group[i + 1 :]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1, help="another seed: held-back data")
    args = parser.parse_args()
    print(f"{'set':14} {'pairs P/R/F1':>22} {'clusters P/R/F1':>22} {'cand.R':>7} method  s")
    with tempfile.TemporaryDirectory() as directory:
        for name in args.sets.split(","):
            profiles, truth = load(name, Path(directory), args.people, args.seed)
            start = time.perf_counter()
            report, index = duplicates_among(profiles, os.urandom(32))
            seconds = time.perf_counter() - start
            found = {tuple(sorted((p.first, p.second))) for p in report.pairs}
            in_clusters = cluster_pairs(c.customer_ids for c in report.clusters)
            candidates = index.candidate_pairs()
            cand_recall = len(candidates & truth) / len(truth)
            p = "/".join(f"{x:.3f}" for x in f1(found, truth))  # type: ignore[arg-type]
            c = "/".join(f"{x:.3f}" for x in f1(in_clusters, truth))
            print(
                f"{name:14} {p:>22} {c:>22} {cand_recall:7.3f} "
                f"{report.model.method:7} {seconds:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
