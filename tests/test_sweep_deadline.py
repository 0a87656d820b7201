"""Sweep-side budgets on a fake clock: trials fitted into the sweep's time, and the pruning resource."""

import pytest
from conftest import compose

from lyricslab.sweeps.deadline import SweepDeadline, rounds_per_trial
from lyricslab.sweeps.space import SpaceError
from lyricslab.sweeps.spec import load_spec


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_trials_get_their_own_budget_cut_to_what_is_left():
    clock = Clock()
    deadline = SweepDeadline(30, clock)
    assert deadline.trial_minutes(5) == 5 and deadline.room_for(5)
    clock.now += 27 * 60
    assert deadline.trial_minutes(5) == pytest.approx(3)  # the last trial gets the 3 minutes left
    assert deadline.room_for(5)  # 3 of 5 minutes: still worth starting
    clock.now += 2 * 60
    assert not deadline.room_for(5)  # 1 of 5 minutes: too little for a comparable trial
    clock.now += 5 * 60
    assert deadline.minutes_left() == 0 and not deadline.room_for(None)


def test_no_sweep_budget_leaves_trials_alone():
    deadline = SweepDeadline(None, Clock())
    assert deadline.trial_minutes(7) == 7 and deadline.room_for(7) and deadline.minutes_left() is None


def test_the_pruning_resource_is_rounds_under_a_budget_else_epochs():
    budgeted = compose(["trainer.budget_minutes=5", "trainer.eval_every_minutes=0.75", "trainer.epochs=30"])
    assert rounds_per_trial(budgeted.trainer) == 7  # ceil(5 / 0.75)
    assert rounds_per_trial(compose(["trainer.epochs=12"]).trainer) == 12


def test_budget_minutes_sets_the_sweep_timeout_and_is_checked():
    spec = load_spec("demo", {"budget_minutes": 30})
    assert spec.budget_minutes == 30 and spec.timeout == 1800  # replaces demo.yaml's own timeout of 900 s
    assert load_spec("demo", {}).timeout == 900
    with pytest.raises(SpaceError, match="above 0"):
        load_spec("demo", {"budget_minutes": -1, "timeout": None})
