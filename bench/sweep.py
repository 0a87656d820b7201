"""Sweep benchmarks (`python -m bench sweep`, or some parts: `python -m bench sweep load`, `python -m
bench.sweep memory overhead pruning load`): pruning savings, per-trial overhead, memory across
trials, and parallel workers on PostgreSQL and an MLflow server (load). Each part's docstring says
what it measures; BENCHMARKS.md shows it beside the figures.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from bench.common import Target, check, out_dir, quick, record, shown_overrides

TARGET_PRUNING = Target("<=", 0.4, "x")  # trial-epochs a pruned sweep spends to reach the unpruned best
TARGET_OVERHEAD = Target("<=", 0.03, "%")  # share of a trial's wall time outside fit + test evaluation
TARGET_LYRIC_METRICS = Target("<=", 0.02, "%")  # share of a trial's wall time computing lyric metrics
TARGET_RSS_GROWTH = Target("<=", 32, "MB")  # "flat" memory, made checkable: growth from trial 5 to the last

SPEC = """# benchmark sweep
study_name: {name}
n_trials: {n}
sampler: {{name: random, seed: 7}}
pruner: {{name: {pruner}, n_startup_trials: 3, n_warmup_steps: 1, min_resource: 1, reduction_factor: 3}}
max_failed_share: 0.5
fixed: {fixed}
params:
{params}"""
SMALL = ["model.layers=1", "trainer.seq_len=64", "trainer.verbose=0", "samples.max_tokens=60",
         "embedding=small"]
# Quick mode's trials: 2 steps a round, short samples, one prompt and temperature.
QUICK_TRIAL = ["trainer.steps_per_epoch=2", "samples.max_tokens=12", 'samples.prompts=["[verse]\\n"]',
               "samples.temperatures=[0.8]"]
PARAMS = ("  model: choice(lstm, gru)\n  optimizer.learning_rate: tag(log, interval(0.0003, 0.02))\n"
          "  model.units: choice(64, 128)\n")


def root() -> Path:
    return out_dir() / "sweep"


def store_args(name: str) -> list[str]:
    """Send a benchmark study and its MLflow runs under bench/out/, never into the user's mlruns/."""
    return [f"storage=journal:{root()}/optuna/{name}.log", f"tracking.uri=sqlite:///{root()}/mlruns/mlflow.db",
            f"tracking.artifact_root={root()}/mlruns/artifacts", "tracking.experiment=bench-sweep"]


def sweep_args(name: str, n: int, pruner: str, fixed: list[str], params: str = PARAMS) -> list[str]:
    path = root() / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n=n, pruner=pruner, fixed=json.dumps(fixed), params=params))
    return [f"sweep={path}", *store_args(name)]


def described(name: str, n: int, pruner: str, fixed: list[str], params: str = PARAMS) -> str:
    """A benchmark study as stored with its result: its size, pruner, fixed overrides and search space."""
    space = "; ".join(line.strip() for line in params.splitlines() if line.strip())
    return f"study {name}: {n} trials, sampler random, pruner {pruner}, fixed {shown_overrides(fixed)}, params {space}"


def load_study(name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(root() / "optuna" / f"{name}.log")))
    return optuna.load_study(study_name=name, storage=storage)


def epochs_to_reach(study, target: float) -> tuple[int | None, int]:
    """Trial-epochs spent (in trial order) until the best value so far is within `target`, and in all."""
    spent, reached, best = 0, None, float("inf")
    for t in sorted(study.trials, key=lambda t: t.number):
        spent += len(t.intermediate_values)
        if t.value is not None and t.state.name == "COMPLETE":
            best = min(best, t.value)
        if reached is None and best <= target:
            reached = spent
    return reached, spent


def pruning() -> dict:
    """The same seeded random-sampler sweep (LSTM/GRU, learning rate, units; demo corpus) run with
    no pruner, the median pruner and hyperband, so every pruner sees the same configs in the same
    order. Trial-epochs are counted, in trial order, until the best value so far is within 1% of
    the unpruned sweep's best; the ratio is that count for a pruned sweep over the unpruned one's.

    Caveat: Optuna's pruners need startup trials and warm-up epochs before they prune, and a
    short demo-scale study leaves them little room. Longer trials and larger studies give them
    more; this budget doesn't test that.
    """
    from lyricslab import sweep

    n, epochs = (2, 2) if quick() else (12, 8)
    fixed = [*SMALL, f"trainer.epochs={epochs}"] + (QUICK_TRIAL if quick() else [])
    checks, figures, studies = [], {}, {}
    for pruner in ("none", "median", "hyperband"):
        assert sweep.main(sweep_args(f"prune-{pruner}", n, pruner, fixed)) == 0
        studies[pruner] = load_study(f"prune-{pruner}")
    best = studies["none"].best_value
    target = best * 1.01
    base_reach, base_total = epochs_to_reach(studies["none"], target)
    figures["unpruned best val_bpc"] = best
    figures["unpruned trial-epochs to best (within 1%) / total"] = f"{base_reach} / {base_total}"
    for pruner in ("median", "hyperband"):
        reach, total = epochs_to_reach(studies[pruner], target)
        pruned = sum(t.state.name == "PRUNED" for t in studies[pruner].trials)
        figures[f"{pruner}: best val_bpc"] = studies[pruner].best_value
        figures[f"{pruner}: trials pruned"] = f"{pruned} of {len(studies[pruner].trials)}"
        figures[f"{pruner}: trial-epochs to reach / total"] = f"{reach} / {total}"
        figures[f"{pruner}: ratio of total trial-epochs, vs unpruned"] = total / base_total
        checks.append(check(f"{pruner}: trial-epochs to reach the unpruned best, vs unpruned",
                            reach / base_reach if reach else None, TARGET_PRUNING))
    budget = (f"{n} seeded random trials of {epochs} epochs per pruner (1-layer LSTM/GRU, embedding small, "
              "seq_len 64), demo corpus")
    return record("sweep.pruning", "Sweep pruning savings", budget, checks, figures,
                  overrides=[described(f"prune-{p}", n, p, fixed) for p in ("none", "median", "hyperband")])


def trial_times(study_name: str) -> list[dict]:
    """Per completed trial: where its wall time went, from the metrics train() logged to MLflow."""
    import mlflow

    out = []
    for t in sorted(load_study(study_name).trials, key=lambda t: t.number):
        if t.state.name != "COMPLETE":
            continue  # a pruned trial never reaches the test evaluation and the samples
        m = mlflow.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        total = t.duration.total_seconds()
        out.append({"number": t.number, "fit": m["train_seconds"], "eval": m["eval_seconds"],
                    "samples": m["sample_seconds"], "lyric": m["lyric_metric_seconds"], "total": total,
                    "outside": (total - m["train_seconds"] - m["eval_seconds"]) / total})
    return out


def overhead() -> dict:
    """Overhead is everything in a sweep trial outside `model.fit` and the test evaluation:
    Hydra compose, Optuna, loading the corpus and the n-gram baseline (fitted once per data
    config, then read from its cache), sampling the songs the lyric metrics are computed on (3
    prompts × 3 temperatures, one batched cached-decoding call per prompt), the lyric metrics,
    saving the `.keras` model and MLflow logging. It is reported as a share of each trial's wall
    time, for two trial shapes:
    - **2×256 LSTM trials**: two trials of the default 2×256 LSTM (12 epochs on the demo corpus,
      about two minutes each on 2 cores; each trial's seconds are in the figures); the check uses
      the last one;
    - **the shipped demo sweep** (`sweeps/demo.yaml` as shipped: its trial shapes, TPE sampler
      and median pruner; 1-layer models, 10 epochs, 120-token samples), whose trials are much
      shorter, so the same fixed costs weigh more; the check uses the median over its completed
      trials after the first (pruned trials never reach the test evaluation and are left out).

    The first trial of a process also pays one-off costs (TF graph tracing, loading the CMU
    pronouncing dictionary). Fewer or shorter samples (`samples.max_tokens`, `samples.prompts`)
    lower the share, at the price of noisier lyric metrics.
    """
    from lyricslab import sweep

    epochs = 1 if quick() else 12
    fixed = [f"trainer.epochs={epochs}", "trainer.patience=100", "trainer.verbose=0"]
    if quick():
        fixed += QUICK_TRIAL
    long_n = 1 if quick() else 2
    assert sweep.main(sweep_args("overhead", long_n, "none", fixed,
                                 params="  optimizer.learning_rate: choice(0.002, 0.003)\n")) == 0
    long_trials = trial_times("overhead")

    demo_trials = 1 if quick() else 12  # the demo sweep's own n_trials
    shrink = ["trainer.epochs=1", *QUICK_TRIAL] if quick() else []
    assert sweep.main(["sweep=demo", "study_name=bench-demo", f"n_trials={demo_trials}", "timeout=3600",
                       *store_args("bench-demo"), "trainer.verbose=0", *shrink]) == 0
    demo = trial_times("bench-demo")
    steady = demo[1:] or demo

    figures: dict[str, object] = {}
    for label, times in (("2×256 LSTM", long_trials), ("demo", demo)):
        for t in times:
            figures[f"{label} trial {t['number']}: seconds fit / eval / samples / total"] = \
                f"{t['fit']:.1f} / {t['eval']:.1f} / {t['samples']:.1f} / {t['total']:.1f}"
            figures[f"{label} trial {t['number']}: % outside fit + evaluate"] = 100 * t["outside"]
            figures[f"{label} trial {t['number']}: % computing lyric metrics"] = 100 * t["lyric"] / t["total"]
    figures["demo: completed trials / run"] = f"{len(demo)} / {demo_trials}"
    last = long_trials[-1]
    shape = f"2×256 LSTM, {epochs} epochs, last trial"
    checks = [check(f"share outside fit + evaluate ({shape})", last["outside"], TARGET_OVERHEAD),
              check(f"lyric metrics share ({shape})", last["lyric"] / last["total"], TARGET_LYRIC_METRICS),
              check("share outside fit + evaluate (demo sweep, median after the first trial)",
                    statistics.median(t["outside"] for t in steady), TARGET_OVERHEAD),
              check("lyric metrics share (demo sweep, median after the first trial)",
                    statistics.median(t["lyric"] / t["total"] for t in steady), TARGET_LYRIC_METRICS)]
    budget = (f"{long_n} trial(s) of the default 2×256 LSTM, {epochs} epochs each, then the shipped demo sweep "
              f"({demo_trials} trials{', shrunk to 1 epoch of 2 steps' if quick() else ''}), demo corpus, one "
              "process")
    studies = [described("overhead", long_n, "none", fixed, "  optimizer.learning_rate: choice(0.002, 0.003)\n"),
               " ".join(["sweep=demo", f"n_trials={demo_trials}", "timeout=3600", *shrink])]
    return record("sweep.overhead", "Sweep overhead per trial", budget, checks, figures, overrides=studies)


def memory() -> dict:
    """Process RSS after successive trials of one sweep in one process (tiny trials: 1-layer
    LSTM/GRU, 2 epochs of 5 steps). Each trial clears the Keras session and runs `gc`, so memory
    should stay flat; the check is the growth from trial 5 to the last.
    """
    import resource

    from lyricslab import sweep
    from lyricslab.sweeps import study as sweep_study

    n, first = (3, 1) if quick() else (20, 5)  # growth from trial `first` to the last

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20

    seen: dict[int, float] = {}

    def after_trial(study, trial) -> None:
        seen[len(study.trials)] = rss_mb()

    epochs, steps = (1, 2) if quick() else (2, 5)
    fixed = [*SMALL, f"trainer.epochs={epochs}", f"trainer.steps_per_epoch={steps}", *(QUICK_TRIAL if quick() else [])]
    args = sweep_args("memory", n, "none", fixed)
    spec = sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)])
    study = sweep_study.open_study(spec)
    from lyricslab.sweeps import parent_run as sweep_report

    parent = sweep_report.ensure_parent(study, spec, sweep_study.compose_trial(spec, {}).tracking)
    sweep_study.run_worker(spec, study, parent, callbacks=[after_trial])
    sweep_report.finish_parent(study, spec, parent, None)
    figures = {f"RSS MB after trial {k}": seen[k] for k in (1, 5, 10, n) if k in seen}
    checks = [check(f"RSS growth, trial {first} -> {n}", seen[n] - seen[first], TARGET_RSS_GROWTH)]
    budget = f"{n} tiny trials (1-layer LSTM/GRU, {epochs} epoch(s) × {steps} steps), demo corpus, one process"
    return record("sweep.memory", "Sweep memory", budget, checks, figures,
                  overrides=[described("memory", n, "none", fixed)])


def load() -> dict | None:
    """Parallel workers on PostgreSQL and an MLflow server (bench/sweep_load.py says what it measures)."""
    from bench.sweep_load import load as measure

    return measure()


PARTS = ("memory", "overhead", "pruning", "load")


def run(parts: tuple[str, ...] = PARTS) -> None:
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"error: unknown sweep benchmark {unknown[0]!r}; choose from {', '.join(PARTS)}")
    shutil.rmtree(root(), ignore_errors=True)
    root().mkdir(parents=True)
    for part in parts:
        globals()[part]()


if __name__ == "__main__":
    import os
    import sys

    if "--quick" in sys.argv:
        os.environ["BENCH_QUICK"] = "1"
    run(tuple(a for a in sys.argv[1:] if a != "--quick") or PARTS)
