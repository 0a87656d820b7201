"""Samplers, pruners, timeout and NSGA-II, each a whole sweep in a few seconds.

Training is replaced by a synthetic curve computed from the config (`synthetic_train`), so
these tests exercise the sweep itself: the sampler and pruner it builds, the MLflow child
runs, the parent run's artifacts. Real training runs in tests/test_sweep.py.
"""

import json
import math
import time

import mlflow
import pytest
from test_sweep import no_plots, runs, setup_sweep, split, study_of  # noqa: F401 (no_plots: a fixture)

from lyricslab import sweep


def synthetic_train(cfg, callbacks=(), parent_run_id=None, tags=None, on_run_start=None):
    """Stands in for lyricslab.training.train.train: a real MLflow run and per-epoch reports (so pruners and
    callbacks act as in a sweep), with a made-up learning curve: best near learning_rate=0.01,
    lower with more units, while train_seconds grows with units (a trade-off for NSGA-II)."""
    from lyricslab.tracking import runs as tracking

    units = int(cfg.model.get("units", 64))
    final = abs(math.log10(float(cfg.optimizer.learning_rate)) + 2.0) + 32.0 / units
    with tracking.training_run(cfg, parent_run_id=parent_run_id, tags=tags) as run:
        if on_run_start:
            on_run_start(run.info.run_id)
        for epoch in range(int(cfg.trainer.epochs)):
            value = final + 1.0 / (epoch + 1)
            logs = {"val_bpc": value, "val_loss": value}
            mlflow.log_metrics(logs, step=epoch)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
        metrics = {"best_val_bpc": value, "val_bpc": value, "train_seconds": units / 10.0}
        mlflow.log_metrics(metrics)
    return metrics


@pytest.fixture(autouse=True)
def fast_train(monkeypatch):
    import lyricslab.training.train

    monkeypatch.setattr(lyricslab.training.train, "train", synthetic_train)


def with_sampler(args, text):
    """Replace the sampler line of the sweep file setup_sweep wrote."""
    path = args[0].split("=", 1)[1]
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(text if line.startswith("sampler:") else line for line in lines) + "\n")
    return args


def test_grid_runs_every_point_once_and_stops_with_pinned_keys_applied(tmp_path, capsys, no_plots):
    params = "  model: choice(lstm, gru)\n  model.units: choice(32, 64)\n  trainer.batch_size: range(8, 24, 8)\n"
    args = with_sampler(setup_sweep(tmp_path, n=20, params=params), "sampler: {name: grid, seed: 1}")
    assert sweep.main([*args, "model.units=48"]) == 0
    assert "1 worker(s), pinned model.units=48;" in capsys.readouterr().out
    trials = study_of(tmp_path).trials
    points = {(t.params["model"], t.params["trainer.batch_size"]) for t in trials}
    assert len(trials) == len(points) == 4  # 2 x 2: the grid ends the sweep before n_trials=20
    assert {t.params["trainer.batch_size"] for t in trials} == {8, 16}  # the stop, 24, is excluded
    parents, children = split(runs(tmp_path))
    assert {c.data.params["model.units"] for c in children} == {"48"}
    assert parents[0].data.tags["pinned.model.units"] == "48"


def test_cmaes_samples_numeric_parameters_after_its_start_up_trial(tmp_path, no_plots):
    pytest.importorskip("cmaes", reason="sampler cmaes needs the cmaes package (a dependency: make install)")
    params = "  optimizer.learning_rate: tag(log, interval(0.001, 0.1))\n  model.units: int(interval(16, 128))\n"
    args = with_sampler(setup_sweep(tmp_path, n=4, params=params), "sampler: {name: cmaes, seed: 1}")
    assert sweep.main(args) == 0
    trials = study_of(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(16 <= t.params["model.units"] <= 128 and 0.001 <= t.params["optimizer.learning_rate"] <= 0.1
               for t in trials)
    assert any(key.startswith("cma:") for t in trials[1:] for key in t.system_attrs)  # CMA-ES, not random


def test_hyperband_prunes_at_its_rungs_and_the_run_ends_killed(tmp_path, no_plots):
    params = "  optimizer.learning_rate: tag(log, interval(0.0001, 1.0))\n"
    args = setup_sweep(tmp_path, n=6, pruner="hyperband", extra=["trainer.epochs=9"], params=params)
    assert sweep.main(args) == 0
    trials = study_of(tmp_path).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(trials) == 6 and pruned and len(pruned) < 6
    assert any(k.startswith("completed_rung_") for t in trials for k in t.system_attrs)  # successive halving's rungs
    assert all(len(t.intermediate_values) < 9 for t in pruned)
    by_run = {c.info.run_id: c for c in split(runs(tmp_path))[1]}
    for trial in pruned:
        run = by_run[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "PRUNED"


def test_cmaes_without_its_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a))
    args = with_sampler(setup_sweep(tmp_path, n=2), "sampler: {name: cmaes, seed: 1}")
    assert sweep.main(args) == 2
    assert capsys.readouterr().err == "error: t.yaml: sampler cmaes needs the cmaes package (pip install cmaes, or make install)\n"


def test_timeout_ends_the_sweep_early_and_cleanly(tmp_path, monkeypatch, no_plots):
    def slow_train(cfg, **kwargs):
        time.sleep(0.5)
        return synthetic_train(cfg, **kwargs)

    import lyricslab.training.train

    monkeypatch.setattr(lyricslab.training.train, "train", slow_train)
    args = setup_sweep(tmp_path, n=500)
    started = time.monotonic()
    assert sweep.main([*args, "timeout=3"]) == 0
    assert time.monotonic() - started < 120
    states = [t.state.name for t in study_of(tmp_path).trials]
    assert 1 <= len(states) < 500 and set(states) == {"COMPLETE"}
    parent = split(runs(tmp_path))[0][0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == len(states)


def test_nsga2_two_objectives_log_a_pareto_front_on_the_parent(tmp_path):
    params = "  model.units: int(interval(16, 256))\n  optimizer.learning_rate: tag(log, interval(0.001, 0.1))\n"
    args = with_sampler(setup_sweep(tmp_path, n=5, params=params), "sampler: {name: nsga2, seed: 1, population_size: 3}")
    assert sweep.main([*args, "objectives=[val_bpc,train_seconds]"]) == 0
    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert {t.system_attrs["NSGAIISampler:generation"] for t in study.trials} == {0, 1}  # a second generation bred
    parent = split(runs(tmp_path))[0][0]
    client = mlflow.MlflowClient()
    assert {"pareto_front.json", "pareto_front.html", "pareto_front.png"} <= \
        {a.path for a in client.list_artifacts(parent.info.run_id)}
    front = json.loads(open(client.download_artifacts(parent.info.run_id, "pareto_front.json", str(tmp_path))).read())
    assert sorted(p["trial"] for p in front) == sorted(t.number for t in study.best_trials)
    for a in front:  # nobody on the front is dominated by anybody else
        assert not any(all(x <= y for x, y in zip(b["values"], a["values"])) and b["values"] != a["values"]
                       for b in front)
