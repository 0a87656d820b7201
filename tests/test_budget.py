"""Training under a wall-clock budget, on a fake clock so every test is deterministic and quick:
the budget stops the run, the best round's weights come back and are tested, and it is logged;
the lr schedule spans the budget; validation rounds of N steps or M minutes; MFU on every run."""

import json
import math
import subprocess
import sys
import time

import keras
import mlflow
import numpy as np
import pytest
from conftest import ROOT, compose, tiny

from lyricslab.models import build_model
from lyricslab.scoring.scorers import full_context_scorer
from lyricslab.text.windows import make_windows
from lyricslab.training.batches import to_dataset
from lyricslab.training.budget import Budget, TrainerConfigError, check_trainer
from lyricslab.training.callbacks import (
    DerivedMetrics,
    FullContextValidation,
    ThroughputProbe,
)
from lyricslab.training.fitting import configure_runtime
from lyricslab.training.flops import (
    forward_flops_per_token,
    matmul_peak,
    training_flops_per_token,
    usable_cores,
)
from lyricslab.training.optim import build_optimizer
from lyricslab.training.train import (
    compile_model,
    fit_callbacks,
    measure_steps_per_second,
    steps_per_round,
    train,
)

LR = 0.002  # rmsprop's default
TINY_SMALL = ["embedding=small", "trainer.seq_len=32"]
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


from tests.callbacks import SpoilAfterFirstRound  # noqa: E402


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

    assert metrics["rounds_run"] == 3 and metrics["best_round"] == 1
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
    "warmup_cosine": (["scheduler.warmup_fraction=0.25"],
                      lambda p: LR * p / 0.25 if p < 0.25 else LR * cosine((p - 0.25) / 0.75)),
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
    assert metrics["rounds_run"] == 2


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
    (["trainer.eval_every_steps=0"], "trainer.eval_every_steps must be a whole number above 0"),
    (["trainer.eval_every_steps=2.5"], "trainer.eval_every_steps must be a whole number above 0"),
    (["trainer.eval_every_minutes=-1"], "trainer.eval_every_minutes must be a number above 0"),
    (["trainer.eval_every_steps=100", "trainer.eval_every_minutes=5"], "not both"),
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


# ---------------------------------------------------------------------------------------------
# Evaluation cadence: a round is N steps or M minutes of training, whatever the corpus size.


def test_round_size_follows_the_cadence_not_the_corpus():
    probe = lambda: 2.0  # noqa: E731  steps per second
    for batches in (10, 100_000):  # a tiny corpus and a huge one
        assert steps_per_round(compose(["trainer.eval_every_steps=50"]).trainer, batches, probe) == 50
        assert steps_per_round(compose(["trainer.eval_every_minutes=5"]).trainer, batches, probe) == 600
    # Without a cadence a round is a pass over the train split (capped by steps_per_epoch): it grows with it.
    assert [steps_per_round(compose([]).trainer, b, probe) for b in (10, 100_000)] == [10, 100_000]
    assert steps_per_round(compose(["trainer.steps_per_epoch=64"]).trainer, 100_000, probe) == 64


@pytest.mark.parametrize("cadence,steps", [("trainer.eval_every_steps=3", 3), ("trainer.eval_every_minutes=0.05", 6)])
def test_rounds_of_the_cadence_are_logged_with_round_and_tokens_seen(cadence, steps, store, tmp_path, monkeypatch):
    monkeypatch.setattr("lyricslab.training.train.measure_steps_per_second", lambda *args: 2.0)  # 0.05 min = 6 steps
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the matmul peak is measured into here
    # steps_per_epoch=4 (TINY) is what a pass-sized round would be; the cadence replaces it.
    cfg = compose([*tiny("lstm"), cadence, "trainer.epochs=3", "trainer.patience=10", *store])
    started = time.perf_counter()
    metrics = train(cfg)
    wall = time.perf_counter() - started
    tokens = steps * 16 * 32  # batch 16 × seq_len 32
    assert metrics["steps_per_round"] == steps and metrics["rounds_run"] == 3 and metrics["train_tokens"] == 3 * tokens
    client, run = mlflow.MlflowClient(), the_run(tmp_path)
    series = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
              for name in ("round", "tokens_seen", "val_bpc")}
    assert series["round"] == [(0, 1), (1, 2), (2, 3)]
    assert series["tokens_seen"] == [(0, tokens), (1, 2 * tokens), (2, 3 * tokens)]
    assert [step for step, _ in series["val_bpc"]] == [0, 1, 2]
    # Every run logs its MFU against this machine's matmul peak, measured once and cached; each factor
    # is checked against a second source. FLOPs: 6 per weight of the model's matmuls and token (the LSTM's
    # kernels, the projection, the output matrix; not the embedding lookup or biases), counted off the model.
    model = build_model(cfg, int(run.data.params["data.vocab_size"]))
    matmul_weights = sum(int(np.prod(w.shape)) for w in model.weights
                         if w.path.endswith(("/kernel", "/recurrent_kernel", "/reverse_embeddings")))
    assert metrics["train_flops_per_token"] == 6 * matmul_weights
    # Tokens/s: the tokens over the rounds' training time, which the per-round series also gives.
    per_round = [m.value for m in client.get_metric_history(run.info.run_id, "tokens_per_sec")]
    assert len(per_round) == 3 and metrics["train_tokens_per_sec"] == pytest.approx(
        3 * tokens / sum(tokens / rate for rate in per_round), rel=1e-6)
    assert metrics["train_tokens_per_sec"] > 3 * tokens / wall  # training is only part of the run
    # The peak: the one cached for this machine.
    ((key, peak),) = json.loads((tmp_path / "xdg" / "lyricslab" / "peak.json").read_text()).items()
    assert key.endswith(f"| {usable_cores()} cores | float32") and metrics["matmul_peak_gflops"] == peak / 1e9
    assert metrics["mfu"] == pytest.approx(6 * matmul_weights * metrics["train_tokens_per_sec"] / peak)
    assert 0 < metrics["mfu"] <= 1 and run.data.metrics["mfu"] == pytest.approx(metrics["mfu"])


def test_throughput_probe_skips_the_traced_first_step_and_stops_when_it_has_enough():
    cfg = compose([*tiny("lstm")])
    configure_runtime(cfg.trainer)
    model = build_model(cfg, VOCAB)
    compile_model(model, build_optimizer(cfg, 1))
    stream = np.resize(np.arange(3, VOCAB, dtype=np.int32), 64 * 32)
    train_ds = to_dataset(make_windows(stream, 32, pad_last=False), 16, shuffle=True, seed=0, repeat=True)
    clock = FakeClock()
    probe = ThroughputProbe(min_steps=3, min_seconds=2.0, clock=clock)
    # Every step 0.5 s, the first (the trace) 10 s: 5 steps ends 2 s apart are enough.
    durations = iter([10.0] + [0.5] * 100)
    ticks = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: setattr(clock, "now", clock.now + next(durations)))
    model.fit(train_ds, epochs=1, steps_per_epoch=100, shuffle=False, verbose=0, callbacks=[ticks, probe])
    assert int(model.optimizer.iterations) == 5
    assert probe.steps_per_second() == pytest.approx(2.0)
    # The real thing: a throwaway model, measured on the wall clock.
    assert 0 < measure_steps_per_second(cfg, VOCAB, train_ds) < 1e4


def test_progress_lines_name_the_round_and_the_budget_spent(capsys):
    cfg = compose([*tiny("lstm"), "trainer.patience=100"])
    configure_runtime(cfg.trainer)
    model = build_model(cfg, VOCAB)
    stream = np.resize(np.arange(3, VOCAB, dtype=np.int32), 64 * 32)
    train_ds = to_dataset(make_windows(stream, 32, pad_last=False), 16, shuffle=True, seed=0, repeat=True)
    validation = FullContextValidation(full_context_scorer(model, cfg.trainer), stream[:101], 101)
    # 2.5 fake seconds a step, rounds of 4 steps: round 2 starts 10 s (0.2 min, rounded) into the budget.
    for budget, expected in ((None, ["Round 1/2", "Round 2/2"]),
                             (1.0, ["Round 1 · 0.0 of 1 min", "Round 2 · 0.2 of 1 min"])):
        clock = FakeClock()
        spend = Budget(budget, clock) if budget else None
        compile_model(model, build_optimizer(cfg, 4, budget=spend is not None))
        callbacks = fit_callbacks(cfg, DerivedMetrics(16 * 32), validation, [Tick(clock, 2.5)], spend)
        model.fit(train_ds, epochs=2, steps_per_epoch=4, verbose=2, shuffle=False, callbacks=callbacks)
        lines = capsys.readouterr().out.splitlines()
        assert [line for line in lines if line.startswith("Round")] == expected
        assert not any(line.startswith("Epoch") for line in lines)
        progress = [line for line in lines if line.startswith("4/4")]  # one line per round, with val_bpc
        assert len(progress) == 2 and all("val_bpc" in line and "tokens_seen" not in line for line in progress)


# ---------------------------------------------------------------------------------------------
# The FLOP formula behind `mfu` (and bench/mfu.py), counted by hand and against the built model.


def test_flops_per_token_of_tiny_models_counted_by_hand():
    # LSTM: embedding 64, 1 layer of 32 units, vocab 24. Gates: 4 matrices of (64 + 32) × 32;
    # the projection back to 64 (units != dim): 32 × 64; the output head: 64 × 24. 2 FLOPs per weight.
    lstm = compose(tiny("lstm"))
    assert forward_flops_per_token(lstm, 24) == 2 * (4 * 96 * 32 + 32 * 64 + 64 * 24) == 31744
    assert training_flops_per_token(lstm, 24) == 3 * 31744
    # Transformer: width 64, 1 block, FFN 64, context 32, vocab 24. Q, K, V, output: 4 × 64 × 64;
    # FFN: 2 × 64 × 64; attention scores and mixing: 2 × 32 × 64 per token; the head: 64 × 24.
    transformer = compose(tiny("transformer"))
    assert forward_flops_per_token(transformer, 24) == 2 * (4 * 64 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 64 * 24) == 60416


@pytest.mark.parametrize("overrides", [["model=lstm", "model.layers=2", "model.units=48"],
                                       ["model=gru", "model.units=64"],  # units == dim: no projection
                                       ["model=simple_rnn", "embedding=tied", "model.units=40"],
                                       ["model=transformer", "model.layers=2", "model.heads=2", "model.ff_dim=96"]])
def test_flops_formula_matches_the_matrices_of_the_built_model(overrides):
    """2 FLOPs per weight of every matrix the forward pass multiplies by (not the lookup tables, nor
    the GRU's (2, 3u) bias), plus attention's 2 × 2 × T × w per block, read off the model Keras builds."""
    cfg = compose([*TINY_SMALL, *overrides])
    model = build_model(cfg, VOCAB)
    lookups = {"embeddings", "position_embeddings"}
    tied = bool(cfg.embedding.tied)  # then the one matrix is the output head too
    matmul = sum(int(np.prod(w.shape)) for w in model.weights
                 if len(w.shape) >= 2 and "bias" not in w.name
                 and (w.name not in lookups or (tied and w.name == "embeddings")))
    m = cfg.model
    attention = m.layers * 2 * 2 * cfg.trainer.seq_len * m.width if m.family == "transformer" else 0
    assert forward_flops_per_token(cfg, VOCAB) == 2 * matmul + attention


def test_the_matmul_peak_is_measured_once_per_machine_and_dtype(tmp_path, monkeypatch):
    measured = []

    def fake_measure(dtype):
        measured.append(dtype)
        return 1e11

    monkeypatch.setattr("lyricslab.training.flops.measure_matmul_peak", fake_measure)
    path = tmp_path / "peak.json"
    assert matmul_peak("float32", path) == matmul_peak("float32", path) == 1e11
    assert matmul_peak("bf16", path) == 1e11
    assert measured == ["float32", "bfloat16"]  # each dtype once; then from the cache
    assert len(json.loads(path.read_text())) == 2
