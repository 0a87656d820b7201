"""Worker processes of a sweep: which trial each one runs, and what happens when one dies.

Every trial records its worker (index, pid, host). When a worker dies mid-trial, its trial
is failed at once, re-queued with the same parameters, and its MLflow run ends FAILED:
by the parent, which sees its child exit, and by any later sweep process on the same host,
which sees that the recorded pid is gone. Optuna's heartbeat still covers workers on other
hosts (a shared RDB storage), where a pid means nothing.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lyricslab.sweeps.parent_run import RUN_ATTR, close_orphan_runs
from lyricslab.sweeps.storage import HEARTBEAT_ATTR

WORKER_ATTR, PID_ATTR, HOST_ATTR = "worker", "worker_pid", "worker_host"
DIED_ATTR = "worker_died"  # set on trials failed because their process died, not because of their config
ERROR_ATTR = "error"
HOST = socket.gethostname()


def record_worker(trial: optuna.Trial, index: int) -> None:
    """Tag the trial with the worker index, process id and host running it."""
    trial.set_user_attr(WORKER_ATTR, index)
    trial.set_user_attr(PID_ATTR, os.getpid())
    trial.set_user_attr(HOST_ATTR, HOST)


class RetryDeadWorkerTrial:
    """Optuna's RetryHeartbeatStaleTrialCallback, without the dead worker's own attributes.

    Optuna copies every attribute onto the re-queued trial; a copied pid, heartbeat or MLflow
    run id would make the retry look like the dead worker's trial the moment it starts.
    """

    def __init__(self, max_retry: int | None):
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        for key in (WORKER_ATTR, PID_ATTR, HOST_ATTR, DIED_ATTR, ERROR_ATTR, RUN_ATTR):
            trial.user_attrs.pop(key, None)
        trial.system_attrs.pop(HEARTBEAT_ATTR, None)
        self.retry(study, trial)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed child its parent has not reaped yet is a zombie: dead all the same
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def dead_worker_trials(study: optuna.Study, pids: set[int] | None = None) -> list[FrozenTrial]:
    """RUNNING trials of this host whose worker is gone: one of `pids`, or else any pid that no longer exists."""
    out = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get(PID_ATTR)
        if pid is None or trial.user_attrs.get(HOST_ATTR) != HOST:
            continue  # not started by a lyricslab worker of this host: the heartbeat decides
        if (pid in pids) if pids is not None else not pid_alive(pid):
            out.append(trial)
    return out


def fail_dead_worker_trials(study: optuna.Study, retry: Callable[[optuna.Study, FrozenTrial], None],
                            pids: set[int] | None = None, why: str = "its worker process is gone") -> list[int]:
    """Fail (and re-queue) the RUNNING trials of dead workers; end their MLflow runs FAILED. Returns their numbers."""
    # The storage calls are the ones optuna.storages.fail_stale_trials makes: Study.tell would
    # not say whether this process or a concurrent one failed the trial (and so re-queued it).
    storage = study._storage
    failed = []
    for trial in dead_worker_trials(study, pids):
        try:
            storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, f"worker {trial.user_attrs.get(WORKER_ATTR)} "
                                        f"(pid {trial.user_attrs.get(PID_ATTR)}) died mid-trial: {why}")
            storage.set_trial_user_attr(trial._trial_id, DIED_ATTR, True)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first
            continue
        retry(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    if failed:
        close_orphan_runs(study)
    return failed


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs `workers` worker processes on one study; fails the trials of any that die and starts
    a replacement while trials remain, so one lost process neither loses nor blocks the sweep."""

    def __init__(self, study: optuna.Study, command: list[str], workers: int, n_trials: int,
                 retry: Callable[[optuna.Study, FrozenTrial], None], timeout: float | None = None,
                 stop: Callable[[], bool] = lambda: False, poll_seconds: float = 0.5,
                 env: dict[str, str] | None = None):
        """`env`: the workers' environment (it carries the storage URL and tracking URI, kept out of argv)."""
        self.study, self.command, self.n_trials, self.retry, self.env = study, command, n_trials, retry, env
        self.timeout, self.stop, self.poll_seconds = timeout, stop, poll_seconds
        self.started = time.monotonic()
        self.next_index, self.restarts = 0, 0
        self.max_restarts = n_trials + workers  # a bound for a worker that keeps dying mid-trial
        self.children: dict[int, subprocess.Popen] = {}
        for _ in range(workers):
            self.start()

    def start(self) -> None:
        # The sweep's end is stored with the study: a replacement reads it, so it needs no timeout= of its own.
        args = [*self.command, f"_worker={self.next_index}"]
        self.children[self.next_index] = subprocess.Popen(args, env=self.env)
        self.next_index += 1

    def work_left(self) -> bool:
        if self.timeout is not None and time.monotonic() - self.started >= self.timeout:
            return False
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return len(done) < self.n_trials and not self.stop()

    def ran_a_trial(self, pid: int) -> bool:
        return any(t.user_attrs.get(PID_ATTR) == pid for t in self.study.get_trials(deepcopy=False))

    def run(self) -> None:
        while self.children:
            time.sleep(self.poll_seconds)
            for index, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[index]
                if code == 0:
                    continue
                failed = fail_dead_worker_trials(self.study, self.retry, {child.pid}, describe_exit(code))
                note = f"; failed its running trial(s) {failed}" if failed else ""
                # A worker that never got to a trial died starting up and would again: no replacement.
                if self.ran_a_trial(child.pid) and self.restarts < self.max_restarts and self.work_left():
                    self.restarts += 1
                    note += f"; started worker {self.next_index} in its place"
                    self.start()
                print(f"warning: worker {index} (pid {child.pid}) {describe_exit(code)}{note}", file=sys.stderr,
                      flush=True)

    def interrupt(self) -> None:
        """Ctrl-C: pass it on, give the workers time to end their trials, then kill what is left."""
        for child in self.children.values():
            child.send_signal(signal.SIGINT)
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        fail_dead_worker_trials(self.study, self.retry, {c.pid for c in self.children.values()}, "interrupted")
        self.children.clear()
