"""Real-time look-up cost and false flags of the duplicate engine alone, in memory: a
ledger of Chinese customers (realistic name frequencies: 王, 李, 张 at ~7% each) from
`bench.sets.chinese`, model fitted, then look-ups of returning customers (a record of a
person already in the index) and of new people (another seed's people).

    python -m bench.engine_lookup [--people 60000] [--queries 1000]

Measures the engine's share of a look-up (keys, candidates, comparison, scoring): the
projection adds reading and decrypting the candidates, which `max_candidates` bounds.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from bench import engine_quick
from ledger.projections.dedup import DuplicateIndex
from ledger.projections.dedup.keys import BlockingKeyer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=60_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--min-score", type=float, default=0.5)
    args = parser.parse_args()
    profiles, truth = engine_quick.generated("chinese_hard", args.people, 1)
    held = sorted({b for a, b in truth})[: args.queries // 2]  # returning: second records
    index = DuplicateIndex(BlockingKeyer(os.urandom(32)))
    for customer_id, profile in profiles.items():
        if customer_id not in held:
            index.add(customer_id, profile)
    start = time.perf_counter()
    model = index.refit()
    fit_seconds = time.perf_counter() - start
    gc.collect()
    gc.freeze()  # the index's 100k records are long-lived: keep the collector off them
    new_people, _ = engine_quick.generated("chinese_hard", args.queries, 99)
    fresh = [p for i, p in sorted(new_people.items()) if i.endswith("-0")][: args.queries // 2]
    latencies, candidates = [], []
    found = flagged = 0
    for customer_id in held:
        t = time.perf_counter()
        matches = index.lookup(profiles[customer_id], min_score=args.min_score)
        latencies.append(time.perf_counter() - t)
        candidates.append(len(index.candidates(profiles[customer_id])))
        found += any(
            (min(m.customer_id, customer_id), max(m.customer_id, customer_id)) in truth
            for m in matches
        )
    for profile in fresh:
        t = time.perf_counter()
        matches = index.lookup(profile, min_score=args.min_score)
        latencies.append(time.perf_counter() - t)
        candidates.append(len(index.candidates(profile)))
        flagged += bool(matches)
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    print(
        f"customers {len(profiles) - len(held)}, model {model.method} (fit {fit_seconds:.0f} s)\n"
        f"look-up p50 {statistics.median(ms):.2f} ms, p95 {ms[int(0.95 * len(ms))]:.2f} ms, "
        f"max {ms[-1]:.2f} ms; candidates scored p50 {statistics.median(candidates):.0f}, "
        f"max {max(candidates)}\n"
        f"returning customers found {found}/{len(held)}; "
        f"new people flagged {flagged}/{len(fresh)}"
    )


if __name__ == "__main__":
    main()
