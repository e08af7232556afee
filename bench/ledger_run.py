"""The ledger on a labelled set, through its real commands: `ledger import` of the set's CSV
file into a fresh data directory, then `ledger duplicates --json`, both as subprocesses.

Two readings of the report: its *pairs* (every pair scored at or above the threshold) and
its *clusters* (every pair of records inside one cluster: what a user merging a cluster
would merge; clusters that chain different people together show up here).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sets import ID_COLUMN, LabelledSet, Pair, all_pairs, pair


def ledger_command(
    data_dir: Path, *args: str, policy: str = "warn"
) -> tuple[dict[str, Any], float]:
    """Run `ledger ARGS --json` on a data directory; (its JSON output, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        LEDGER_STORE=f"sqlite:///{data_dir / 'ledger.db'}",
        LEDGER_DATA_DIR=str(data_dir),
        LEDGER_ACTOR="bench",
        LEDGER_DUPLICATE_POLICY=policy,
    )
    start = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own command line, no shell
        [sys.executable, "-m", "ledger.cli.main", *args, "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1) or not done.stdout:  # 1: some rows rejected
        raise RuntimeError(f"ledger {args[0]} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout), seconds


def ids_by_line(csv_path: Path, column: str = ID_COLUMN) -> dict[int, str]:
    """The record id on each line of the CSV file, as the import numbers lines."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        index = next(reader).index(column)
        found = {}
        for row in reader:
            found[reader.line_num] = row[index]
        return found


def quality(found: Iterable[Pair], truth: frozenset[Pair]) -> tuple[float, float, float]:
    """Precision, recall and F1 over pairs."""
    found = set(found)
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


@dataclass(frozen=True)
class LedgerResult:
    pairs: frozenset[Pair]  # the report's pairs, as record ids
    cluster_pairs: frozenset[Pair]  # every pair inside a reported cluster
    largest_cluster: int
    imported: int
    rejected: int  # rows the import refused (no name, ...): their pairs count as missed
    with_warnings: int
    flagged: int  # rows the import reported as likely duplicates (policy warn)
    flagged_wrongly: int  # ... none of whose named matches is a true duplicate
    import_seconds: float
    search_seconds: float  # what `ledger duplicates` reports for its own work
    method: str  # how the model was estimated


def run(data: LabelledSet, folder: Path, *, policy: str = "warn") -> LedgerResult:
    csv_path = data.write_csv(folder / f"{data.name}.csv")
    summary, import_seconds = ledger_command(
        folder / "ledger-data", *data.import_args(csv_path), policy=policy
    )
    lines = ids_by_line(csv_path)
    customers = {row["id"]: lines[row["line"]] for row in summary["registered"]}
    report, _ = ledger_command(folder / "ledger-data", "duplicates")
    found = frozenset(
        pair(customers[p["customer_ids"][0]], customers[p["customer_ids"][1]])
        for p in report["pairs"]
    )
    in_clusters: set[Pair] = set()
    largest = 0
    for cluster in report["clusters"]:
        members = [customers[c] for c in cluster["customer_ids"]]
        largest = max(largest, len(members))
        in_clusters |= all_pairs(members)
    wrongly = 0
    for note in summary["likely_duplicates"]:
        row = lines[note["line"]]
        named = [
            lines[int(m["of"].removeprefix("line "))]
            if m["of"].startswith("line ")
            else customers.get(m["of"], "")
            for m in note["likely_duplicates"]
        ]
        wrongly += not any(pair(row, other) in data.truth for other in named)
    return LedgerResult(
        pairs=found,
        cluster_pairs=frozenset(in_clusters),
        largest_cluster=largest,
        imported=len(customers),
        rejected=summary["rejected"],
        with_warnings=summary["with_warnings"],
        flagged=len(summary["likely_duplicates"]),
        flagged_wrongly=wrongly,
        import_seconds=import_seconds,
        search_seconds=float(report.get("seconds", 0.0)),
        method=str(report.get("model", {}).get("method", "?")),
    )
