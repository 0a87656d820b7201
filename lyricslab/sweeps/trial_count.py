"""Exactly n_trials across parallel workers: trials are handed out under a lock.

Optuna's MaxTrialsCallback looks only after a trial has ended, so N workers on one study run up
to N-1 trials too many (each starts one more before it sees the total). `BudgetedStudy` counts
the COMPLETE, PRUNED and RUNNING trials and creates the next one while holding a file lock that
every worker on this host shares, so no two workers can both take the last slot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
from filelock import FileLock
from optuna.trial import TrialState

USED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class BudgetSpent(RuntimeError):
    """Raised by ask() when the study already has its n_trials; the worker stops."""


class BudgetedStudy(optuna.Study):
    def __init__(self, study: optuna.Study, n_trials: int, lock_path: Path,
                 before_count: Callable[[optuna.Study], object] | None = None):
        """`before_count(study)` runs under the lock first: it fails the trials of dead workers, which
        would otherwise hold their slots until the parent notices."""
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=study.sampler,
                         pruner=study.pruner)
        self.n_trials, self.before_count = n_trials, before_count
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(lock_path))

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        with self.lock:
            if self.before_count is not None:
                self.before_count(self)
            used = len(self.get_trials(deepcopy=False, states=USED))
            if used >= self.n_trials:
                raise BudgetSpent(f"{used} of {self.n_trials} trials are done or running")
            return super().ask(fixed_distributions)
