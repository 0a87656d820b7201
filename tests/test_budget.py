"""Training under a wall-clock budget, on a fake clock so every test is deterministic and quick:
the budget stops the run, the best round's weights come back and are tested, and it is logged."""

import math
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pytest

from conftest import ROOT, compose, tiny
from lyricslab.budget import Budget, TrainerConfigError, check_trainer
from lyricslab.callbacks import DerivedMetrics, FullContextValidation
from lyricslab.evaluation import full_context_scorer
from lyricslab.models import build_model
from lyricslab.optim import build_optimizer
from lyricslab.train import compile_model, configure_runtime, fit_callbacks, train
from lyricslab.windows import make_windows, to_dataset

LR = 0.002  # rmsprop's default
VOCAB = 24


class FakeClock:
    """Time that moves only when a Tick callback says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tick(keras.callbacks.Callback):
    """Every training step takes `seconds` of fake time; validation takes none. Passed after the
    budget's callbacks, it moves the clock once the step's lr is set, so the step ends `seconds` later."""

    def __init__(self, clock: FakeClock, seconds: float):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += self.seconds


class SpoilAfterFirstRound(keras.callbacks.Callback):
    """Keeps the round-1 weights, then replaces them with noise so that every later round is worse."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.first = [w.copy() for w in self.model.get_weights()]

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            rng = np.random.default_rng(0)
            self.model.set_weights([rng.normal(0, 3, w.shape).astype(w.dtype) for w in self.model.get_weights()])


def the_run(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["lyricslab"], output_format="list")
    return run


def test_budget_stops_mid_round_restores_the_best_round_and_still_tests_samples_and_logs(store, tmp_path):
    # Rounds of 4 steps, 5.5 fake seconds a step, 1 minute: the budget is spent as the 11th step
    # ends, 3 steps into round 3. trainer.epochs=1 would have stopped after round 1: a budget replaces it.
    clock = FakeClock()
    spoil = SpoilAfterFirstRound()
    cfg = compose([*tiny("lstm"), "trainer.budget_minutes=1", "trainer.patience=5", "scheduler=cosine", *store])
    metrics = train(cfg, callbacks=[spoil, Tick(clock, 5.5)], clock=clock)

    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] == 1
    for restored, first in zip(spoil.model.get_weights(), spoil.first):
        np.testing.assert_array_equal(restored, first)  # the round-1 weights, not the last round's
    assert metrics["budget_minutes"] == 1.0
    assert metrics["budget_used_minutes"] == pytest.approx(11 * 5.5 / 60)  # the step that spent it ran to its end

    run = the_run(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["stopped_by"] == "budget"
    assert run.data.metrics["budget_used_minutes"] == pytest.approx(60.5 / 60)
    assert run.data.params["trainer.budget_minutes"] == "1"
    lr = [m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "lr")]
    assert lr[-1] == pytest.approx(LR * 0.05, rel=1e-5)  # cosine's end value, when the budget ended
    val = [m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_bpc")]
    assert len(val) == 3 and min(val) == val[0] == pytest.approx(metrics["best_val_bpc"])  # the partial round too
    # Evaluated, sampled and saved after the stop, with the restored weights.
    assert 0 < metrics["test_bpc"] < 10 and metrics["lyric_metric_chars"] > 0 and metrics["sample_seconds"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"samples.txt", "model", "learning_curves.png"} <= artifacts


# ---------------------------------------------------------------------------------------------
# The lr schedule spans the budget: read from the clock, it reaches its end value as the budget ends.


class RecordLearningRate(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def cosine(progress: float, alpha: float = 0.05) -> float:
    return alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES = {  # overrides, the lr at progress p (fraction of the budget spent), written out independently of Keras
    "constant": ([], lambda p: LR),
    "plateau": ([], lambda p: LR),  # val_bpc drives it, not the clock
    "cosine": ([], lambda p: LR * cosine(p)),
    "warmup_cosine": (["scheduler.warmup_fraction=0.25"], lambda p: LR * p / 0.25 if p < 0.25 else LR * cosine((p - 0.25) / 0.75)),
    "exponential": (["scheduler.alpha=0.1", "scheduler.decay_rate=0.5"], lambda p: LR * 0.1 ** p),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_schedule_spans_the_budget_and_ends_at_its_end_value(name):
    """5 fake seconds a step, a 1-minute budget: step i starts at progress i / 12, the 12th step
    spends the budget, and the lr is then the schedule's end value, whatever epochs and steps say."""
    overrides, expected = SCHEDULES[name]
    cfg = compose([*tiny("lstm"), f"scheduler={name}", *overrides, "trainer.epochs=2", "trainer.patience=100"])
    configure_runtime(cfg.trainer)
    model = build_model(cfg, VOCAB)
    compile_model(model, build_optimizer(cfg, 4, budget=True))
    stream = np.resize(np.arange(3, VOCAB, dtype=np.int32), 64 * 32)
    train_ds = to_dataset(make_windows(stream, 32, pad_last=False), 16, shuffle=True, seed=0, repeat=True)
    val = stream[:3 * 32 + 5]
    validation = FullContextValidation(full_context_scorer(model, cfg.trainer), val, len(val))
    clock, recorder = FakeClock(), RecordLearningRate()
    budget = Budget(1.0, clock)
    callbacks = fit_callbacks(cfg, DerivedMetrics(16 * 32), validation, [recorder, Tick(clock, 5.0)], budget)
    model.fit(train_ds, epochs=100, steps_per_epoch=4, verbose=0, shuffle=False, callbacks=callbacks)
    assert len(recorder.rates) == 12 == int(model.optimizer.iterations)  # the budget stopped it after round 3
    assert recorder.rates == pytest.approx([expected(i / 12) for i in range(12)], rel=1e-4)
    final = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert final == pytest.approx(expected(1.0), rel=1e-4)  # where the budget ended


@pytest.mark.parametrize("overrides,expected", [
    (["trainer.epochs=2"], "epochs"),                                # no budget: all rounds ran
    (["trainer.epochs=4", "trainer.patience=1"], "early_stopping"),  # round 2 is worse: stopped
    (["trainer.epochs=4", "trainer.patience=1", "trainer.budget_minutes=100"], "early_stopping"),
])
def test_stopped_by_names_what_ended_the_run(overrides, expected, store, tmp_path):
    clock = FakeClock()
    metrics = train(compose([*tiny("lstm"), *overrides, *store]), callbacks=[SpoilAfterFirstRound(), Tick(clock, 1.0)],
                    clock=clock)
    run = the_run(tmp_path)
    assert run.data.tags["stopped_by"] == expected
    assert ("budget_used_minutes" in metrics) == ("trainer.budget_minutes=100" in overrides)
    assert metrics["epochs_run"] == 2


def test_budget_clock_starts_once_and_reports_the_fraction_spent():
    clock = FakeClock()
    budget = Budget(2.0, clock)
    assert budget.used_minutes() == 0 and not budget.spent()
    budget.start()
    clock.now += 30
    budget.start()  # a second fit (or a probe before it) does not restart it
    clock.now += 30
    assert budget.used_minutes() == 1.0 and budget.fraction() == 0.5 and not budget.spent()
    clock.now += 120
    assert budget.spent() and budget.fraction() == 1.0


@pytest.mark.parametrize("overrides,message", [
    (["trainer.budget_minutes=0"], "trainer.budget_minutes must be a number above 0"),
    (["trainer.budget_minutes=-3"], "trainer.budget_minutes must be a number above 0"),
    (["trainer.budget_minutes=soon"], "trainer.budget_minutes must be a number above 0"),
])
def test_impossible_trainer_settings_fail_with_the_fix(overrides, message):
    with pytest.raises(TrainerConfigError, match=message):
        check_trainer(compose(overrides).trainer)


def test_cli_rejects_an_impossible_budget_in_one_line_before_tensorflow_loads():
    out = subprocess.run([sys.executable, "-m", "lyricslab.run", "trainer.budget_minutes=-1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: trainer.budget_minutes must be a number above 0, or null "
                                                   "to turn it off; got -1")
