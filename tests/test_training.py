"""Each model family trains and leaves a complete MLflow run; failures end the run properly; every
scheduler, optimizer and model option really trains; validation is masked and full-context."""

import json
import math

import keras
import mlflow
import numpy as np
import pytest
from conftest import compose, tiny

from lyricslab.models import build_model
from lyricslab.scoring.scorers import full_context_scorer
from lyricslab.text.tokenizers import EOS_ID
from lyricslab.text.windows import make_windows, parallel_streams
from lyricslab.tracking.plots import curves
from lyricslab.training.batches import to_dataset
from lyricslab.training.callbacks import DerivedMetrics, FullContextValidation
from lyricslab.training.fitting import configure_runtime
from lyricslab.training.optim import build_optimizer
from lyricslab.training.train import NonFiniteLoss, compile_model, fit_callbacks, train

VOCAB = 24
ARTIFACTS = {"config.yaml", "data_summary.json", "learning_curves.png", "samples.txt", "tokenizer", "model"}


def only_run(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["lyricslab"], output_format="list")
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize("model,tokenizer", [("lstm", "char"), ("gru", "word"), ("simple_rnn", "char"),
                                             ("transformer", "subword")])
def test_model_family_trains_and_logs_a_complete_run(model, tokenizer, store, tmp_path):
    cfg = compose([*tiny(model), f"tokenizer={tokenizer}", "trainer.epochs=2", *store])
    metrics = train(cfg)
    for key in ("best_val_bpc", "test_bpc", "test_bpc_windowed", "test_perplexity", "test_accuracy",
                "test_top5_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro",
                "train_tokens_per_sec", "params", "wall_seconds"):
        assert math.isfinite(metrics[key]), key
    assert 0 < metrics["best_val_bpc"] < 10 and metrics["params"] > 0
    if tokenizer == "subword":  # byte-level BPE splits characters: nothing to line up with the n-gram
        assert "test_bpc_mixture" not in metrics
    else:  # the network + n-gram + song cache mixture, fitted on val: never worse there than either alone
        assert math.isfinite(metrics["test_bpc_mixture"])
        assert metrics["val_bpc_mixture"] <= min(metrics["best_val_bpc"], metrics["baseline_ngram_val_bpc"]) + 1e-6

    run = only_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == model and run.data.params["tokenizer.kind"] == tokenizer
    assert run.data.tags["model_family"] == cfg.model.family and "lyricslab_version" in run.data.tags
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "val_bpc")
    assert [m.step for m in history] == [0, 1]  # the per-epoch series...
    # ...whose best epoch is best_val_bpc: what the console prints and what train() returns as the objective.
    assert run.data.metrics["best_val_bpc"] == pytest.approx(min(m.value for m in history))
    assert metrics["val_bpc"] == metrics["best_val_bpc"] == pytest.approx(run.data.metrics["best_val_bpc"])
    assert run.data.metrics["test_bpc_windowed"] == pytest.approx(metrics["test_bpc_windowed"])
    for per_epoch in ("loss", "nll", "val_nll", "perplexity", "val_perplexity", "val_accuracy",
                      "val_top5_accuracy", "val_seconds"):
        assert len(client.get_metric_history(run.info.run_id, per_epoch)) == 2, per_epoch
    # The train NLL series is the loss itself: no compiled metric recomputes it (bench/mfu.py: it cost a lot).
    assert [m.value for m in client.get_metric_history(run.info.run_id, "nll")] == pytest.approx(
        [m.value for m in client.get_metric_history(run.info.run_id, "loss")])
    assert not client.get_metric_history(run.info.run_id, "top5_accuracy")
    assert not client.get_metric_history(run.info.run_id, "val_loss")  # padding-diluted; no longer produced
    # The n-gram baseline rides along on every run, with the model's ratio to it. It is fitted on the train
    # split alone: the figures are those of a fit on `splits.train`, and a fit that also read the test songs
    # would score them far better (0.23 bits/char against 0.56 on the demo corpus).
    from lyricslab.data import load_splits
    from lyricslab.scoring.ngram import baseline_bpc

    splits = load_splits(cfg.data, cfg.data_size.songs)
    held_out = {"val": splits.val, "test": splits.test}
    base = run.data.metrics["baseline_ngram_test_bpc"]
    on_train = baseline_bpc(splits.train, held_out, int(cfg.baseline.order))
    assert (base, run.data.metrics["baseline_ngram_val_bpc"]) == pytest.approx((on_train["test"], on_train["val"]))
    assert base > 1.5 * baseline_bpc(splits.train + splits.test, held_out, int(cfg.baseline.order))["test"]
    assert run.data.metrics["test_bpc_vs_baseline"] == pytest.approx(run.data.metrics["test_bpc"] / base)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= ARTIFACTS
    # The characters its samples may use, saved beside the model for generate: the train split's common ones.
    from lyricslab.text.charset import common_characters

    saved = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model/charset.json"))
    assert saved == {"coverage": 0.999, "chars": common_characters(load_splits(cfg.data, cfg.data_size.songs).train)}
    # The test figures agree with the data summary's token and character counts (a second path to them).
    summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data_summary.json"))
    chars = summary["test"]["chars"] + summary["test"]["songs"]  # every song's end-of-song mark counts as one
    assert chars == sum(len(song) + 1 for song in splits.test) and metrics["test_tokens"] == summary["test"]["tokens"]
    assert metrics["test_bpc"] == pytest.approx(metrics["test_nll"] * metrics["test_tokens"] / math.log(2) / chars)
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_nll"]))
    assert 0 < metrics["test_accuracy"] <= metrics["test_top5_accuracy"] <= 1

    model_path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/model.keras",
                                                     dst_path=str(tmp_path / "dl"))
    loaded = keras.saving.load_model(model_path, safe_mode=True)
    vocab = int(run.data.params["data.vocab_size"])
    assert loaded(np.ones((1, 5), dtype="int32")).shape == (1, 5, vocab)
    if cfg.model.family == "rnn":  # test_bpc by brute force: the saved model run over whole rows in one call
        from lyricslab.tracking.bundle import load_run

        stream = load_run(run.info.run_id).tokenizer.encode_songs(splits.test)
        stream = np.concatenate([[EOS_ID], stream]).astype("int32")  # <eos> first: every token is predicted
        # The scorer's layout: batch_size rows of whole seq_len chunks, each row read from a zero state.
        rows = min(cfg.trainer.batch_size, math.ceil((len(stream) - 1) / cfg.trainer.seq_len))
        length = math.ceil((len(stream) - 1) / (rows * cfg.trainer.seq_len)) * cfg.trainer.seq_len
        x = np.resize(stream[:-1], rows * length).reshape(rows, length)  # past the end: filler, not scored
        y = np.resize(stream[1:], rows * length).reshape(rows, length)
        log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(loaded(x), axis=-1)).astype(np.float64)
        nll = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0].ravel()[:len(stream) - 1]
        assert metrics["test_bpc"] == pytest.approx(nll.sum() / math.log(2) / chars, rel=1e-4)
    samples = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/samples.txt")
    assert "=== prompt '[verse]\\n', temperature 0.8 ===" in samples


def pattern_stream(length: int) -> np.ndarray:
    """A repeating sequence: easy to learn, so a few steps visibly lower the loss."""
    return np.resize(np.arange(3, VOCAB, dtype=np.int32), length)


class Raise(keras.callbacks.Callback):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_train_batch_end(self, batch, logs=None):
        raise self.error


@pytest.mark.parametrize("error,status", [(RuntimeError("boom in batch"), "FAILED"),
                                          (KeyboardInterrupt(), "KILLED")])
def test_run_status_on_failure_and_interrupt(error, status, store, tmp_path):
    with pytest.raises(type(error)):
        train(compose([*tiny("lstm"), *store]), callbacks=[Raise(error)])
    run = only_run(tmp_path)
    assert run.info.status == status
    expected = "RuntimeError: boom in batch" if status == "FAILED" else "interrupted"
    assert expected in run.data.tags["error"]


def test_tokenizer_and_streams_are_cached_per_data_and_tokenizer_config(tmp_path):
    from omegaconf import OmegaConf

    from lyricslab.training.train import tokenize_splits

    texts = {"train": ["[verse]\nlanterns on the pier tonight"] * 3, "val": ["[chorus]\nthe pier"],
             "test": ["[verse]\nlanterns"]}
    cfg = OmegaConf.create({"kind": "subword", "vocab_size": 300, "min_freq": 1})
    tok, streams = tokenize_splits(cfg, texts, tmp_path / "abc")
    assert len(list(tmp_path.glob("abc-tok-*"))) == 1
    again, cached = tokenize_splits(cfg, {k: [] for k in texts}, tmp_path / "abc")  # no text: must come from disk
    assert again.vocab_size == tok.vocab_size
    assert all(cached[k].tolist() == streams[k].tolist() for k in texts)
    tokenize_splits(OmegaConf.create({"kind": "char"}), texts, tmp_path / "abc")
    assert len(list(tmp_path.glob("abc-tok-*"))) == 2  # another tokenizer config, another entry
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Divergence, a known answer end to end, and early stopping, each through train().


@pytest.mark.parametrize("optimizer,reason", [
    ("adam", "loss became nan in epoch 1"),  # seen by StopOnNonFiniteLoss at the end of the epoch
    # The default optimizer: today Keras' sparse RMSprop update fails inside the step that went NaN, and
    # diverged_as_non_finite_loss reports it; were that fixed, StopOnNonFiniteLoss would report
    # "loss became nan in epoch 1" instead, and this case would say so.
    ("rmsprop", "training diverged (weights or optimizer state became non-finite)"),
], ids=["adam", "rmsprop"])
def test_diverging_run_ends_failed_with_the_reason(optimizer, reason, store, tmp_path):
    """A huge learning rate without clipping overflows the logits within two steps."""
    cfg = compose([*tiny("lstm"), f"optimizer={optimizer}", "optimizer.learning_rate=1e30",
                   "trainer.gradient_clip=null", *store])
    with pytest.raises(NonFiniteLoss, match="lower optimizer.learning_rate") as raised:
        train(cfg)
    if optimizer == "rmsprop" and keras.backend.backend() != "tensorflow":  # no sparse-update crash off TensorFlow
        reason = "loss became nan in epoch 1"
    message = f"{reason}; lower optimizer.learning_rate or set trainer.gradient_clip"
    assert str(raised.value) == message
    run = only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == f"NonFiniteLoss: {message}"  # the whole reason, as the user saw it


class ZeroOutputLayer(keras.callbacks.Callback):
    """After training (and after early stopping restored its weights): every logit 0, a uniform model."""

    def on_train_end(self, logs=None):
        matrix = self.model.get_layer("embedding").reverse_embeddings
        matrix.assign(np.zeros(matrix.shape, dtype="float32"))


def test_test_bits_per_char_known_answer(store, tmp_path):
    """A uniform model costs log2(V) bits per token, so test_bpc = log2(V) * tokens / characters.
    (tests/test_evaluation.py checks the same answer for each scorer, transformer included.)"""
    metrics = train(compose([*tiny("lstm"), *store]), callbacks=[ZeroOutputLayer()])
    run = only_run(tmp_path)
    summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data_summary.json"))
    vocab, tokens = summary["vocab_size"], summary["test"]["tokens"]
    chars = summary["test"]["chars"] + summary["test"]["songs"]  # every song's end-of-song mark counts as one
    assert metrics["test_tokens"] == tokens
    assert metrics["test_bpc"] == pytest.approx(math.log2(vocab) * tokens / chars, rel=1e-6)
    assert metrics["test_bpc_windowed"] == pytest.approx(metrics["test_bpc"], rel=1e-6)


from tests.callbacks import SpoilAfterFirstRound as SpoilAfterFirstEpoch  # noqa: E402


def test_early_stopping_restores_the_best_epoch_and_tests_it(store, tmp_path):
    from lyricslab.data import load_splits
    from lyricslab.data.prepare import SPLITS
    from lyricslab.scoring.scorers import full_context_scorer
    from lyricslab.training.train import tokenize_splits

    cfg = compose([*tiny("lstm"), "trainer.epochs=4", "trainer.patience=1", *store])
    spoil = SpoilAfterFirstEpoch()
    metrics = train(cfg, callbacks=[spoil])
    assert metrics["best_round"] == 1 and metrics["rounds_run"] == 2  # round 2 got worse: stopped, patience 1
    series = [m.value for m in mlflow.MlflowClient().get_metric_history(only_run(tmp_path).info.run_id, "val_bpc")]
    assert series[1] > series[0] == pytest.approx(metrics["best_val_bpc"]) == pytest.approx(metrics["val_bpc"])
    for restored, first in zip(spoil.model.get_weights(), spoil.first):
        np.testing.assert_array_equal(restored, first)
    # The test metrics are those of the epoch-1 weights.
    splits = load_splits(cfg.data, cfg.data_size.songs)
    texts = {name: getattr(splits, name) for name in SPLITS}
    _, streams = tokenize_splits(cfg.tokenizer, texts, splits.cache_path)
    expected = full_context_scorer(spoil.model, cfg.trainer)(streams["test"], keep_predictions=True)
    expected = expected.metrics(sum(len(s) + 1 for s in texts["test"]), "test_")
    for key in ("test_bpc", "test_accuracy", "test_f1_macro"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-6), key


# ---------------------------------------------------------------------------------------------
# Validation that early stopping, the plateau scheduler and the plots use: masked, full context.


def test_monitored_and_plotted_validation_is_the_masked_mean():
    cfg = compose([*tiny("lstm"), "scheduler=plateau"])
    configure_runtime(cfg.trainer)
    model = build_model(cfg, VOCAB)
    compile_model(model, build_optimizer(cfg, 4))
    val = pattern_stream(5 * 32 + 7)  # not a multiple of seq_len: windows and rows end in padding
    chars = 2 * len(val)
    callbacks = fit_callbacks(cfg, DerivedMetrics(16 * 32), FullContextValidation(full_context_scorer(model, cfg.trainer),
                                                                                  val, chars))
    validation = next(c for c in callbacks if isinstance(c, FullContextValidation))
    validation.set_model(model)
    logs = {}
    validation.on_epoch_end(0, logs)
    rows = parallel_streams(val, cfg.trainer.batch_size, cfg.trainer.seq_len)  # the layout it scores, padded
    assert 0 < rows.tokens == len(val) < rows.w.size
    logits = np.asarray(model(rows.x, training=False), dtype=np.float64)  # one call over every row
    top = logits.max(-1)
    nll = np.log(np.exp(logits - top[..., None]).sum(-1)) + top - np.take_along_axis(logits, rows.y[..., None], -1)[..., 0]
    exact_sum = float((nll * rows.w).sum())
    assert logs["val_nll"] == pytest.approx(exact_sum / len(val), rel=1e-5)
    assert logs["val_bpc"] == pytest.approx(exact_sum / math.log(2) / chars, rel=1e-5)
    # Keras' own val_loss divides by padding too: the number this replaces was lower than the truth.
    windows = make_windows(val, 32, pad_last=True)
    keras_loss = model.evaluate(to_dataset(windows, 4, shuffle=False, seed=0), verbose=0, return_dict=True)["loss"]
    assert keras_loss == pytest.approx(logs["val_nll"] * windows.tokens / windows.w.size, rel=1e-3)

    monitors = {c.monitor for c in callbacks
                if isinstance(c, (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau))}
    assert monitors == {"val_bpc"}
    history = {"loss": [2.0], "nll": [2.0], "val_loss": [keras_loss], "val_nll": [logs["val_nll"]],
               "val_bpc": [logs["val_bpc"]]}
    panels = dict(curves(history))
    assert panels["next-token NLL (nats per token)"] == {"nll": [2.0], "val_nll": [logs["val_nll"]]}
    assert not any("val_loss" in series for series in panels.values())


# ---------------------------------------------------------------------------------------------
# Every scheduler, optimizer and model option really trains (a few steps each, no MLflow).


class RecordLearningRate(keras.callbacks.Callback):
    """The learning rate each optimizer step uses."""

    def on_train_begin(self, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def fit_tiny(overrides: list[str], epochs: int = 2, steps: int = 4):
    """A tiny LSTM fitted as train() fits it (same builders, same callback list), minus data and MLflow."""
    cfg = compose([*tiny("lstm"), f"trainer.epochs={epochs}", *overrides])
    configure_runtime(cfg.trainer)
    model = build_model(cfg, VOCAB)
    compile_model(model, build_optimizer(cfg, steps))
    train_ds = to_dataset(make_windows(pattern_stream(64 * 32), 32, pad_last=False), 16, shuffle=True, seed=0, repeat=True)
    val = pattern_stream(3 * 32 + 5)
    validation = FullContextValidation(full_context_scorer(model, cfg.trainer), val, len(val))
    recorder = RecordLearningRate()
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False,
                        callbacks=fit_callbacks(cfg, DerivedMetrics(16 * 32), validation, [recorder])).history
    assert all(math.isfinite(v) for v in history["loss"] + history["val_bpc"])
    return cfg, model, history, recorder.rates


@pytest.fixture
def float32_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def cosine(step: int, total: int, alpha: float) -> float:
    return alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / total))


LR = 0.002  # rmsprop's default
SCHEDULES = {  # overrides, lr of step i (0-based) of 8 (2 epochs of 4), written out independently of Keras
    "constant": ([], lambda i: LR),
    "exponential": (["scheduler.decay_rate=0.5"], lambda i: LR * 0.5 ** (i / 4)),
    "cosine": ([], lambda i: LR * cosine(i, 8, 0.05)),
    "warmup_cosine": (["scheduler.warmup_fraction=0.25"], lambda i: LR * i / 2 if i < 2 else LR * cosine(i - 2, 6, 0.05)),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_step_schedule_sets_the_learning_rate_of_every_step(name):
    overrides, expected = SCHEDULES[name]
    _, model, history, rates = fit_tiny([f"scheduler={name}", *overrides], epochs=2, steps=4)
    assert rates == pytest.approx([expected(i) for i in range(8)], rel=1e-5)
    assert history["lr"] == pytest.approx([expected(4), expected(8)], rel=1e-5)  # logged: the lr after each epoch
    assert int(model.optimizer.iterations) == 8


def test_plateau_schedule_halves_the_learning_rate_when_val_bpc_stalls():
    # So small a learning rate that val_bpc cannot improve by ReduceLROnPlateau's min_delta.
    _, _, history, rates = fit_tiny(["scheduler=plateau", "optimizer.learning_rate=1e-7", "scheduler.min_lr=1e-12"],
                                    epochs=3, steps=2)
    assert rates == pytest.approx([1e-7] * 4 + [0.5e-7] * 2, rel=1e-5)  # stalled at epoch 2 (patience 1): halved
    assert history["lr"] == pytest.approx([1e-7, 1e-7, 0.5e-7], rel=1e-5)


@pytest.mark.parametrize("name,cls,setting", [("rmsprop", keras.optimizers.RMSprop, ("rho", 0.9)),
                                              ("adam", keras.optimizers.Adam, ("beta_1", 0.9)),
                                              ("adamw", keras.optimizers.AdamW, ("weight_decay", 0.01))])
def test_each_optimizer_trains(name, cls, setting):
    _, model, history, _ = fit_tiny([f"optimizer={name}"], epochs=3, steps=4)
    assert type(model.optimizer) is cls and getattr(model.optimizer, setting[0]) == pytest.approx(setting[1])
    assert int(model.optimizer.iterations) == 12
    assert history["loss"][-1] < history["loss"][0] and history["val_bpc"][-1] < history["val_bpc"][0]


def test_tied_embedding_is_one_matrix_used_both_ways():
    sizes = ["embedding.dim=32", "model.units=32"]  # units == dim: no projection, the LSTM output meets the matrix
    _, model, _, _ = fit_tiny(["embedding=tied", *sizes], epochs=1, steps=2)
    untied = build_model(compose([*tiny("lstm"), "embedding.tied=false", *sizes]), VOCAB)
    assert untied.count_params() - model.count_params() == VOCAB * 32
    embedding = model.get_layer("embedding")
    assert len(embedding.weights) == 1
    hidden = keras.Model(model.input, model.get_layer("dropout_0").output)
    x = pattern_stream(10)[None]
    matrix = keras.ops.convert_to_numpy(embedding.embeddings)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(hidden(x)) @ matrix.T, rtol=1e-4, atol=1e-5)


def test_recurrent_dropout_is_on_the_cell_and_only_in_training():
    _, model, _, _ = fit_tiny(["dropout.rate=0", "dropout.recurrent=0.5"], epochs=1, steps=2)
    assert model.get_layer("lstm_0").cell.recurrent_dropout == 0.5
    x = pattern_stream(20)[None]
    train_a, train_b = np.asarray(model(x, training=True)), np.asarray(model(x, training=True))
    assert not np.allclose(train_a, train_b)  # no other dropout is on: the recurrent masks differ
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))


def test_bf16_trains_with_float32_weights_and_logits(float32_afterwards):
    _, model, history, _ = fit_tiny(["trainer.precision=bf16"], epochs=1, steps=2)
    assert model.get_layer("lstm_0").compute_dtype == "bfloat16"
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model(pattern_stream(8)[None]).dtype == "float32"
    assert 0 < history["val_bpc"][0] < 10
