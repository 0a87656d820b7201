"""Two hosts on one study, for real: two sweep processes that share nothing but a PostgreSQL database and an
MLflow server (separate working folders, HOME and caches), started at the same instant on a fresh database.

Each start checks what issue 19 found broken: no configuration tried twice, exactly n_trials, no trial
started after the sweep's end (stored with the study), artifacts stored by the server and not on either
host's disk, no password in any process' command line, every host running trials; and after `kill -9`
of one host mid-trial, the other host fails that trial, retries it, and leaves nothing RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import psycopg
import pytest
from conftest import ROOT, tiny
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from services import services  # noqa: F401  (the session fixture)

from lyricslab.sweeps.coordination import DEADLINE_ATTR
from lyricslab.sweeps.workers import HOST_ATTR, PID_ATTR, WORKER_ATTR

pytestmark = pytest.mark.slow

SWEEP = """study_name: {name}
n_trials: {n}
{timeout}
sampler: {{name: random, seed: 7}}
pruner: {{name: none}}
heartbeat: {{interval: 1, grace: 5, max_retry: 2}}
fixed: [{fixed}]
params:
  model: choice(lstm, gru)
  model.units: int(interval(8, 64))
  optimizer.learning_rate: tag(log, interval(0.001, 0.03))
"""


def fresh_database(services, name: str) -> str:  # noqa: F811
    with psycopg.connect(host=services.host, port=services.pg_port, user="lyricslab", password=services.password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return services.db_url(name)


def host(root: Path, name: str, sweep_text: str) -> tuple[Path, dict[str, str]]:
    """A host's own folder, HOME and caches; the sweep file is the same text on both."""
    folder = root / name
    (folder / "home").mkdir(parents=True)
    (folder / "hosts.yaml").write_text(sweep_text)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LYRICSLAB_STORAGE")}
    env.update(HOME=str(folder / "home"), XDG_CACHE_HOME=str(folder / "home" / ".cache"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return folder, env


def start_hosts(tmp_path: Path, services, database: str, n: int, timeout: str = "",  # noqa: F811
                workers: tuple[int, int] = (1, 1)) -> tuple[str, list[subprocess.Popen], list[Path]]:
    url = fresh_database(services, database)
    fixed = [o for o in tiny("lstm") if not o.startswith(("model=", "model.units="))]
    text = SWEEP.format(name="hosts", n=n, timeout=timeout, fixed=", ".join(json.dumps(o) for o in fixed))
    procs, folders = [], []
    for name, count in zip(("host-a", "host-b"), workers):
        folder, env = host(tmp_path / database, name, text)
        env.update(LYRICSLAB_STORAGE=url, MLFLOW_TRACKING_URI=services.tracking_uri)  # secrets: environment only
        cmd = [sys.executable, "-m", "lyricslab.sweep", "sweep=hosts.yaml", f"workers={count}",
               f"tracking.experiment={database}"]
        procs.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        folders.append(folder)
    return url, procs, folders


def command_lines() -> list[str]:
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return lines


def finish(procs: list[subprocess.Popen], password: str, timeout: float = 600) -> list[tuple[int, str]]:
    """Wait for the hosts, checking every second that no command line on the machine holds the password."""
    end = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < end:
        leaked = [line for line in command_lines() if password in line]
        assert leaked == [], leaked
        time.sleep(1)
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=max(end - time.monotonic(), 1))
        outs.append((p.returncode, err))
        assert password not in out + err
    return outs


def trials_of(url: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; none while the hosts have not created it yet."""
    try:
        return optuna.load_study(study_name="hosts", storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def config(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def test_two_hosts_started_together_share_one_study_exactly(services, tmp_path):  # noqa: F811
    # Host B runs two worker processes (its supervisor re-execs them: the password must stay out of argv).
    url, procs, folders = start_hosts(tmp_path, services, "hosts1", n=6, workers=(1, 2))
    for code, err in finish(procs, services.password):
        assert code == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    trials = trials_of(url)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 6 and len(trials) == 6  # exactly n_trials: none over, none lost
    assert len({config(t) for t in done}) == 6  # no configuration tried twice
    assert {t.user_attrs[HOST_ATTR] for t in done} and len({t.user_attrs[PID_ATTR] for t in done}) >= 2
    workers = {t.user_attrs[WORKER_ATTR] for t in done}
    assert workers <= {0, 1, 2} and len(workers) >= 2  # numbers handed out by the study, one per process
    mlflow.set_tracking_uri(services.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["hosts1"], output_format="list")
    trial_runs = [r for r in runs if r.data.tags.get("trial") is not None]
    assert len([r for r in trial_runs if r.info.status == "FINISHED"]) == 6
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in trial_runs)
    parents = [r for r in runs if r.data.tags.get("lyricslab.role") == "sweep-parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one parent run, ended by the last host
    for folder in folders:  # nothing of the runs on either host's disk
        assert not (folder / "mlruns" / "artifacts").exists() or not any((folder / "mlruns" / "artifacts").rglob("*.keras"))


def test_a_late_host_fits_into_the_sweeps_stored_end(services, tmp_path):  # noqa: F811
    """The second simultaneous start on a fresh database, with a budget that ends the sweep before n_trials."""
    url, procs, _ = start_hosts(tmp_path, services, "hosts_deadline", n=60, timeout="timeout: 40")
    for code, err in finish(procs, services.password):
        assert code == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    trials = trials_of(url)
    study = optuna.load_study(study_name="hosts", storage=url)
    end = study._storage.get_study_system_attrs(study._study_id)[DEADLINE_ATTR]
    assert 1 <= len(trials) < 60
    assert all(t.datetime_start.timestamp() <= end for t in trials)  # nothing started after the sweep's end
    assert len({t.user_attrs[PID_ATTR] for t in trials}) == 2  # both hosts ran trials
    assert len({config(t) for t in trials}) == len(trials)


def test_kill_9_of_one_host_is_failed_and_retried_by_the_other(services, tmp_path):  # noqa: F811
    url, procs, _ = start_hosts(tmp_path, services, "hosts_kill", n=6)
    victim, survivor = procs
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until the victim is inside a trial
        running = [t for t in trials_of(url) if t.state == TrialState.RUNNING
                   and t.user_attrs.get(PID_ATTR) == victim.pid]
        if running:
            break
        time.sleep(0.5)
    assert running, "host A never started a trial"
    time.sleep(2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    (code, err), = finish([survivor], services.password)
    assert code == 0, err[-3000:]
    trials = trials_of(url)
    killed = next(t for t in trials if t.number == running[0].number)
    assert killed.state == TrialState.FAIL
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retried and retried[0].state == TrialState.COMPLETE and retried[0].params == killed.params
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    mlflow.set_tracking_uri(services.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["hosts_kill"], output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"]
