"""Helpers shared by the benchmarks: quick mode, interleaved timing, targets, machine facts, results."""

from __future__ import annotations

import datetime
import os
import platform
import sys
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


# Overrides that only say where outputs go (under bench/out/) or how much is printed: left out of the
# overrides a result is stored with.
HOUSEKEEPING = ("tracking.uri=", "tracking.artifact_root=", "tracking.experiment=", "data.cache_dir=",
                "trainer.verbose=", "storage=")
_composed: list[str] = []  # the overrides of every config composed since the last record()


def shown_overrides(overrides: list[str]) -> str:
    """One config's overrides as stored with a result; "(defaults)" for none."""
    return " ".join(o for o in overrides if not o.startswith(HOUSEKEEPING)) or "(defaults)"


def compose(overrides: list[str]):
    """The project's Hydra config with these overrides, from the configs packaged in lyricslab.

    The overrides are remembered and stored with the next result record() writes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lyricslab.config.paths import CONF_DIR

    shown = shown_overrides(list(overrides))
    if shown not in _composed:
        _composed.append(shown)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def reset_overrides() -> None:
    """Forget the configs composed so far (python -m bench calls it before each benchmark)."""
    _composed.clear()


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


# Settings read from the environment that change what a benchmark measures (no secrets among them).
ENV_SETTINGS = ("BENCH_LORA_PRESET", "LYRICSLAB_DEV_CSV")


def command() -> str:
    """This process's command line, as typed: `python -m bench sweep load`."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    return " ".join(["python", *argv[1:]]) if argv else "python"


def record(key: str, title: str, budget: str, checks: list[dict], figures: dict[str, object],
           texts: dict[str, str] | None = None, overrides: list[str] | None = None) -> dict:
    """Print and append one benchmark's entry to results.json (read by `python -m bench report`).

    `texts`: titled multi-line outputs (e.g. generated samples), shown verbatim in the report.
    `overrides`: what the benchmark ran with, one string per config or study, for benchmarks that
    compose nothing here (subprocesses, sweeps); otherwise the overrides of every config composed
    since the last record(). Stored with the commit, its uncommitted files, the command and the machine
    (bench/history.py)."""
    from bench import history

    shown = list(_composed) if overrides is None else list(overrides)
    _composed.clear()
    entry = {"key": key, "run": history.RUN_ID, "title": title,
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             **history.provenance(), "command": command(), "overrides": shown,
             "env": {k: os.environ[k] for k in ENV_SETTINGS if os.environ.get(k)},
             "machine": machine(), "budget": budget, "quick": quick(), "checks": checks, "figures": figures,
             "texts": texts or {}}
    print(f"\n## {title}")
    for name, value in figures.items():
        print(f"  {name:<52} {value:.4g}" if isinstance(value, float) else f"  {name:<52} {value}")
    for name, text in (texts or {}).items():
        print(f"  {name}:\n{text}")
    history.append(results_path(), entry)
    return entry
