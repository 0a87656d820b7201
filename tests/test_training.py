"""Each model family trains and leaves a complete MLflow run; failures end the run properly; every
scheduler, optimizer and model option really trains; validation is masked and full-context."""

import math

import keras
import mlflow
import numpy as np
import pytest

from conftest import compose, tiny
from lyricslab.callbacks import DerivedMetrics, FullContextValidation
from lyricslab.evaluation import full_context_scorer
from lyricslab.models import build_model
from lyricslab.optim import build_optimizer
from lyricslab.plots import curves
from lyricslab.train import compile_model, configure_runtime, fit_callbacks, train
from lyricslab.windows import make_windows, parallel_streams, to_dataset

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
    for per_epoch in ("loss", "nll", "val_nll", "perplexity", "val_perplexity", "accuracy", "top5_accuracy",
                      "val_top5_accuracy", "val_seconds"):
        assert len(client.get_metric_history(run.info.run_id, per_epoch)) == 2, per_epoch
    assert not client.get_metric_history(run.info.run_id, "val_loss")  # padding-diluted; no longer produced
    if tokenizer == "word":
        assert 0 <= run.data.metrics["val_oov_rate"] < 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= ARTIFACTS

    model_path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/model.keras",
                                                     dst_path=str(tmp_path / "dl"))
    loaded = keras.saving.load_model(model_path, safe_mode=True)
    vocab = int(run.data.params["data.vocab_size"])
    assert loaded(np.ones((1, 5), dtype="int32")).shape == (1, 5, vocab)
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

    from lyricslab.train import tokenize_splits

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
