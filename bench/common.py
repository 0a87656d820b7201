"""Helpers shared by the benchmarks: output folder, interleaved timing, result printing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

OUT = Path(__file__).resolve().parent / "out"


def interleaved(a: Callable[[], float], b: Callable[[], float], rounds: int = 5) -> tuple[float, float]:
    """Run a and b alternately (a, b, a, b, ...) and return the best time of each.

    Alternating spreads slow spells over both sides; taking the minimum (as timeit does) drops
    the stalls this VM adds (seen here: whole runs taking exactly 2x), which only ever add time.
    """
    xs, ys = [], []
    for _ in range(rounds):
        xs.append(a())
        ys.append(b())
    print(f"    times a={[round(x, 2) for x in xs]} b={[round(y, 2) for y in ys]}")
    return min(xs), min(ys)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, rows: dict[str, object]) -> dict[str, object]:
    print(f"\n## {name}")
    for key, value in rows.items():
        print(f"  {key:<44} {value:.4g}" if isinstance(value, float) else f"  {key:<44} {value}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[name] = rows
    path.write_text(json.dumps(results, indent=2, default=str))
    return rows
