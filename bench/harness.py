"""Timing helpers and the result table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    higher_is_better: bool = True
    target: float | None = None

    @property
    def verdict(self) -> str:
        """Against the issue's target, where it sets one."""
        if self.target is None:
            return ""
        met = self.value >= self.target if self.higher_is_better else self.value <= self.target
        sign = ">=" if self.higher_is_better else "<="
        return f"{'met' if met else 'MISSED'} ({sign} {self.target:,.0f})"

    @property
    def ratio(self) -> float:
        if not self.baseline:
            return float("nan")
        return self.value / self.baseline


def throughput(work: Callable[[T], object], items: Sequence[T], clients: int) -> float:
    """Items per second with `clients` threads each taking the next item."""
    lock = threading.Lock()
    cursor = iter(items)

    def worker() -> None:
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                return
            work(item)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    return len(items) / (time.perf_counter() - started)


def latencies_ms(work: Callable[[T], object], items: Sequence[T]) -> list[float]:
    result = []
    for item in items:
        started = time.perf_counter()
        work(item)
        result.append((time.perf_counter() - started) * 1000)
    return result


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "baseline", "baseline value", "ratio", "target")]
    for f in figures:
        rows.append(
            (
                f.name,
                f"{f.value:,.1f} {f.unit}",
                f.baseline_name,
                f"{f.baseline:,.1f} {f.unit}",
                f"{f.ratio:.2f}x",
                f.verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
