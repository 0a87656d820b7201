"""Which worker process runs which trial, recorded on the trial itself.

The parent of a multi-worker sweep, and any later resume, uses this to tell the trials of a
dead worker from those of a live one.
"""

from __future__ import annotations

import os
import socket

import optuna

WORKER_ATTR, PID_ATTR, HOST_ATTR = "worker", "worker_pid", "worker_host"


def record_worker(trial: optuna.Trial, index: int) -> None:
    """Tag the trial with the worker index, process id and host running it."""
    trial.set_user_attr(WORKER_ATTR, index)
    trial.set_user_attr(PID_ATTR, os.getpid())
    trial.set_user_attr(HOST_ATTR, socket.gethostname())
