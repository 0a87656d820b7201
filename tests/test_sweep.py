"""Sweeps end to end on tiny trials: parent/child runs, pruning, resume, workers, a killed worker."""

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import ROOT, tiny

from lyricslab import sweep
from lyricslab.sweeps import objectives
from lyricslab.sweeps import study as sweep_study

SWEEP = """# tiny test sweep
study_name: {name}
n_trials: {n}
sampler: {{name: {sampler}, seed: 3}}
pruner: {{name: {pruner}, n_startup_trials: 1, n_warmup_steps: 0}}
heartbeat: {{interval: 5, grace: 60, max_retry: 2}}
fixed: [{fixed}]
params:
{params}"""
PARAMS = "  model: choice(lstm, gru)\n  optimizer.learning_rate: tag(log, interval(0.003, 0.01))\n"


@functools.lru_cache(maxsize=None)
def empty_mlflow_store() -> Path:
    """An MLflow SQLite store with its tables made, built once and copied into each test:
    making them (MLflow's migrations) takes seconds, longer than a synthetic sweep."""
    folder = Path(tempfile.mkdtemp(prefix="lyricslab-test-mlflow-"))
    atexit.register(shutil.rmtree, folder, True)
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder / "mlflow.db"


def setup_sweep(tmp_path: Path, name="t", n=3, pruner="none", extra=(), params=PARAMS, sampler="random"):
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    if not (tmp_path / "mlruns" / "mlflow.db").exists():
        shutil.copy(empty_mlflow_store(), tmp_path / "mlruns" / "mlflow.db")
    fixed = ", ".join(json.dumps(o) for o in [o for o in tiny("lstm") if not o.startswith("model=")]
                      + ["trainer.epochs=2", *extra])
    path = tmp_path / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, n=n, pruner=pruner, fixed=fixed, params=params, sampler=sampler))
    store = [f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db", f"tracking.artifact_root={tmp_path}/mlruns/art",
             f"data.cache_dir={tmp_path}/cache", "tracking.experiment=sweeps"]
    return [f"sweep={path}", f"storage=journal:{tmp_path}/optuna/{name}.log", *store]


@pytest.fixture
def no_plots(monkeypatch):
    """For tests that check no plot: drawing the parent run's plots takes seconds per sweep."""
    from lyricslab.sweeps import parent_run as report

    monkeypatch.setattr(report, "_plots", lambda study, spec, out: [])


def runs(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    return mlflow.search_runs(experiment_names=["sweeps"], output_format="list")


def study_of(tmp_path, name="t"):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna" / f"{name}.log")))
    return optuna.load_study(study_name=name, storage=storage)


def split(all_runs):
    parents = [r for r in all_runs if r.data.tags.get("lyricslab.role") == "sweep-parent"]
    children = [r for r in all_runs if r not in parents]
    return parents, children


def test_a_study_over_two_runs_logs_prunes_resumes_registers_and_reruns_its_best(tmp_path, monkeypatch, capsys):
    """One study, two sweep runs (a resume), real training; checked from every side."""
    import lyricslab.training.train
    from lyricslab import generate

    returned, real_train = [], lyricslab.training.train.train
    monkeypatch.setattr(lyricslab.training.train, "train", lambda *a, **k: returned.append(real_train(*a, **k)) or returned[-1])
    args = setup_sweep(tmp_path, n=1, pruner="median", params="  optimizer.learning_rate: choice(0.01, 1e-9)\n")
    study = sweep_study.open_study(sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)]))
    study.enqueue_trial({"optimizer.learning_rate": 1e-9})  # cannot move the weights: a poor first "best"
    assert sweep.main(args) == 0
    client = mlflow.MlflowClient()
    first = client.get_model_version_by_alias("lyricslab-t", "best")
    study.enqueue_trial({"optimizer.learning_rate": 0.01})  # learns: the new best
    study.enqueue_trial({"optimizer.learning_rate": 1e-9})  # below the median after epoch 1: pruned
    assert sweep.main([*args, "n_trials=3"]) == 0

    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    parents, children = split(runs(tmp_path))
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 2
    assert parent.data.metrics["trials_pruned"] == 1
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    by_run = {c.info.run_id: c for c in children}
    for trial in study.trials:
        child = by_run[trial.user_attrs["mlflow_run_id"]]
        assert child.data.tags["trial"] == str(trial.number) and child.data.tags["trial_state"] == trial.state.name
        if trial.state.name == "COMPLETE":
            assert child.info.status == "FINISHED" and child.data.metrics["best_val_bpc"] == pytest.approx(trial.value)
    pruned = by_run[study.trials[2].user_attrs["mlflow_run_id"]]
    assert pruned.info.status == "KILLED" and pruned.data.tags["pruned"] == "true"
    assert len(client.get_metric_history(pruned.info.run_id, "val_bpc")) == int(pruned.data.tags["pruned_at_round"]) == 1

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_config.yaml", "search_space.json", "optimization_history.html",
            "optimization_history.png", "intermediate_values.png", "t.yaml"} <= artifacts
    assert parent.data.metrics["best_val_bpc"] == pytest.approx(study.best_value)

    # The objective table (no TensorFlow needed to read it) matches what train() really returns and logs.
    assert len(returned) == 2  # the pruned trial returns nothing
    for metrics in returned:
        assert all(isinstance(objectives.value(name, metrics), float) for name in objectives.OBJECTIVES)
        assert set(objectives.TEST_TO_VAL) <= set(metrics)
    assert set(objectives.PER_EPOCH) <= set(by_run[study.best_trial.user_attrs["mlflow_run_id"]].data.metrics)

    # The registry's `best` alias moved to the better trial of the resume; generate finds it both ways.
    moved = client.get_model_version_by_alias("lyricslab-t", "best")
    assert int(moved.version) == int(first.version) + 1
    assert moved.run_id == study.best_trial.user_attrs["mlflow_run_id"] != first.run_id
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    capsys.readouterr()
    assert generate.main(["model_uri=models:/lyricslab-t@best", f"tracking.uri={uri}", "max_tokens=10"]) == 0
    assert generate.main(["sweep=t", f"tracking.uri={uri}", "max_tokens=10"]) == 0
    assert capsys.readouterr().out.count("=== song 1") == 2

    # best_config.yaml re-runs as one training of the best trial's configuration.
    folder = client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path / "best"))
    out = subprocess.run([sys.executable, "-m", "lyricslab.run", "-cp", str(Path(folder).parent), "-cn",
                          "best_config"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "run.log").exists()  # logs go to the console, as for any run
    rerun = [r for r in runs(tmp_path) if "mlflow.parentRunId" not in r.data.tags
             and r.data.tags.get("lyricslab.role") != "sweep-parent"]
    assert len(rerun) == 1 and float(rerun[0].data.params["optimizer.learning_rate"]) == 0.01


def test_too_many_failures_stop_the_sweep_with_a_reason(tmp_path, capsys, no_plots):
    args = setup_sweep(tmp_path, n=5, extra=["trainer.seq_len=100000"])  # every split is too short
    assert sweep.main(args) == 1
    err = capsys.readouterr().err
    assert "stopping the sweep: 3 of 3 trials failed" in err and "trainer.seq_len" in err
    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    assert "fewer than trainer.seq_len" in study.trials[0].user_attrs["error"]


def sweep_cmd(args):
    return [sys.executable, "-m", "lyricslab.sweep", *args]


_watched: dict[Path, optuna.Study] = {}


def trials_now(tmp_path, name="t"):
    """The study's trials as another process sees them right now (none before the study exists).

    One storage per journal, so each look reads only what was appended since the last one.
    """
    path = tmp_path / "optuna" / f"{name}.log"
    if path not in _watched:
        if not path.exists():
            return []
        try:
            _watched[path] = study_of(tmp_path, name)
        except KeyError:  # the journal exists but the study is not created yet
            return []
    return _watched[path].get_trials(deepcopy=False)


def wait_for(condition, seconds=300, what="the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


def started(trial) -> bool:
    """RUNNING, with its MLflow run open: killing the worker now leaves both behind."""
    return trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs


def test_two_workers_draw_distinct_trials_stop_at_n_trials_and_outlive_three_kills(tmp_path):
    """workers=2 on one study: kill -9 a worker mid-trial three times; the sweep still finishes."""
    args = setup_sweep(tmp_path, n=2, sampler="tpe")  # TPE's random start-up trials: one seed per worker
    with open(tmp_path / "sweep.err", "w") as err:
        proc = subprocess.Popen(sweep_cmd([*args, "workers=2"]), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    killed: dict[int, int] = {}  # trial number -> pid of the worker killed while running it
    complete_before: set[int] = set()

    def kill_one():
        assert proc.poll() is None, "the sweep ended before three workers were killed"
        for trial in trials_now(tmp_path):
            if trial.state.name == "COMPLETE":
                complete_before.add(trial.number)
            pid = trial.user_attrs.get("worker_pid")
            if started(trial) and pid not in killed.values():
                os.kill(pid, signal.SIGKILL)
                killed[trial.number] = pid
                return True
        return False

    try:
        for i in range(3):
            wait_for(kill_one, what=f"a running trial to kill ({i + 1} of 3)")
        assert proc.wait(timeout=500) == 0, (tmp_path / "sweep.err").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "sweep.err").read_text()
    assert stderr.count("killed by SIGKILL") == 3 and "Traceback" not in stderr and "locked" not in stderr
    trials = study_of(tmp_path).trials
    states = [t.state.name for t in trials]
    # Exactly n_trials: only the killed trials come on top (Optuna's own check runs after a trial,
    # so each extra worker used to start one more).
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 3 and len(trials) == 2 + 3
    assert complete_before <= {t.number for t in trials if t.state.name == "COMPLETE"}
    # Workers seeded alike proposed the same configurations in pairs; retries repeat on purpose.
    fresh = [tuple(sorted(t.params.items())) for t in trials if "failed_trial" not in t.system_attrs]
    assert len(set(fresh)) == len(fresh) >= 2
    assert {0, 1} <= {t.user_attrs["worker"] for t in trials}  # both workers ran trials
    assert {t.user_attrs["worker"] for t in trials if t.state.name == "COMPLETE"} - {0, 1}  # and replacements
    for number in killed:
        assert trials[number].state.name == "FAIL" and trials[number].user_attrs["worker_died"]
    first = min(killed)
    retry = next(t for t in trials if first in t.system_attrs.get("retry_history", []))
    assert retry.params == trials[first].params
    parents, children = split(runs(tmp_path))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_run = {t.user_attrs.get("mlflow_run_id"): t for t in trials}
    assert len(children) == len(trials) and set(by_run) == {c.info.run_id for c in children}
    for child in children:
        trial = by_run[child.info.run_id]
        expected = {"COMPLETE": "FINISHED", "FAIL": "FAILED"}[trial.state.name]
        assert child.info.status == expected, (trial.number, trial.state.name)
        assert child.data.tags["trial"] == str(trial.number)


def test_a_resume_fails_and_requeues_the_trial_of_a_dead_worker_even_when_n_trials_is_reached(tmp_path, no_plots):
    """What kill -9 of a one-process sweep leaves behind: a RUNNING trial of a gone pid, its MLflow run RUNNING."""
    from lyricslab.sweeps.workers import HOST

    args = setup_sweep(tmp_path, n=1, params="  optimizer.learning_rate: choice(0.01, 0.003)\n")
    study = sweep_study.open_study(sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)]))
    dist = {"optimizer.learning_rate": optuna.distributions.CategoricalDistribution([0.01, 0.003])}
    study.add_trial(optuna.trial.create_trial(params={"optimizer.learning_rate": 0.01}, distributions=dist, value=3.0))
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask(dist)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.create_experiment("sweeps", artifact_location=(tmp_path / "mlruns" / "art").as_uri())
    run = client.create_run(experiment, tags={"trial": str(trial.number)})
    for key, value in {"worker": 0, "worker_pid": gone.pid, "worker_host": HOST, "mlflow_run_id": run.info.run_id}.items():
        trial.set_user_attr(key, value)

    assert sweep.main(args) == 0  # n_trials=1 is already reached: the resume still cleans up
    trials = study_of(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert "died mid-trial" in trials[1].user_attrs["error"] and trials[2].params == trials[1].params
    dead = client.get_run(run.info.run_id)
    assert dead.info.status == "FAILED" and "died mid-trial" in dead.data.tags["error"]
    # No waiting for the heartbeat's grace (60 s here): the recorded worker pid is gone.
    assert sweep.main([*args, "n_trials=2"]) == 0  # the re-queued trial runs first
    trials = study_of(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].user_attrs["worker_pid"] == os.getpid()
    assert not [r for r in runs(tmp_path) if r.info.status == "RUNNING"]


def test_heartbeat_fails_a_silent_trial_on_another_host_and_requeues_it(tmp_path):
    from optuna.storages import fail_stale_trials

    from lyricslab.sweeps.storage import HEARTBEAT_ATTR, HeartbeatJournalStorage
    from lyricslab.sweeps.workers import RetryDeadWorkerTrial, fail_dead_worker_trials

    storage = HeartbeatJournalStorage(tmp_path / "h.log", interval=1, grace=30, stale_callback=RetryDeadWorkerTrial(2))
    study = optuna.create_study(study_name="h", storage=storage)
    trial = study.ask()
    trial.suggest_int("x", 0, 99)
    for key, value in {"worker": 0, "worker_pid": 1, "worker_host": "elsewhere", "mlflow_run_id": "r"}.items():
        trial.set_user_attr(key, value)
    fail_dead_worker_trials(study, RetryDeadWorkerTrial(2))  # another host's pid says nothing here
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 20)
    fail_stale_trials(study)  # within the grace period
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 40)
    fail_stale_trials(study)
    failed, retry = study.trials
    assert failed.state.name == "FAIL" and retry.state.name == "WAITING"
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == 0
    assert HEARTBEAT_ATTR not in retry.system_attrs
    assert not {"worker", "worker_pid", "worker_host", "mlflow_run_id"} & set(retry.user_attrs)


def test_a_dead_pid_on_this_host_fails_its_trial_and_a_live_one_does_not(tmp_path):
    from lyricslab.sweeps.workers import (
        HOST,
        RetryDeadWorkerTrial,
        fail_dead_worker_trials,
    )

    gone = subprocess.Popen(["true"])
    gone.wait()
    study = optuna.create_study(study_name="p", storage=f"sqlite:///{tmp_path}/p.db")
    for pid in (gone.pid, os.getpid()):
        trial = study.ask()
        trial.suggest_int("x", 0, 99)
        trial.set_user_attr("worker_pid", pid)
        trial.set_user_attr("worker_host", HOST)
    assert fail_dead_worker_trials(study, RetryDeadWorkerTrial(2)) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "WAITING"]
    assert "died mid-trial" in study.trials[0].user_attrs["error"]


def test_a_sweep_budget_fits_its_trials_and_stops_starting_them(tmp_path, no_plots, monkeypatch):
    """A 15 s sweep of trials that want 12 s each (trainer.budget_minutes=0.2) and end after 5 s (an early
    stop, say; training is replaced by a sleep, so the timeline is the sweep's own): trial 0 starts with
    ~15 s left and gets its 12 s; trial 1 starts with ~10 s left and gets only those; then ~5 s are left,
    under half of 12 s, and no trial starts although n_trials is 50. Each rule is checked against the
    sweep's end as stored with the study."""
    import lyricslab.training.train
    from lyricslab.sweeps.coordination import DEADLINE_ATTR

    calls = []

    def trial_of_5_seconds(cfg, **kwargs):
        calls.append((time.time(), float(cfg.trainer.budget_minutes)))
        time.sleep(5.0)
        return {"best_val_bpc": 3.0 - len(calls) / 10, "val_bpc": 3.0}

    monkeypatch.setattr(lyricslab.training.train, "train", trial_of_5_seconds)
    args = setup_sweep(tmp_path, n=50, extra=["trainer.budget_minutes=0.2"])
    assert sweep.main([*args, "budget_minutes=0.25"]) == 0
    study = study_of(tmp_path)
    end = float(study._storage.get_study_system_attrs(study._study_id)[DEADLINE_ATTR])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and len(calls) == 2
    for (called, budget), trial in zip(calls, study.trials):
        left = end - trial.datetime_start.timestamp()
        assert left >= 0.5 * 12 - 0.5  # a trial starts only with at least half of its 12 s left
        assert budget * 60 == pytest.approx(min(12.0, end - called), abs=0.5)  # its budget, cut to what is left
    assert calls[0][1] == 0.2 and calls[1][1] < 0.2  # the second one was cut
    # The sweep stopped because the next trial would not have had room: < 6 s were left, but some were.
    last = study.trials[-1].datetime_complete.timestamp()
    assert 0 < end - last < 0.5 * 12 + 0.5
    parents, _ = split(runs(tmp_path))
    assert parents[0].data.params["sweep.budget_minutes"] == "0.25"
