"""A wall-clock training budget, and the checks on the trainer settings that size a run.

Plain Python (no TensorFlow), so `python -m lyricslab.run` rejects a bad setting before
TensorFlow loads. The Keras callbacks that act on a budget are in lyricslab.training.callbacks.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable


class TrainerConfigError(ValueError):
    """A trainer setting that cannot work; the message says how to fix it."""


def _positive(tr: Any, name: str, integer: bool = False) -> float | None:
    value = tr.get(name)
    if value is None:
        return None
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        raise TrainerConfigError(f"trainer.{name} must be {kind} above 0, or null to turn it off; got {value!r}")
    return value


def check_trainer(tr: Any) -> None:
    """Fail with one line on budget and evaluation-cadence settings that cannot work."""
    _positive(tr, "budget_minutes")
    _positive(tr, "eval_every_minutes")
    if _positive(tr, "eval_every_steps", integer=True) and tr.get("eval_every_minutes"):
        raise TrainerConfigError("set trainer.eval_every_steps or trainer.eval_every_minutes, not both "
                                 "(pass the other as null)")


class Budget:
    """Minutes of wall time for one fit, read from `clock` (injectable, so tests run on a fake clock).

    The clock starts at `start()`, just before training (and before a throughput probe), so it
    counts the first step's graph tracing, every training step and every validation round; data
    preparation before and test scoring and sampling after are outside it.
    """

    def __init__(self, minutes: float, clock: Callable[[], float] = time.perf_counter):
        self.minutes, self.clock = float(minutes), clock
        self.started: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def used_minutes(self) -> float:
        return 0.0 if self.started is None else (self.clock() - self.started) / 60.0

    def fraction(self) -> float:
        """How much of the budget is spent, 0 to 1."""
        return min(self.used_minutes() / self.minutes, 1.0)

    def spent(self) -> bool:
        return self.used_minutes() >= self.minutes


def steps_for_minutes(steps_per_second: float, minutes: float) -> int:
    """Training steps that take about `minutes` at the measured rate (at least one)."""
    return max(int(round(steps_per_second * minutes * 60.0)), 1)
