"""The sweep load benchmark (`python -m bench sweep load`): one study shared by parallel workers on a
real PostgreSQL cluster, their runs and artifacts going through a real `mlflow server`.

The servers come from bench/services.py (scripts/services.sh on free ports in a temporary folder),
so nothing touches the user's `make services` data. Memory is read from /proc (Linux), which
needs no extra package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Target, check, out_dir, quick, record
from lyricslab.sweeps.coordination import DEADLINE_ATTR

TARGET_STORAGE_ERRORS = Target("<=", 0, "")
TARGET_DUPLICATES = Target("<=", 0, "")
TARGET_FAILED = Target("<=", 0, "")
TARGET_OVERSHOOT = Target("<=", 0, "")
TARGET_LATE = Target("<=", 0, "")

# A continuous learning rate (and more): with a correct per-worker sampler seed, two trials never
# share a configuration, so any duplicate means workers drew the same random numbers.
SPEC = """# load benchmark sweep
study_name: load
n_trials: {n}
timeout: 3600
sampler: {{name: random, seed: 11}}
pruner: {{name: none}}
max_failed_share: 1.0
fixed: {fixed}
params:
  model: choice(lstm, gru)
  optimizer: choice(rmsprop, adam)
  optimizer.learning_rate: tag(log, interval(0.0003, 0.03))
  model.units: choice(16, 24, 32)
"""
# The tests' tiny trials (tests/conftest.py TINY): a few seconds each, so the servers, not training,
# are what the sweep waits on.
TINY = ["trainer.epochs=1", "trainer.seq_len=32", "trainer.batch_size=16", "trainer.steps_per_epoch=4",
        "model.layers=1", "embedding=small", "samples.max_tokens=12", 'samples.prompts=["[verse]\\n"]',
        "samples.temperatures=[0.8]", "trainer.verbose=0", "tracking.experiment=bench-load"]
# What a database or tracking-server failure looks like in a worker's output: exception names and
# the messages PostgreSQL, SQLAlchemy, Optuna and MLflow's client give (not source paths in frames).
STORAGE_ERROR = re.compile(
    r"OperationalError|IntegrityError|InterfaceError|DatabaseError|StorageInternalError|psycopg\.errors|"
    r"deadlock detected|could not serialize access|server closed the connection|connection refused|"
    r"too many clients|QueuePool limit|API request to .* failed|MlflowException|RestException|"
    r"Max retries exceeded|status code 5\d\d", re.IGNORECASE)


def proc_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process, from /proc/PID/stat."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        fields = text.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        out.append((int(stat.parent.name), int(fields[1]), int(fields[2])))
    return out


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB; PSS splits shared pages among the processes sharing them,
    so summing it over PostgreSQL's backends does not count its shared buffers once per backend."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0, 0.0
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.split()[1:2]}
    return kb.get("Rss", 0) / 1024, kb.get("Pss", 0) / 1024


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class PeakMemory(threading.Thread):
    """Samples, twice a second, the summed RSS and PSS of three groups of processes: the MLflow
    server that answers HTTP (`mlflow server` and its uvicorn workers), MLflow 3's background-job
    runner with its huey consumers (started by `mlflow server` unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION
    is false; idle here, but resident), and the PostgreSQL cluster."""

    GROUPS = ("mlflow http", "mlflow jobs", "postgres")

    def __init__(self, mlflow_leader: int, postmaster: int):
        super().__init__(daemon=True)
        self.mlflow_leader, self.postmaster = mlflow_leader, postmaster
        self.peak = {name: (0.0, 0.0) for name in self.GROUPS}
        self.processes = {name: 0 for name in self.GROUPS}
        self.samples = 0
        self.done = threading.Event()

    def groups(self) -> dict[str, list[int]]:
        procs = proc_processes()
        # `mlflow server` and everything it forks share its process group (services.sh starts it with setsid).
        mlflow = [p for p, _, g in procs if g == self.mlflow_leader]
        jobs = [p for p in mlflow if "mlflow.server.jobs" in cmdline(p)]
        # PostgreSQL forks one backend per connection (and a few helpers) under the postmaster.
        postgres = [p for p, parent, _ in procs if p == self.postmaster or parent == self.postmaster]
        return {"mlflow http": [p for p in mlflow if p not in jobs], "mlflow jobs": jobs, "postgres": postgres}

    def sample(self) -> None:
        for name, pids in self.groups().items():
            rss, pss = map(sum, zip(*(memory_mb(p) for p in pids))) if pids else (0.0, 0.0)
            self.peak[name] = (max(self.peak[name][0], rss), max(self.peak[name][1], pss))
            self.processes[name] = max(self.processes[name], len(pids))
        self.samples += 1

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


def fresh_database(services, name: str) -> str:
    """A new, empty database on the services' cluster (its user is the cluster's owner), as its URL."""
    import psycopg

    with psycopg.connect(host=services.host, port=services.pg_port, user="lyricslab", password=services.password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return services.db_url(name)


def duplicate_configurations(trials) -> int:
    """Trials whose sampled parameters equal an earlier trial's."""
    seen = [json.dumps(t.params, sort_keys=True) for t in trials if t.params]
    return len(seen) - len(set(seen))


def log_lines(path: Path, pattern: re.Pattern) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if pattern.search(line)]


def load() -> dict | None:
    """Parallel workers on one PostgreSQL study, logging through an MLflow tracking server
    (`--serve-artifacts`, so every trial's model, samples and plots are uploaded to it), as a
    team sharing a study across hosts runs it: 2 simulated hosts × 2 workers, 100 tiny trials in
    all (1-layer LSTM/GRU, 1 epoch of 4 steps; random sampler over model, optimizer, a continuous
    learning rate and units, so no two trials should share a configuration). Each host is a
    separate `python -m lyricslab.sweep` started at the same instant on a fresh database, in its
    own folder with its own HOME and caches, given the storage URL and tracking URI through the
    environment only (as on two machines, nothing host-local is shared).

    - **duplicate configurations**: trials whose parameters repeat an earlier trial's (workers
      drawing the same random numbers, on one host or across hosts, would give pairs);
    - **overshoot**: trials created beyond n_trials (hosts racing for the last slots);
    - **late trials**: trials started after the sweep's end stored with the study;

    - **storage errors**: lines in the workers' output that carry a database or tracking-server
      exception (SQLAlchemy/psycopg errors, deadlocks, serialization failures, MLflow REST
      failures), plus worker processes that exited abnormally;
    - **failed trials**: trials that ended FAIL for any reason;
    - **trials per minute**, over the whole command and from the first trial's start to the last
      one's end (the command's own start-up and summary excluded);
    - **peak memory**, summed RSS and PSS sampled twice a second, of the MLflow server that answers
      HTTP (`mlflow server` and its uvicorn worker), of the background-job runner and huey consumers
      that MLflow 3's `mlflow server` also starts (idle in a training sweep, yet resident; the
      environment variable MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false leaves them out), and of the
      PostgreSQL cluster (the postmaster and its backends). RSS counts pages shared between
      processes (PostgreSQL's shared buffers, forked interpreters) once per process; PSS splits
      them, so its sum is the honest total.

    Caveat: every worker, both servers and the benchmark share this machine's cores, so trials per
    minute measures the whole setup on one host, not what the servers could take from many hosts.
    """
    from bench.services import (
        ROOT,
        ServicesError,
        missing_requirement,
        running_services,
    )

    reason = missing_requirement()
    if reason and quick():  # the quick run checks every benchmark: a missing server is a failure
        raise SystemExit(f"error: sweep load needs PostgreSQL and psycopg: {reason}")
    if reason:
        print(f"sweep load skipped: {reason}", file=sys.stderr)
        return None
    hosts, workers, per_worker = (2, 1, 1) if quick() else (2, 2, 25)
    n = hosts * workers * per_worker
    work = Path(tempfile.mkdtemp(prefix="lyricslab-bench-load-"))  # each host's folder: cache, best config, log
    spec_text = SPEC.format(n=n, fixed=json.dumps(TINY))
    try:
        with running_services() as services:
            import optuna

            memory = PeakMemory(int(services.mlflow_pid_file.read_text()),
                                int((services.pg_data / "postmaster.pid").read_text().split()[0]))
            memory.start()
            log = work / "sweep.log"
            url = fresh_database(services, f"load_{int(time.time())}")  # the hosts race to create the schema
            # This checkout's lyricslab, whatever is installed: each host runs in its own temporary folder.
            base_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                                    if p),
                        "LYRICSLAB_STORAGE": url, "MLFLOW_TRACKING_URI": services.tracking_uri}
            print(f"  sweep load: {hosts} hosts × {workers} workers, {n} trials on PostgreSQL + MLflow server ...",
                  flush=True)
            started = time.perf_counter()
            procs, outs = [], []
            for h in range(hosts):
                folder = work / f"host-{h}"
                (folder / "home").mkdir(parents=True)
                (folder / "load.yaml").write_text(spec_text)
                out = (folder / "sweep.log").open("w")
                outs.append(out)
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "lyricslab.sweep", "sweep=load.yaml", f"workers={workers}"], cwd=folder,
                    env={**base_env, "HOME": str(folder / "home")}, stdout=out, stderr=subprocess.STDOUT))
            codes = [p.wait() for p in procs]
            for out in outs:
                out.close()
            code = max(codes)
            with log.open("w") as merged:
                for h in range(hosts):
                    merged.write(f"===== host {h} =====\n" + (work / f"host-{h}" / "sweep.log").read_text(errors="replace"))
            wall = time.perf_counter() - started
            memory.stop()
            study = optuna.load_study(study_name="load", storage=url)
            trials = study.get_trials(deepcopy=False)
            end = study._storage.get_study_system_attrs(study._study_id).get(DEADLINE_ATTR)
            server_errors = log_lines(services.folder / "mlflow.log", re.compile(r"\bERROR\b|Traceback"))
            pg_log = log_lines(services.folder / "postgres.log", re.compile(r"\b(ERROR|FATAL|PANIC):"))
    except ServicesError as err:
        raise SystemExit(f"error: sweep load could not start its servers: {err}") from None
    finally:
        kept = out_dir() / "sweep-load.log"  # the workers' output, to read when a check is not met
        kept.parent.mkdir(parents=True, exist_ok=True)
        if (work / "sweep.log").exists():
            shutil.copyfile(work / "sweep.log", kept)
        shutil.rmtree(work, ignore_errors=True)
    # Every worker creates the study with load_if_exists: all but the first hit the unique name, and
    # Optuna loads the existing study instead. PostgreSQL logs each such handled race as an ERROR.
    study_races = [line for line in pg_log if "ix_studies_study_name" in line]
    pg_errors = [line for line in pg_log if line not in study_races]
    storage_lines = log_lines(kept, STORAGE_ERROR)
    dead_workers = log_lines(kept, re.compile(r"^warning: worker \d+ \(pid \d+\) (killed|exit code)"))
    tracebacks = len(log_lines(kept, re.compile(r"^Traceback")))
    if code != 0 or storage_lines or dead_workers:
        print("\n".join(kept.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    print(f"  the workers' output is in {kept}")
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    finished = states["COMPLETE"] + states["PRUNED"]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    busy = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0

    overshoot = max(len(trials) - n, 0)
    late = sum(1 for t in trials if end is not None and t.datetime_start and t.datetime_start.timestamp() > end)
    figures: dict[str, object] = {
        "hosts × workers, trials in all": f"{hosts} × {workers}, {n}",
        "sweep exit code": code,
        "trials COMPLETE / PRUNED / FAIL / RUNNING": " / ".join(str(states[s]) for s in states),
        "wall seconds (whole command)": wall,
        "trials per minute (whole command)": 60 * finished / wall,
        "trials per minute (first trial start to last trial end)": 60 * finished / busy if busy else 0.0,
        "storage-error lines in the workers' output": len(storage_lines),
        "workers that exited abnormally": len(dead_workers),
        "tracebacks in the workers' output": tracebacks,
        "MLflow server log: ERROR or Traceback lines": len(server_errors),
        "PostgreSQL log: ERROR / FATAL lines": len(pg_errors),
        "PostgreSQL log: study-creation races Optuna resolves (duplicate study name)": len(study_races),
    }
    for name, label in (("mlflow http", "MLflow server (HTTP: mlflow server + uvicorn)"),
                        ("mlflow jobs", "MLflow job runner + huey consumers"),
                        ("postgres", "PostgreSQL (postmaster + backends)")):
        figures[f"{label}: processes"] = memory.processes[name]
        figures[f"{label}: peak RSS MB, summed"] = memory.peak[name][0]
        figures[f"{label}: peak PSS MB, summed"] = memory.peak[name][1]
    figures["memory samples"] = memory.samples
    for line in (storage_lines + pg_errors)[:3]:
        print(f"    e.g. {line.strip()[:200]}")
    checks = [check("storage errors (workers' output, abnormal worker exits)", len(storage_lines) + len(dead_workers),
                    TARGET_STORAGE_ERRORS),
              check("duplicate configurations", duplicate_configurations(trials), TARGET_DUPLICATES),
              check("failed trials", states["FAIL"], TARGET_FAILED),
              check("overshoot (trials beyond n_trials)", overshoot, TARGET_OVERSHOOT),
              check("trials started after the sweep's stored end", late, TARGET_LATE)]
    budget = (f"{hosts} simulated hosts × {workers} workers, {n} tiny trials (1-layer LSTM/GRU, 1 epoch × 4 steps, "
              "demo corpus) on one PostgreSQL study, runs and artifacts through `mlflow server --serve-artifacts`, "
              "all on this machine; storage URL and tracking URI in the environment")
    study = (f"sweep=load.yaml workers={workers} on each of {hosts} hosts; study load: {n} trials, sampler random, "
             f"pruner none, fixed {' '.join(o for o in TINY if not o.startswith('tracking.'))}")
    return record("sweep.load", "Sweep load on PostgreSQL and an MLflow server", budget, checks, figures,
                  overrides=[study])
