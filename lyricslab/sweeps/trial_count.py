"""Exactly n_trials across parallel workers on any number of hosts: trials are handed out under the study's lock.

Optuna's MaxTrialsCallback looks only after a trial has ended, so N workers on one study run up
to N-1 trials too many (each starts one more before it sees the total). `BudgetedStudy` counts
the COMPLETE, PRUNED and RUNNING trials and creates the next one while holding the study's lock
(lyricslab.sweeps.coordination: a PostgreSQL advisory lock for a database server, a file lock for a
storage on this host's disk), so no two workers anywhere can both take the last slot.
"""

from __future__ import annotations

from typing import Callable

import optuna
from optuna.trial import TrialState

from lyricslab.sweeps.coordination import StudyLock

USED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class BudgetSpent(RuntimeError):
    """Raised by ask() when the study already has its n_trials; the worker stops."""


class BudgetedStudy(optuna.Study):
    def __init__(self, study: optuna.Study, n_trials: int, lock: StudyLock,
                 before_count: Callable[[optuna.Study], object] | None = None,
                 sampler: optuna.samplers.BaseSampler | None = None, can_start: Callable[[], bool] = lambda: True):
        """`before_count(study)` runs under the lock first: it fails the trials of dead workers, which
        would otherwise hold their slots until the parent notices. `sampler` replaces the study's
        (each worker draws from its own stream). `can_start()` false (the sweep's end is too near)
        hands out no more trials."""
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=sampler or study.sampler,
                         pruner=study.pruner)
        self.n_trials, self.before_count, self.lock, self.can_start = n_trials, before_count, lock, can_start

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        with self.lock.held():
            if self.before_count is not None:
                self.before_count(self)
            used = len(self.get_trials(deepcopy=False, states=USED))
            if used >= self.n_trials:
                raise BudgetSpent(f"{used} of {self.n_trials} trials are done or running")
            if not self.can_start():
                raise BudgetSpent("the sweep's time is up")
            return super().ask(fixed_distributions)
