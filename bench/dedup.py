"""Duplicate detection benchmark: quality and speed of the real `ledger import` and
`ledger duplicates` commands against recordlinkage and Splink on FEBRL and on the labelled
sets of `bench.sets` (`bench.sets_report`), real-time look-up latency and false alarms
through `DuplicateQueries` (`bench.realtime`), and the Chinese-name set.

    pip install -e '.[bench]' && python -m bench.dedup [--quick] [--sections sets,realtime]
        [--labelled german,chinese] [--people 3000] [--customers 100000 --data-cache DIR]

Every figure is printed next to a baseline measured in the same run, with the ratio.
Timings are medians of `--repeat` runs. Each FEBRL set is written as CSV and loaded into a
fresh data directory by `ledger import` (a subprocess, the column map of `bench.febrl`);
then `ledger duplicates --json` runs as a subprocess. Two times are shown for it: the
search as the command reports it (reading and decrypting the index's records, candidate
pairs, comparison, EM, scoring, clusters) and the whole process (interpreter start-up,
opening the ledger, the access-log record, writing the JSON). The import is timed apart:
reading a CSV file is not part of the baseline's time either.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from bench import baseline, chinese_names, febrl, realtime, sets_report, splink_baseline
from bench.ledger_run import ledger_command, quality
from bench.sets import SETS as LABELLED_SETS
from bench.sets import all_pairs, febrl_bare
from ledger.projections.dedup import FIELDS, Model

T = TypeVar("T")


def rec_ids_by_line(csv_path: Path) -> dict[int, str]:
    """The FEBRL record id on each line of the CSV file, as the import numbers lines."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = header.index(febrl.ID_COLUMN)
        found = {}
        for row in reader:
            found[reader.line_num] = row[column]
        return found


@dataclass(frozen=True)
class Imported:
    customers: dict[str, str]  # customer id -> FEBRL rec_id
    rejected: int
    with_warnings: int
    flagged: int  # rows the import reported as likely duplicates (policy warn)
    seconds: float


def import_set(data: febrl.FebrlSet, data_dir: Path) -> Imported:
    args = febrl.import_args(data.csv_path)[1:]  # without the program name
    summary, seconds = ledger_command(data_dir, *args)
    lines = rec_ids_by_line(data.csv_path)
    return Imported(
        customers={row["id"]: lines[row["line"]] for row in summary["registered"]},
        rejected=summary["rejected"],
        with_warnings=summary["with_warnings"],
        flagged=len(summary["likely_duplicates"]),
        seconds=seconds,
    )


def timed(run: Callable[[], T], repeat: int) -> tuple[T, float]:
    """The last result and the median wall time of `repeat` runs."""
    seconds = []
    result: T | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    assert result is not None
    return result, statistics.median(seconds)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {version(name)}"
        for name in ("rapidfuzz", "pypinyin", "jellyfish", "recordlinkage", "pandas", "Faker")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores (shared), Python {platform.python_version()} "
        f"on {platform.system()} {platform.release()}; {versions}"
    )


def febrl_section(names: list[str], repeat: int) -> tuple[list[str], Model | None]:
    lines = [
        "## FEBRL: `ledger import` + `ledger duplicates` against the recordlinkage baseline",
        "",
        "| set | records | true pairs | imported (rejected, with warnings, flagged) "
        "| import time | ledger P / R / F1 | ledger clusters P / R / F1 "
        "| baseline P / R / F1 | Splink P / R / F1 | F1 ratio "
        "| search (command's own) | `ledger duplicates` process | baseline time "
        "| speed-up search / process | Splink time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    models: dict[str, Model] = {}
    summaries: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            folder = Path(directory) / name
            folder.mkdir()
            data = febrl.load(name, folder)
            imported = import_set(data, folder / "ledger-data")
            runs = []
            for _ in range(repeat):
                report, wall = ledger_command(folder / "ledger-data", "duplicates")
                runs.append((report, wall))
            report = runs[-1][0]
            search = statistics.median(r["seconds"] for r, _ in runs)
            process = statistics.median(wall for _, wall in runs)
            base_runs = [baseline.run(data.csv_path) for _ in range(repeat)]
            base, base_seconds = base_runs[-1], statistics.median(r.seconds for r in base_runs)
            ids = imported.customers
            found = (
                tuple(sorted((ids[p["customer_ids"][0]], ids[p["customer_ids"][1]])))
                for p in report["pairs"]
            )
            mine = quality(found, data.truth)  # type: ignore[arg-type]
            theirs = quality(base.pairs, data.truth)
            in_clusters: set[tuple[str, str]] = set()
            for cluster in report["clusters"]:
                in_clusters |= all_pairs(ids[c] for c in cluster["customer_ids"])
            grouped = quality(in_clusters, data.truth)
            splink = splink_baseline.run(febrl_bare.build(name, bare=False))
            other = quality(splink.pairs, data.truth)
            met = sets_report.goal_met(mine[2], theirs[2], other[2])
            summaries.append(
                f"{name}: ledger F1 {mine[2]:.4f} (clusters {grouped[2]:.4f}) vs recordlinkage "
                f"{theirs[2]:.4f} ({mine[2] - theirs[2]:+.4f}), Splink {other[2]:.4f} "
                f"({mine[2] - other[2]:+.4f}); goal F1 ≥ {sets_report.GOAL_F1} and above "
                f"both: {'MET' if met else 'NOT met'}"
            )
            models[name] = Model.from_dict(report["model"])
            lines.append(
                f"| {name} | {data.records:,} | {len(data.truth):,} "
                f"| {len(ids):,} ({imported.rejected}, {imported.with_warnings}, "
                f"{imported.flagged:,}) | {imported.seconds:.1f} s "
                f"| {mine[0]:.4f} / {mine[1]:.4f} / **{mine[2]:.4f}** "
                f"| {grouped[0]:.4f} / {grouped[1]:.4f} / {grouped[2]:.4f} "
                f"| {theirs[0]:.4f} / {theirs[1]:.4f} / {theirs[2]:.4f} "
                f"| {other[0]:.4f} / {other[1]:.4f} / {other[2]:.4f} "
                f"| {mine[2] / theirs[2]:.4f} | {search:.2f} s | {process:.2f} s "
                f"| {base_seconds:.2f} s | {base_seconds / search:.1f}x / "
                f"{base_seconds / process:.1f}x | {splink.seconds:.1f} s |"
            )
            print(f"  {name} done", file=sys.stderr)
    lines += [
        "",
        "P / R / F1 over pairs of records (the FEBRL truth: every pair of records of one "
        "person). Rejected rows have no name at all, which the domain refuses; their true "
        'pairs count as missed. "With warnings": rows kept with an invalid value left '
        'empty (impossible birth dates); "flagged": rows the import reported as likely '
        "duplicates of an earlier row or customer (LEDGER_DUPLICATE_POLICY=warn, the "
        "default). Baseline time: its indexing, comparison and ECM classification, in this "
        "process; search: what `ledger duplicates` reports for its own work (reading and "
        "decrypting the records, candidate pairs, comparison, EM, scoring, clusters); "
        "process: the whole command, interpreter start-up and JSON output included. "
        "Ledger clusters: every pair of records inside one reported cluster. Splink: "
        "`bench/splink_baseline.py` on the same records (standardised), threshold 0.5.",
        "",
        "Summary:",
        "",
        *(f"* {line}" for line in summaries),
    ]
    chosen = "febrl3" if "febrl3" in models else next(iter(models), None)
    return lines, (models[chosen] if chosen else None)


def weights_section(model: Model, name: str) -> list[str]:
    lines = [
        f"## Fellegi-Sunter weights found by EM on {name} (unsupervised, method `{model.method}`)",
        "",
        f"Prior match probability among candidate pairs {model.prior:.4f}, "
        f"{model.iterations} EM iterations over {model.pairs:,} candidate pairs. "
        "Weight = log2(m/u) in bits; fields FEBRL does not have (email, phone) stay at 0.",
        "",
        "| field | level | m | u | weight (bits) |",
        "|---|---|---|---|---|",
    ]
    for spec in FIELDS:
        parameters = model.fields[spec.name]
        for i, level in enumerate(spec.levels):
            lines.append(
                f"| {spec.name} | {level} | {parameters.m[i]:.4f} | {parameters.u[i]:.4f} "
                f"| {parameters.weight(i):+.2f} |"
            )
    return lines


SECTIONS = ("febrl", "sets", "realtime", "chinese")


def main() -> None:
    parser = argparse.ArgumentParser(description="Duplicate detection benchmark")
    parser.add_argument("--sets", default=",".join(febrl.SETS), help="FEBRL sets, comma-separated")
    parser.add_argument(
        "--labelled",
        default=",".join(LABELLED_SETS),
        help=f"labelled sets (bench/sets), comma-separated, of {', '.join(LABELLED_SETS)}",
    )
    parser.add_argument("--people", type=int, default=3_000, help="people per generated set")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated sets")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"of {', '.join(SECTIONS)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument(
        "--data-cache",
        type=Path,
        help="keep the real-time section's loaded ledger in this directory between runs",
    )
    parser.add_argument("--baseline-queries", type=int, default=200)
    parser.add_argument(
        "--splink-queries", type=int, default=1_000, help="questions Splink links (0: none)"
    )
    parser.add_argument("--chinese-people", type=int, default=2_000)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="febrl1+febrl3, the generated sets with 800 people and febrl3_bare, "
        "15,000 customers, 1 run",
    )
    args = parser.parse_args()
    if args.quick:
        args.sets, args.repeat, args.customers, args.chinese_people = (
            "febrl1,febrl3",
            1,
            15_000,
            500,
        )
        args.people = min(args.people, 800)
        args.labelled = ",".join(n for n in args.labelled.split(",") if n != "febrl4_bare")
        args.queries = min(args.queries, 400)
        args.splink_queries = min(args.splink_queries, 400)
    sections = set(args.sections.split(","))

    print("# Duplicate detection benchmark\n")
    print(f"Machine: {machine()}\n")
    print(f"Started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}\n")  # fmt: skip
    if "febrl" in sections:
        lines, model = febrl_section([s for s in args.sets.split(",") if s], args.repeat)
        print("\n".join(lines) + "\n")
        if model is not None:
            name = "febrl3" if "febrl3" in args.sets else args.sets.split(",")[0]
            print("\n".join(weights_section(model, name)) + "\n")
    if "sets" in sections:
        names = [n for n in args.labelled.split(",") if n]
        lines, _ = sets_report.section(names, args.people, args.seed)
        print("\n".join(lines) + "\n")
    if "realtime" in sections:
        lines = realtime.section(
            args.customers,
            args.queries,
            args.baseline_queries,
            cache=args.data_cache,
            seed=args.seed,
            splink_queries=args.splink_queries,
        )
        print("\n".join(lines) + "\n")
    if "chinese" in sections:
        print("## Chinese names\n")
        print(chinese_names.report(args.chinese_people))
    print(f"\nFinished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
