"""Sweep-side budgets: a whole-sweep budget that trials are fitted into, and the pruning resource.

Plain Python (no TensorFlow, no Optuna), so it is tested on a fake clock.
- `budget_minutes:` in a sweep file is the sweep's total wall time (it sets `timeout`). Each trial
  trains for its own `trainer.budget_minutes` (a fixed or searched key), cut to what is left of the
  sweep, and no trial starts once too little is left for a useful one.
- Pruners count evaluation rounds. Under a per-trial budget a trial runs about
  `budget_minutes / eval_every_minutes` rounds, not `trainer.epochs`, so that is the resource
  Hyperband sizes its brackets with.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

MIN_SHARE = 0.5  # a trial cut below half of its own budget would not be comparable: don't start it


class SweepDeadline:
    """The end of a sweep's time, `minutes` after it is made (or `until` a stored end); None = no end."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.end = None if minutes is None else clock() + 60.0 * float(minutes)

    @classmethod
    def until(cls, end: float | None, clock: Callable[[], float] = time.time) -> "SweepDeadline":
        """A deadline at `end` (epoch seconds, as stored with the study), on the wall clock every host shares."""
        deadline = cls(None, clock)
        deadline.end = end
        return deadline

    def minutes_left(self) -> float | None:
        return None if self.end is None else max(self.end - self.clock(), 0.0) / 60.0

    def trial_minutes(self, wanted: float | None) -> float | None:
        """The budget the next trial gets: its own, cut to what is left of the sweep."""
        left = self.minutes_left()
        if left is None or wanted is None:
            return wanted
        return min(float(wanted), left)

    def room_for(self, wanted: float | None) -> bool:
        """Whether a trial that wants `wanted` minutes still fits well enough to start."""
        left = self.minutes_left()
        if left is None:
            return True
        return left > 0 and (wanted is None or left >= MIN_SHARE * float(wanted))


def rounds_per_trial(trainer: Any) -> int:
    """Evaluation rounds a trial runs at most: the pruner's resource (Hyperband's max_resource)."""
    budget, every = trainer.get("budget_minutes"), trainer.get("eval_every_minutes")
    if budget and every:
        return max(int(math.ceil(float(budget) / float(every))), 1)
    return int(trainer.epochs)
