"""Helpers shared by the benchmarks: quick mode, interleaved timing, targets, machine facts, results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# BENCH_OUT moves every output (the test suite's quick run writes into its temporary folder).
OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent / "out").resolve()
QUICK_ENV = "BENCH_QUICK"
# Quick mode's shapes for the benchmarks that otherwise build the default models (throughput, MFU,
# generation): one layer, 32 units or width 64, batches of 8 × 32 tokens. `++` because units and
# ff_dim / heads each exist in one model family only; the other just carries the unused key.
TINY_SHAPES = ["model.layers=1", "embedding=small", "++model.units=32", "++model.heads=2", "++model.ff_dim=64",
               "trainer.batch_size=8", "trainer.seq_len=32"]


def quick() -> bool:
    """Quick mode (`python -m bench --quick`): tiny sizes that only check each code path runs.

    An environment variable rather than an argument, so the ingest subprocesses see it too.
    """
    return os.environ.get(QUICK_ENV) == "1"


def tiny() -> list[str]:
    """Overrides that shrink a default model in quick mode; none otherwise."""
    return list(TINY_SHAPES) if quick() else []


def out_dir() -> Path:
    """Quick runs write beside, never over, the real results."""
    return OUT / "quick" if quick() else OUT


def results_path() -> Path:
    return out_dir() / "results.json"


def compose(overrides: list[str]):
    """The project's Hydra config with these overrides, from the configs packaged in lyricslab."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lyricslab.config.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def interleaved(a: Callable[[], float], b: Callable[[], float], rounds: int = 5) -> tuple[float, float]:
    """Run a and b alternately, swapping which goes first each round (a b, b a, a b, ...), and
    return the best time of each.

    Alternating spreads slow spells over both sides, and swapping the order keeps either side
    from always running second (after the other has warmed caches or heated the CPU). Taking the
    minimum (as timeit does) drops the stalls this VM adds, which only ever add time.
    """
    xs, ys = [], []
    for i in range(rounds):
        if i % 2 == 0:
            xs.append(a())
            ys.append(b())
        else:
            ys.append(b())
            xs.append(a())
    print(f"    times a={[round(x, 3) for x in xs]} b={[round(y, 3) for y in ys]}")
    return min(xs), min(ys)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


UNITS = {"x": "×", "%": "%", "MB": " MB"}


@dataclass(frozen=True)
class Target:
    """A benchmark's goal, e.g. Target(">=", 1.0, "x"); met() is the one place met/not met is decided.

    unit "%" means the value is a fraction shown as a percentage (0.031 -> 3.1%).
    """

    op: str  # ">=" or "<="
    threshold: float
    unit: str = "x"

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"target op must be '>=' or '<=', not {self.op!r}")

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def show(self, value: float) -> str:
        if self.unit == "%":
            return f"{value * 100:.3g}%"
        number = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        return f"{number}{UNITS.get(self.unit, self.unit)}"

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.show(self.threshold)}"


def check(name: str, value: float | None, target: Target) -> dict:
    """One measured value against its target, as stored in results.json."""
    met = target.met(value)
    shown = "n/a" if value is None else target.show(value)
    print(f"  {'MET' if met else 'NOT MET':<8} {name}: {shown} (target {target})")
    return {"name": name, "value": value, "op": target.op, "threshold": target.threshold, "unit": target.unit,
            "met": met}


def machine() -> dict:
    """CPU model, cores, memory and library versions, read where this run happened."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    out = {"cpu": models[0] if models else platform.processor() or "unknown",
           "cores": len(models) or os.cpu_count(), "simd": " ".join(simd) or "none listed",
           "memory_gib": round(mem_kb / 2**20, 1), "python": platform.python_version()}
    try:
        from importlib.metadata import version

        out["tensorflow"] = version("tensorflow")
    except Exception:  # the report's test machine need not have TensorFlow
        pass
    return out


def record(key: str, title: str, budget: str, checks: list[dict], figures: dict[str, object],
           texts: dict[str, str] | None = None) -> dict:
    """Print and store one benchmark's entry in results.json (read by `python -m bench report`).

    `texts`: titled multi-line outputs (e.g. generated samples), shown verbatim in the report."""
    entry = {"title": title, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "machine": machine(), "budget": budget, "quick": quick(), "checks": checks, "figures": figures,
             "texts": texts or {}}
    print(f"\n## {title}")
    for name, value in figures.items():
        print(f"  {name:<52} {value:.4g}" if isinstance(value, float) else f"  {name:<52} {value}")
    for name, text in (texts or {}).items():
        print(f"  {name}:\n{text}")
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = entry
    path.write_text(json.dumps(results, indent=2, default=str))
    return entry
