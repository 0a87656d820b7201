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

from conftest import ROOT, TINY, tiny
from lyricslab import sweep
from lyricslab.sweeps import objectives

SWEEP = """# tiny test sweep
study_name: {name}
n_trials: {n}
sampler: {{name: {sampler}, seed: 3}}
pruner: {{name: {pruner}, n_startup_trials: 1, n_warmup_steps: 0}}
heartbeat: {{interval: 1, grace: 60, max_retry: 2}}
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
    from lyricslab.sweeps import report

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


def test_three_trial_sweep_logs_parent_children_and_a_rerunnable_best_config(tmp_path, monkeypatch):
    import lyricslab.train

    returned, real_train = [], lyricslab.train.train
    monkeypatch.setattr(lyricslab.train, "train", lambda *a, **k: returned.append(real_train(*a, **k)) or returned[-1])
    assert sweep.main(setup_sweep(tmp_path)) == 0
    parents, children = split(runs(tmp_path))
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 3
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    study = study_of(tmp_path)
    by_number = {t.number: t for t in study.trials}
    for child in children:
        trial = by_number[int(child.data.tags["trial"])]
        assert child.info.status == "FINISHED" and trial.state.name == child.data.tags["trial_state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
        assert child.data.metrics["best_val_bpc"] == pytest.approx(trial.value)
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_config.yaml", "search_space.json", "optimization_history.html",
            "optimization_history.png", "t.yaml"} <= artifacts
    assert parent.data.metrics["best_val_bpc"] == pytest.approx(study.best_value)
    # The objective table (no TensorFlow needed to read it) matches what train() really returns and logs.
    assert len(returned) == 3
    for metrics in returned:
        assert all(isinstance(objectives.value(name, metrics), float) for name in objectives.OBJECTIVES)
        assert set(objectives.TEST_TO_VAL) <= set(metrics)
    assert set(objectives.PER_EPOCH) <= set(children[0].data.metrics)  # the per-epoch logs, as MLflow got them

    folder = client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path / "best"))
    out = subprocess.run([sys.executable, "-m", "lyricslab.run", "-cp", str(Path(folder).parent), "-cn",
                          "best_config"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "run.log").exists()  # logs go to the console, as for any run
    rerun = [r for r in runs(tmp_path) if "mlflow.parentRunId" not in r.data.tags
             and r.data.tags.get("lyricslab.role") != "sweep-parent"]
    assert len(rerun) == 1 and rerun[0].data.params["model.name"] == study.best_params["model"]


def test_pruned_trial_ends_killed_with_its_curve(tmp_path, no_plots):
    args = setup_sweep(tmp_path, n=2, pruner="median", extra=["trainer.epochs=3"],
                       params="  optimizer.learning_rate: choice(0.01, 1e-9)\n")
    study = sweep.open_study(sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)]))
    study.enqueue_trial({"optimizer.learning_rate": 0.01})  # learns: sets the median
    study.enqueue_trial({"optimizer.learning_rate": 1e-9})  # cannot move the weights: pruned after epoch 1
    assert sweep.main(args) == 0
    _, children = split(runs(tmp_path))
    assert sorted(c.data.tags["trial_state"] for c in children) == ["COMPLETE", "PRUNED"]
    run = next(c for c in children if c.data.tags["trial_state"] == "PRUNED")
    assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_bpc")
    assert len(history) == int(run.data.tags["pruned_at_epoch"]) == 1
    assert study_of(tmp_path).trials[1].state == optuna.trial.TrialState.PRUNED


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


def test_two_workers_share_one_study_and_draw_different_trials(tmp_path):
    args = setup_sweep(tmp_path, n=2, sampler="tpe")  # TPE's random start-up trials, one seed per worker
    out = subprocess.run(sweep_cmd([*args, "workers=2"]), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "locked" not in out.stderr
    study = study_of(tmp_path)
    # Exactly n_trials: no worker starts a trial past the total (Optuna's own check runs after a trial).
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    # Workers seeded alike would propose the same configurations in pairs.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}
    assert len({t.user_attrs["worker_pid"] for t in study.trials}) == 2
    parents, children = split(runs(tmp_path))
    assert len(parents) == 1 and len(children) == len(study.trials)
    assert len({c.data.tags["trial"] for c in children}) == len(children)
    assert all(c.info.status == "FINISHED" for c in children)


def trials_now(tmp_path, name="t"):
    """The study's trials as another process sees them right now (none before the study exists)."""
    if not (tmp_path / "optuna" / f"{name}.log").exists():
        return []
    try:
        return study_of(tmp_path, name).trials
    except KeyError:  # the journal exists but the study is not created yet
        return []


def wait_for(condition, seconds=300, what="the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


def started(trial) -> bool:
    """RUNNING, with its MLflow run open: killing the worker now leaves both behind."""
    return trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs


def test_resume_fails_and_retries_the_trial_of_a_killed_sweep_at_once(tmp_path, no_plots):
    args = setup_sweep(tmp_path, n=1)
    slow = subprocess.Popen(sweep_cmd([*args, "trainer.epochs=200", "trainer.steps_per_epoch=null"]), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [t for t in trials_now(tmp_path) if started(t)], what="the first trial to start")
    finally:
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait()
    assert study_of(tmp_path).trials[0].state.name == "RUNNING"
    # No waiting for the heartbeat's grace (60 s here): the recorded worker pid is gone.
    assert sweep.main(args) == 0
    trials = study_of(tmp_path).trials
    assert trials[0].state.name == "FAIL" and "died mid-trial" in trials[0].user_attrs["error"]
    assert trials[1].state.name == "COMPLETE" and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    assert trials[1].user_attrs["worker_pid"] == os.getpid() != trials[0].user_attrs["worker_pid"]
    all_runs = runs(tmp_path)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    dead = next(r for r in all_runs if r.info.run_id == trials[0].user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and "died mid-trial" in dead.data.tags["error"]
    # The resume added to the same study and the same parent run.
    parents, children = split(all_runs)
    assert len(parents) == 1 and len(children) == 2 == len(trials)
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["trials_complete"] == 1
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_killed_workers_are_replaced_and_their_trials_retried(tmp_path):
    args = setup_sweep(tmp_path, n=2)
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
    assert stderr.count("killed by SIGKILL") == 3 and "Traceback" not in stderr
    trials = study_of(tmp_path).trials
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and states.count("COMPLETE") + states.count("PRUNED") == 2
    assert complete_before <= {t.number for t in trials if t.state.name == "COMPLETE"}
    for number in killed:
        assert trials[number].state.name == "FAIL" and trials[number].user_attrs["worker_died"]
    first = min(killed)
    retry = next(t for t in trials if first in t.system_attrs.get("retry_history", []))
    assert retry.params == trials[first].params
    assert max(t.user_attrs.get("worker", 0) for t in trials) >= 2  # replacement workers ran trials
    parents, children = split(runs(tmp_path))
    assert parents[0].info.status == "FINISHED" and not [r for r in children if r.info.status == "RUNNING"]
    by_run = {t.user_attrs.get("mlflow_run_id"): t for t in trials}
    for child in children:
        trial = by_run[child.info.run_id]
        expected = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}[trial.state.name]
        assert child.info.status == expected, (trial.number, trial.state.name)
    assert {trials[n].user_attrs["mlflow_run_id"] for n in killed} <= set(by_run)


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
    from lyricslab.sweeps.workers import HOST, RetryDeadWorkerTrial, fail_dead_worker_trials

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


def test_registry_alias_moves_to_a_better_trial_and_generate_uses_it(tmp_path, capsys, no_plots):
    from lyricslab import generate

    args = setup_sweep(tmp_path, n=1, params="  optimizer.learning_rate: choice(0.01, 1e-9)\n")
    study = sweep.open_study(sweep.load(*[sweep.parse_args(args)[i] for i in (0, 3, 4)]))
    study.enqueue_trial({"optimizer.learning_rate": 1e-9})  # a poor first "best"
    assert sweep.main(args) == 0
    client = mlflow.MlflowClient()
    first = client.get_model_version_by_alias("lyricslab-t", "best")
    study.enqueue_trial({"optimizer.learning_rate": 0.01})  # the resume finds a better trial
    assert sweep.main([*args, "n_trials=2"]) == 0
    moved = client.get_model_version_by_alias("lyricslab-t", "best")
    assert int(moved.version) == int(first.version) + 1
    assert moved.run_id == study_of(tmp_path).best_trial.user_attrs["mlflow_run_id"] != first.run_id
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert generate.main(["model_uri=models:/lyricslab-t@best", f"tracking_uri={uri}", "max_tokens=10"]) == 0
    assert generate.main(["sweep=t", f"tracking_uri={uri}", "max_tokens=10"]) == 0
    assert capsys.readouterr().out.count("=== song 1") == 2
