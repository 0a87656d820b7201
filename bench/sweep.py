"""Sweep benchmarks, each measured in one run:

- pruning savings: the same seeded random-sampler sweep with no pruner, median and hyperband;
  the ratio of trial-epochs each pruned sweep spends to reach the unpruned best value within 1%
  over what the unpruned sweep spends (target <= 0.4), and the best values;
- overhead: the share of a ~60 s trial spent outside model.fit and the test evaluation
  (compose, Optuna, MLflow, writing artifacts, sampling text); target <= 3%;
- memory: process RSS after trials 1, 5, 10 and 20 of one sweep.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.common import OUT, report

ROOT = OUT / "sweep"
SPEC = """# benchmark sweep
study_name: {name}
n_trials: {n}
sampler: {{name: random, seed: 7}}
pruner: {{name: {pruner}, n_startup_trials: 3, n_warmup_steps: 1, min_resource: 1, reduction_factor: 3}}
max_failed_share: 0.5
fixed: {fixed}
params:
{params}"""
SMALL = ["model.layers=1", "trainer.epochs=8", "trainer.seq_len=64", "trainer.verbose=0", "samples.max_tokens=60",
         "embedding=small"]
PARAMS = ("  model: choice(lstm, gru)\n  optimizer.learning_rate: tag(log, interval(0.0003, 0.02))\n"
          "  model.units: choice(64, 128)\n")


def sweep_args(name: str, n: int, pruner: str, fixed: list[str], params: str = PARAMS) -> list[str]:
    path = ROOT / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n=n, pruner=pruner, fixed=json.dumps(fixed), params=params))
    return [f"sweep={path}", f"storage=journal:{ROOT}/optuna/{name}.log",
            f"tracking.uri=sqlite:///{ROOT}/mlruns/mlflow.db", f"tracking.artifact_root={ROOT}/mlruns/artifacts",
            "tracking.experiment=bench-sweep"]


def load_study(name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(ROOT / "optuna" / f"{name}.log")))
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


def pruning(n: int = 12) -> dict:
    from lyricslab import sweep

    rows, studies = {}, {}
    for pruner in ("none", "median", "hyperband"):
        assert sweep.main(sweep_args(f"prune-{pruner}", n, pruner, SMALL)) == 0
        studies[pruner] = load_study(f"prune-{pruner}")
    best = studies["none"].best_value
    target = best * 1.01
    base_reach, base_total = epochs_to_reach(studies["none"], target)
    rows["unpruned best val_bpc"] = best
    rows["unpruned trial-epochs to best (within 1%) / total"] = f"{base_reach} / {base_total}"
    for pruner in ("median", "hyperband"):
        reach, total = epochs_to_reach(studies[pruner], target)
        pruned = sum(t.state.name == "PRUNED" for t in studies[pruner].trials)
        rows[f"{pruner}: best val_bpc"] = studies[pruner].best_value
        rows[f"{pruner}: trials pruned"] = f"{pruned} of {len(studies[pruner].trials)}"
        rows[f"{pruner}: trial-epochs to reach / total"] = f"{reach} / {total}"
        rows[f"{pruner}: ratio to reach, vs unpruned (target <= 0.4)"] = \
            reach / base_reach if reach else "never within 1%"
        rows[f"{pruner}: ratio of total trial-epochs, vs unpruned"] = total / base_total
    return report("pruning savings (12 seeded random trials, demo corpus)", rows)


def overhead() -> dict:
    """Two trials of the default 2x256 LSTM for 12 epochs on the demo corpus (~60 s each)."""
    from lyricslab import sweep

    args = sweep_args("overhead", 2, "none", ["trainer.epochs=12", "trainer.patience=100", "trainer.verbose=0"],
                      params="  optimizer.learning_rate: choice(0.002, 0.003)\n")
    assert sweep.main(args) == 0
    rows = {}
    for t in load_study("overhead").trials:
        import mlflow

        run = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        m = run.data.metrics
        total = t.duration.total_seconds()
        outside = total - m["train_seconds"] - m["eval_seconds"]
        rows[f"trial {t.number}: seconds (fit / eval / samples / total)"] = \
            f"{m['train_seconds']:.1f} / {m['eval_seconds']:.1f} / {m['sample_seconds']:.1f} / {total:.1f}"
        rows[f"trial {t.number}: share outside fit+evaluate (target <= 0.03)"] = outside / total
        rows[f"trial {t.number}: lyric metrics share of trial (target <= 0.02)"] = m["lyric_metric_seconds"] / total
    return report("sweep overhead per trial", rows)


def memory(n: int = 20) -> dict:
    import resource

    from lyricslab import sweep

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20

    seen: dict[int, float] = {}

    def record(study, trial) -> None:
        seen[len(study.trials)] = rss_mb()

    args = sweep_args("memory", n, "none", [*SMALL, "trainer.epochs=2", "trainer.steps_per_epoch=5"])
    spec = sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)])
    study = sweep.open_study(spec)
    from lyricslab.sweeps import report as sweep_report

    parent = sweep_report.ensure_parent(study, spec, sweep.compose_trial(spec, {}).tracking)
    sweep.run_worker(spec, study, parent, callbacks=[record])
    sweep_report.finish_parent(study, spec, parent, None)
    rows = {f"RSS MB after trial {k}": seen[k] for k in (1, 5, 10, n) if k in seen}
    rows["growth MB, trial 5 -> 20"] = seen[n] - seen[5]
    return report("sweep memory (20 tiny trials, one process)", rows)


def run(parts: tuple[str, ...] = ("memory", "overhead", "pruning")) -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    for part in parts:
        globals()[part]()


if __name__ == "__main__":
    import sys

    run(tuple(sys.argv[1:]) or ("memory", "overhead", "pruning"))
