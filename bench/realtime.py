"""Real-time look-up: one record against a customer base, through `DuplicateQueries`.

The customer base is `bench.population` (English, Chinese and German customers at realistic
name frequencies), registered with `register_many` (the import's batch path) into a SQLite
ledger. Loading 100,000 customers takes minutes, so `--data-cache DIR` keeps the ledger
between runs: a manifest there records what was loaded (count, seed, generator version)
and the customer ids; a later run with the same parameters reuses it. When the duplicate
engine's source changed since (ledger/projections/dedup, duplicate_index.py), the duplicate
projections are rebuilt from the events first, which is much quicker than registering.

Measured: the latency of `DuplicateQueries.candidates` per look-up (p50 / p95 / p99), the
share of new people (not in the ledger) whose best match scores at or above the ledger's
duplicate threshold (wrongly flagged as likely duplicates; target ≤ 5%), and recall on
returning people (their customer is the best match, at or above the threshold); per
population too. Beside it, a brute-force rapidfuzz scan of all names in memory (latency),
and Splink's model on the same customers and questions (flags and recall).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bench import population
from ledger.bootstrap import open_ledger
from ledger.config import Settings
from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import validate_registration
from ledger.projections.wiring import duplicate_queries, runner_of

T = TypeVar("T")
LOAD_BATCH = 1_000
MANIFEST = "bench-population.json"
ENGINE_SOURCES = ("ledger/projections/dedup", "ledger/projections/duplicate_index.py")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _progress(items: Iterable[T], total: int, label: str) -> Iterable[T]:
    """A rich progress bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, total=total, description=label, console=None, transient=True)


def _lenient(profile: dict[str, Any]) -> dict[str, Any]:
    """As the import's default: an invalid value is left out."""
    try:
        validate_registration(profile)
    except ValidationFailed as failure:
        fields = {re.split(r"[\[.]", v.field)[0] for v in failure.violations}
        return {k: v for k, v in profile.items() if k not in fields}
    return profile


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def engine_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for source in ENGINE_SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.exists():
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _settings(folder: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{folder / 'ledger.db'}", data_dir=folder)


def load(folder: Path, people: population.Population) -> tuple[dict[str, str], float]:
    """Register the customers in batches; customer key -> customer id, seconds."""
    keys = list(people.first)
    ids: dict[str, str] = {}
    start = time.perf_counter()
    with open_ledger(_settings(folder)) as ledger:
        batches = range(0, len(keys), LOAD_BATCH)
        for first in _progress(batches, len(batches), "registering"):
            chunk = keys[first : first + LOAD_BATCH]
            made = ledger.register_many(
                [(_lenient(people.first[k]), []) for k in chunk], actor="bench-load"
            )
            ids.update({k: str(i) for k, i in zip(chunk, made, strict=True)})
    return ids, time.perf_counter() - start


def cached_ledger(
    cache: Path | None, scratch: Path, people: population.Population, seed: int
) -> tuple[Path, dict[str, str], str]:
    """(data dir, customer ids, how it was obtained)."""
    root = Path(__file__).resolve().parent.parent
    # The customers themselves, hashed: any change to the generators invalidates the cache.
    drawn = json.dumps(people.first, sort_keys=True).encode()
    wanted = {"customers": len(people.first), "seed": seed, "generator": _digest(drawn)}
    if cache is not None:
        manifest = cache / MANIFEST
        if manifest.exists():
            saved = json.loads(manifest.read_text(encoding="utf-8"))
            if {k: saved.get(k) for k in wanted} == wanted:
                how = "reused from the cache"
                if saved.get("engine") != engine_hash(root):
                    start = time.perf_counter()
                    with open_ledger(_settings(cache)) as ledger:
                        runner = runner_of(ledger)
                        names = [p.name for p in runner.projections if "duplicate" in p.name]
                        runner.rebuild(names)
                    saved["engine"] = engine_hash(root)
                    manifest.write_text(json.dumps(saved), encoding="utf-8")
                    how += f", duplicate projections rebuilt in {time.perf_counter() - start:.0f} s"
                return cache, dict(saved["ids"]), how
            shutil.rmtree(cache)  # ours (it has our manifest), for other parameters
        elif cache.exists() and any(cache.iterdir()):
            raise SystemExit(f"--data-cache {cache}: not empty and not a benchmark cache")
        cache.mkdir(parents=True, exist_ok=True)
        ids, seconds = load(cache, people)
        record = {**wanted, "engine": engine_hash(root), "ids": ids}
        (cache / MANIFEST).write_text(json.dumps(record), encoding="utf-8")
        return cache, ids, f"registered in {seconds:.0f} s (now cached)"
    ids, seconds = load(scratch, people)
    return scratch, ids, f"registered in {seconds:.0f} s"


def section(
    customers: int,
    queries: int,
    baseline_queries: int,
    *,
    cache: Path | None = None,
    seed: int = 1,
    splink_queries: int = 200,
) -> list[str]:
    import tempfile

    people = population.customers(customers, seed=seed)
    asked = population.queries(people, queries, seed=seed + 1)
    shares = Counter(people.population_of.values())
    with tempfile.TemporaryDirectory() as directory:
        folder, ids, how = cached_ledger(cache, Path(directory), people, seed)
        settings = replace(_settings(folder), duplicate_policy="off")
        with open_ledger(settings) as ledger:
            dq = duplicate_queries(ledger)
            start = time.perf_counter()
            model = dq.refit()
            fitting = time.perf_counter() - start
            threshold = dq.threshold
            latencies: list[float] = []
            found: Counter[str] = Counter()
            asked_by: Counter[str] = Counter()
            alarms: Counter[str] = Counter()
            new_by: Counter[str] = Counter()
            alarms_by_kind: Counter[str] = Counter()
            new_by_kind: Counter[str] = Counter()
            for query in _progress(asked, len(asked), "looking up"):
                begin = time.perf_counter_ns()
                matches = dq.candidates(query.profile, min_score=0.0, limit=10)
                latencies.append((time.perf_counter_ns() - begin) / 1e6)
                top = matches[0] if matches and matches[0].score >= threshold else None
                if query.expected is None:
                    new_by[query.population] += 1
                    alarms[query.population] += top is not None
                    new_by_kind[query.kind] += 1
                    alarms_by_kind[query.kind] += top is not None
                else:
                    asked_by[query.population] += 1
                    found[query.population] += (
                        top is not None and top.customer_id == ids[query.expected]
                    )

    scan_latencies = _scan(people, asked[:baseline_queries])
    splink = splink_lookups(people, asked[:splink_queries]) if splink_queries else None
    p95, scan_p95 = _percentile(latencies, 0.95), _percentile(scan_latencies, 0.95)
    new, returning = sum(new_by.values()), sum(asked_by.values())
    false_share = sum(alarms.values()) / new if new else 0.0
    per_population = "; ".join(
        f"{name}: {alarms[name]}/{new_by[name]} new flagged, "
        f"{found[name]}/{asked_by[name]} returning found"
        for name, _, _ in population.POPULATIONS
    )
    return [
        f"## Real-time look-up: one record against {len(people.first):,} customers",
        "",
        f"Customers from `bench.population` (seed {seed}): "
        + ", ".join(f"{shares[n]:,} {n}" for n, _, _ in population.POPULATIONS)
        + f" (English, Chinese, German name frequencies); {how}. Model re-estimated by "
        f"`DuplicateQueries.refit` in {fitting:.1f} s (method `{model.method}`, "
        f"{model.pairs:,} candidate pairs). {len(asked):,} look-ups through "
        f"`DuplicateQueries.candidates`: {returning} returning people (a typo, another "
        f"name form or phone format, a new email ...) and {new} new people from the same "
        f"populations, half of them namesakes of a customer (same full name, half in the "
        f"same town; another birth date, phone and email). Flagged: best match scores ≥ "
        f"the duplicate threshold ({threshold}).",
        "",
        "| | p50 | p95 | p99 | max | returning people found (top 1, ≥ threshold) "
        "| new people wrongly flagged |",
        "|---|---|---|---|---|---|---|",
        f"| ledger `DuplicateQueries.candidates` | {_percentile(latencies, 0.5):.2f} ms "
        f"| **{p95:.2f} ms** | {_percentile(latencies, 0.99):.2f} ms | {max(latencies):.2f} ms "
        f"| {sum(found.values())}/{returning} ({sum(found.values()) / max(1, returning):.1%}) "
        f"| **{sum(alarms.values())}/{new} ({false_share:.1%})** |",
        f"| baseline: rapidfuzz `process.extract` over all names in memory "
        f"({len(scan_latencies)} queries) | {_percentile(scan_latencies, 0.5):.2f} ms "
        f"| {scan_p95:.2f} ms | {_percentile(scan_latencies, 0.99):.2f} ms "
        f"| {max(scan_latencies):.2f} ms | n/a | n/a |",
        *(_splink_row(splink) if splink else []),
        "",
        f"By population: {per_population}. New people by kind: "
        + "; ".join(
            f"{kind}: {alarms_by_kind[kind]}/{new_by_kind[kind]} flagged"
            for kind in sorted(new_by_kind)
        )
        + ".",
        "",
        f"Targets: p95 ≤ 10 ms: {'met' if p95 <= 10 else 'NOT met'}; new people wrongly "
        f"flagged ≤ 5%: {'met' if false_share <= 0.05 else 'NOT met'}.",
    ]


def _flat(profile: dict[str, Any]) -> dict[str, str]:
    """A profile as the flat values by ledger field that `bench.standardise` reads."""
    flat = {k: v for k, v in profile.items() if isinstance(v, str)}
    for name in ("emails", "phones"):
        if profile.get(name):
            flat[name] = profile[name][0]
    for address in profile.get("addresses", [])[:1]:
        flat.update({k: v for k, v in address.items() if k != "country" and v})
    return flat


@dataclass(frozen=True)
class SplinkLookups:
    train_seconds: float
    latencies: list[float]
    flagged_new: int
    new: int
    found: int
    returning: int


def splink_lookups(people: population.Population, asked: list[population.Query]) -> SplinkLookups:
    """The Splink model of `bench.splink_baseline`, trained on the same customers, then
    the questions linked to them in one batch (its model, `link_only`, the prior
    re-estimated between questions and customers by the same deterministic rules,
    predictions at match probability ≥ 0.5): a question is flagged when it has a match.
    Trained on customers without duplicates, the prior is close to 0 and nothing would
    reach 0.5 (`find_matches_to_new_records` with that prior returned no rows at all),
    hence the re-estimate. Batch, so no per-look-up latency is shown."""
    import warnings

    import pandas as pd
    from splink import DuckDBAPI, Linker

    from bench import splink_baseline
    from bench.standardise import COLUMNS, record

    country = {name: c for name, _, c in population.POPULATIONS}
    rows = [
        {"unique_id": key, **record(_flat(p), country[people.population_of[key]])}
        for key, p in people.first.items()
    ]
    table = pd.DataFrame(rows, columns=["unique_id", *COLUMNS])
    table = table[[c for c in table.columns if table[c].notna().any()]]
    questions = pd.DataFrame(
        [
            {"unique_id": f"query-{n}", **record(_flat(q.profile), country[q.population])}
            for n, q in enumerate(asked)
        ],
        columns=list(table.columns),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        linker = splink_baseline.train(table)
        train_seconds = time.perf_counter() - start
        model = linker.misc.save_model_to_json()
        model["link_type"] = "link_only"
        linking: Any = Linker(
            [table, questions], model, db_api=DuckDBAPI(), set_up_basic_logging=False
        )
        # The customers hold no duplicates, so the prior learnt on them is close to 0;
        # between questions and customers it is re-estimated, unsupervised as before.
        rules = splink_baseline.deterministic_rules(set(table.columns))
        linking.training.estimate_probability_two_random_records_match(rules, recall=0.7)
        begin = time.perf_counter()
        found_pairs = linking.inference.predict(
            threshold_match_probability=splink_baseline.THRESHOLD
        ).as_pandas_dataframe()
        seconds = time.perf_counter() - begin
    best: dict[str, tuple[float, str]] = {}
    for left, right, probability in zip(
        found_pairs["unique_id_l"],
        found_pairs["unique_id_r"],
        found_pairs["match_probability"],
        strict=True,
    ):
        question, customer = (left, right) if str(left).startswith("query-") else (right, left)
        if probability > best.get(str(question), (0.0, ""))[0]:
            best[str(question)] = (float(probability), str(customer))
    flagged = new = found = returning = 0
    for n, query in enumerate(asked):
        top = best.get(f"query-{n}")
        if query.expected is None:
            new += 1
            flagged += top is not None
        else:
            returning += 1
            found += top is not None and top[1] == query.expected
    per_question = seconds / max(1, len(asked)) * 1000
    return SplinkLookups(train_seconds, [per_question], flagged, new, found, returning)


def _splink_row(s: SplinkLookups) -> list[str]:
    share = s.flagged_new / s.new if s.new else 0.0
    return [
        f"| Splink 4, the same model (trained in {s.train_seconds:.0f} s) linking the "
        f"first {s.new + s.returning} questions in one batch | "
        f"{s.latencies[0]:.2f} ms per question (batch) | n/a | n/a | n/a "
        f"| {s.found}/{s.returning} "
        f"({s.found / max(1, s.returning):.1%}) | {s.flagged_new}/{s.new} ({share:.1%}) |"
    ]


def _scan(people: population.Population, asked: list[population.Query]) -> list[float]:
    from rapidfuzz import process
    from rapidfuzz.distance import JaroWinkler

    def text(profile: dict[str, Any]) -> str:
        return f"{profile.get('given_name', '')} {profile.get('family_name', '')}".casefold()

    names = [text(p) for p in people.first.values()]
    latencies = []
    for query in asked:
        start = time.perf_counter_ns()
        process.extract(
            text(query.profile), names, scorer=JaroWinkler.normalized_similarity, limit=10
        )
        latencies.append((time.perf_counter_ns() - start) / 1e6)
    return latencies


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--baseline-queries", type=int, default=100)
    parser.add_argument("--splink-queries", type=int, default=200, help="0: no Splink row")
    parser.add_argument("--data-cache", type=Path, help="keep the loaded ledger here")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    lines = section(
        args.customers,
        args.queries,
        args.baseline_queries,
        cache=args.data_cache,
        seed=args.seed,
        splink_queries=args.splink_queries,
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
