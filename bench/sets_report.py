"""The labelled sets (`bench.sets`) through the ledger, recordlinkage and Splink in one run.

For each set: the ledger via `ledger import` + `ledger duplicates --json`
(`bench.ledger_run`), the recordlinkage recipe (`bench.baseline.run_set`) and the Splink
model (`bench.splink_baseline`) on the same records; P / R / F1 over pairs for each, the
ledger's also over the pairs inside its clusters; then, per set, recall by variation and
false pairs by hard-negative kind for all three, which says *where* each one loses.

    python -m bench.sets_report [--sets german,chinese] [--people 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import baseline, ledger_run, splink_baseline
from bench.ledger_run import quality
from bench.sets import SETS, LabelledSet, Pair, build

GOAL_F1 = 0.95


def goal_met(mine: float, *baselines: float) -> bool:
    """F1 ≥ GOAL_F1 and above every baseline (a perfect 1.0 cannot be above a tie)."""
    return mine >= GOAL_F1 and (mine == 1.0 or all(mine > b for b in baselines))


@dataclass(frozen=True)
class Outcome:
    name: str
    data: LabelledSet
    ledger: ledger_run.LedgerResult
    recordlinkage: frozenset[Pair]
    recordlinkage_seconds: float
    splink: frozenset[Pair]
    splink_seconds: float

    def f1(self, pairs: frozenset[Pair]) -> float:
        return quality(pairs, self.data.truth)[2]

    def summary(self) -> str:
        mine = self.f1(self.ledger.pairs)
        rl, sp = self.f1(self.recordlinkage), self.f1(self.splink)
        met = goal_met(mine, rl, sp)
        return (
            f"{self.name}: ledger F1 {mine:.4f} (clusters {self.f1(self.ledger.cluster_pairs):.4f})"
            f" vs recordlinkage {rl:.4f} ({mine - rl:+.4f}), Splink {sp:.4f} ({mine - sp:+.4f})"
            f"; goal F1 ≥ {GOAL_F1} and above both: {'MET' if met else 'NOT met'}"
        )


def evaluate(data: LabelledSet, folder: Path, *, policy: str = "warn") -> Outcome:
    ledger = ledger_run.run(data, folder, policy=policy)
    print(f"  {data.name}: ledger done", file=sys.stderr)
    rl = baseline.run_set(data)
    sp = splink_baseline.run(data)
    print(f"  {data.name}: baselines done", file=sys.stderr)
    return Outcome(data.name, data, ledger, rl.pairs, rl.seconds, sp.pairs, sp.seconds)


def _prf(pairs: frozenset[Pair], truth: frozenset[Pair]) -> str:
    p, r, f = quality(pairs, truth)
    return f"{p:.4f} / {r:.4f} / **{f:.4f}**"


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| set | records | true pairs | ledger P / R / F1 | ledger clusters P / R / F1 "
        "(largest) | recordlinkage P / R / F1 | Splink P / R / F1 | imported (rejected, "
        "flagged, flagged with no true duplicate named) | model | import / search "
        "/ rl / Splink time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        t, led = o.data.truth, o.ledger
        lines.append(
            f"| {o.name} | {o.data.records:,} | {len(t):,} | {_prf(led.pairs, t)} "
            f"| {_prf(led.cluster_pairs, t)} ({led.largest_cluster}) "
            f"| {_prf(o.recordlinkage, t)} | {_prf(o.splink, t)} "
            f"| {led.imported:,} ({led.rejected}, {led.flagged:,}, {led.flagged_wrongly:,}) "
            f"| {led.method} | {led.import_seconds:.1f} / {led.search_seconds:.1f} "
            f"/ {o.recordlinkage_seconds:.1f} / {o.splink_seconds:.1f} s |"
        )
    return lines


def breakdown(o: Outcome) -> list[str]:
    """Recall per variation and false pairs per hard-negative kind, for all three."""
    found = {
        "ledger": o.ledger.pairs,
        "recordlinkage": o.recordlinkage,
        "Splink": o.splink,
    }
    by_kind: dict[str, list[Pair]] = {}
    for truth_pair, kind in o.data.variation.items():
        by_kind.setdefault(kind if "+" not in kind else "(variant vs variant)", []).append(
            truth_pair
        )
    lines = [
        f"#### {o.name}: recall by variation",
        "",
        "| variation | true pairs | ledger | recordlinkage | Splink |",
        "|---|---|---|---|---|",
    ]
    for kind, pairs in sorted(by_kind.items()):
        cells = " | ".join(
            f"{sum(p in pairs_found for p in pairs) / len(pairs):.3f}"
            for pairs_found in found.values()
        )
        lines.append(f"| {kind} | {len(pairs)} | {cells} |")
    negatives = Counter(o.data.hard_negatives.values())
    if negatives:
        lines += [
            "",
            f"#### {o.name}: hard negatives reported as pairs (false pairs)",
            "",
            "| trap | pairs | ledger | recordlinkage | Splink |",
            "|---|---|---|---|---|",
        ]
        for kind, count in sorted(negatives.items()):
            members = [p for p, k in o.data.hard_negatives.items() if k == kind]
            cells = " | ".join(
                str(sum(p in pairs_found for p in members)) for pairs_found in found.values()
            )
            lines.append(f"| {kind} | {count} | {cells} |")
    others = {
        name: len(pairs - o.data.truth - o.data.hard_negatives.keys())
        for name, pairs in found.items()
    }
    lines += [
        "",
        "Other false pairs (not a labelled trap): "
        + ", ".join(f"{name} {count}" for name, count in others.items()),
    ]
    return lines


def section(
    names: list[str], people: int, seed: int, *, policy: str = "warn"
) -> tuple[list[str], list[Outcome]]:
    outcomes = []
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            folder = Path(directory) / name
            folder.mkdir()
            outcomes.append(evaluate(build(name, people, seed), folder, policy=policy))
    lines = [
        "## Labelled sets: ledger against recordlinkage and Splink, same run",
        "",
        f"Generated sets (`bench/sets`, {people:,} people each, seed {seed}; FEBRL sets at "
        "their own size). Ledger: `ledger import` of the set's CSV file into a fresh SQLite "
        f"ledger (duplicate policy `{policy}`), then `ledger duplicates --json`; its pairs, "
        "and every pair inside its clusters. recordlinkage: `bench/baseline.py` `run_set`; "
        "Splink 4 (DuckDB): `bench/splink_baseline.py`, threshold 0.5. Both baselines read "
        "the records standardised (`bench/standardise.py`). Rejected rows' pairs count as "
        "missed.",
        "",
        *table(outcomes),
        "",
        "Summary:",
        "",
        *(f"* {o.summary()}" for o in outcomes),
        "",
    ]
    for o in outcomes:
        lines += [*breakdown(o), ""]
    return lines, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"of {', '.join(SETS)}")
    parser.add_argument("--people", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policy", default="warn", choices=("off", "warn", "refuse"))
    args = parser.parse_args()
    names = [s for s in args.sets.split(",") if s]
    lines, _ = section(names, args.people, args.seed, policy=args.policy)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
