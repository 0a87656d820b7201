"""`train(cfg) -> metrics`: one training run, recorded as one MLflow run.

Plain function, no Hydra main here (see run.py), so sweeps and tests call it directly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the console

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lyricslab import tracking  # noqa: E402
from lyricslab.callbacks import LN2, DerivedMetrics  # noqa: E402
from lyricslab.data import load_splits  # noqa: E402
from lyricslab.data.prepare import SPLITS  # noqa: E402
from lyricslab.bundle import save_bundle  # noqa: E402
from lyricslab.generation import write_samples  # noqa: E402
from lyricslab.lyric_metrics import sample_metrics  # noqa: E402
from lyricslab.models import build_model  # noqa: E402
from lyricslab.optim import build_optimizer, scheduler_callbacks  # noqa: E402
from lyricslab.plots import learning_curves  # noqa: E402
from lyricslab.tokenizers import UNK_ID, Tokenizer, load_tokenizer, train_tokenizer  # noqa: E402
from lyricslab.windows import Windows, make_windows, to_dataset  # noqa: E402


class NonFiniteLoss(FloatingPointError):
    """Training diverged; raised so the run (or sweep trial) fails with the reason recorded."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {loss} in epoch {epoch + 1}; lower optimizer.learning_rate "
                                f"or set trainer.gradient_clip")


class MlflowEpochLogger(keras.callbacks.Callback):
    """Every number in the epoch's logs, with the epoch as the step.

    mlflow.keras.MlflowCallback would also do this, but it logs optimizer params that clash
    with our flattened config params; this is its on_epoch_end alone.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)


def configure_runtime(trainer: Any) -> None:
    import tensorflow as tf

    # Every trial of a sweep traces new graphs on purpose; TF's "retracing" warning is noise here.
    tf.get_logger().setLevel("ERROR")
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(trainer.seed))
    policy = {"bf16": "mixed_bfloat16", "float32": "float32"}.get(str(trainer.precision))
    if policy is None:
        raise ValueError(f"trainer.precision must be float32 or bf16, not {trainer.precision!r}")
    keras.mixed_precision.set_dtype_policy(policy)


def progress_verbosity(setting: Any) -> int:
    """Keras progress bars on a terminal, one line per epoch in logs and CI."""
    if str(setting) == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Weighted by the padding mask, so val/test averages cover real tokens only.
        weighted_metrics=[
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="nll"),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
        ],
    )


def evaluate_split(model: keras.Model, windows: Windows, chars: int, batch_size: int, prefix: str) -> dict[str, float]:
    """Exact sums over every real token: loss, perplexity, bits/char, accuracy, macro P/R/F1."""
    from sklearn.metrics import precision_recall_fscore_support

    import tensorflow as tf

    # One graph for every batch shape (predict_on_batch retraces on the ragged last batch).
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])
    nll_sum, count, y_true, y_pred = 0.0, 0, [], []
    for i in range(0, len(windows.x), batch_size):
        logits = np.asarray(forward(windows.x[i:i + batch_size]), dtype=np.float64)
        y, w = windows.y[i:i + batch_size], windows.w[i:i + batch_size] > 0
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        nll_sum += float(((log_z - picked) * w).sum())
        count += int(w.sum())
        y_true.append(y[w])
        y_pred.append(logits.argmax(-1)[w])
    true, pred = np.concatenate(y_true), np.concatenate(y_pred)
    precision, recall, f1, _ = precision_recall_fscore_support(true, pred, average="macro", zero_division=0)
    nll = nll_sum / max(count, 1)
    return {f"{prefix}loss": nll, f"{prefix}perplexity": math.exp(min(nll, 50.0)),
            f"{prefix}bpc": nll_sum / LN2 / max(chars, 1), f"{prefix}accuracy": float((true == pred).mean()),
            f"{prefix}precision_macro": float(precision), f"{prefix}recall_macro": float(recall),
            f"{prefix}f1_macro": float(f1), f"{prefix}tokens": float(count)}


def tokenize_splits(tok_cfg: Any, texts: dict[str, list[str]], cache_path: Path | None
                    ) -> tuple[Tokenizer, dict[str, np.ndarray]]:
    """Train the tokenizer on the train split and encode every split, once per data + tokenizer config
    and tokenizer code version (TOKENIZER_CACHE_VERSION), so changed tokenizer code never reuses old streams.

    Sweep trials that share both reuse the saved tokenizer and token streams instead of
    retraining BPE and re-encoding every song per trial.
    """
    from lyricslab.tokenizers import TOKENIZER_CACHE_VERSION  # read per call: bumping it misses the cache

    blob = {"v": TOKENIZER_CACHE_VERSION, "tokenizer": OmegaConf.to_container(tok_cfg, resolve=True)}
    key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
    folder = Path(f"{cache_path}-tok-{key.hexdigest()[:12]}") if cache_path is not None else None
    if folder is not None and (folder / "streams.npz").exists():
        with np.load(folder / "streams.npz") as saved:
            return load_tokenizer(folder / "tokenizer"), {name: saved[name] for name in SPLITS}
    tokenizer = train_tokenizer(tok_cfg, texts["train"])
    streams = {name: tokenizer.encode_songs(texts[name]) for name in SPLITS}
    if folder is not None:
        tmp = Path(f"{folder}.{os.getpid()}.tmp")  # parallel workers: build aside, rename into place
        tokenizer.save(tmp / "tokenizer")
        np.savez(tmp / "streams.npz", **streams)
        try:
            tmp.rename(folder)
        except OSError:  # another worker got there first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer, streams


def train(cfg: Any, callbacks: Sequence[keras.callbacks.Callback] = (), parent_run_id: str | None = None,
          tags: dict[str, str] | None = None, on_run_start: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train one model as configured; log everything to one MLflow run; return the final metrics.

    `callbacks` run after the metric and logging callbacks (e.g. an Optuna pruning callback sees
    val_bpc); `parent_run_id` nests the run under a sweep's parent run; `on_run_start(run_id)` is
    called as soon as the MLflow run exists (a sweep records it on the trial).
    """
    started = time.perf_counter()
    configure_runtime(cfg.trainer)
    tr = cfg.trainer
    splits = load_splits(cfg.data, cfg.data_size.songs)
    texts = {name: getattr(splits, name) for name in SPLITS}
    tokenizer, streams = tokenize_splits(cfg.tokenizer, texts, splits.cache_path)
    chars = {name: sum(len(s) + 1 for s in texts[name]) for name in SPLITS}  # +1: the end-of-song mark
    windows = {name: make_windows(streams[name], tr.seq_len, pad_last=name != "train") for name in SPLITS}

    batches = max(len(windows["train"].x) // tr.batch_size, 1)
    steps = min(batches, tr.steps_per_epoch) if tr.steps_per_epoch else batches
    train_ds = to_dataset(windows["train"], tr.batch_size, shuffle=True, seed=tr.seed, repeat=bool(tr.steps_per_epoch))
    val_ds = to_dataset(windows["val"], tr.batch_size, shuffle=False, seed=tr.seed)

    summary = splits.summary()
    for name in SPLITS:
        summary[name]["tokens"] = int(len(streams[name]))
    summary["vocab_size"] = tokenizer.vocab_size
    if tokenizer.kind == "word":
        for name in ("val", "test"):
            summary[name]["oov_rate"] = float((streams[name] == UNK_ID).mean())

    with tracking.training_run(cfg, parent_run_id=parent_run_id, tags=tags) as run:
        if on_run_start:
            on_run_start(run.info.run_id)
        model = build_model(cfg, tokenizer.vocab_size)
        compile_model(model, build_optimizer(cfg, steps))
        derived = DerivedMetrics(val_tokens_per_char=windows["val"].tokens / chars["val"],
                                 tokens_per_step=tr.batch_size * tr.seq_len)
        fit_callbacks = [derived, MlflowEpochLogger(), StopOnNonFiniteLoss(),
                         keras.callbacks.EarlyStopping(monitor="val_loss", patience=tr.patience,
                                                       restore_best_weights=True),
                         *scheduler_callbacks(cfg.scheduler), *callbacks]
        mlflow.log_params({"data.vocab_size": tokenizer.vocab_size, "model.params": model.count_params()})
        if tokenizer.kind == "word":
            mlflow.log_metrics({"val_oov_rate": summary["val"]["oov_rate"], "test_oov_rate": summary["test"]["oov_rate"]})
        fit_start = time.perf_counter()
        history = model.fit(train_ds, validation_data=val_ds, epochs=tr.epochs, steps_per_epoch=steps,
                            callbacks=fit_callbacks, verbose=progress_verbosity(tr.verbose), shuffle=False).history
        fit_seconds = time.perf_counter() - fit_start

        eval_start = time.perf_counter()
        metrics = evaluate_split(model, windows["test"], chars["test"], tr.batch_size, prefix="test_")
        metrics["eval_seconds"] = time.perf_counter() - eval_start
        best = int(np.argmin(history["val_loss"]))
        # best_*: the restored (best) epoch; the per-epoch curves keep their own names.
        metrics.update({f"best_{k}": float(history[k][best]) for k in ("val_bpc", "val_loss", "val_perplexity",
                                                                           "val_accuracy", "val_top5_accuracy")})
        metrics.update({
            "best_epoch": float(best + 1),
            "epochs_run": float(len(history["val_loss"])), "params": float(model.count_params()),
            "train_tokens_per_sec": steps * tr.batch_size * tr.seq_len * len(history["loss"]) / max(derived.train_seconds, 1e-9),
            "train_seconds": fit_seconds,
        })
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            tokenizer.save(out / "tokenizer")
            save_bundle(out / "model", model, tokenizer, cfg)
            learning_curves(history, out / "learning_curves.png", title=f"{cfg.model.name} / {cfg.tokenizer.kind}")
            (out / "data_summary.json").write_text(json.dumps(summary, indent=2))
            sample_start = time.perf_counter()
            samples = write_samples(model, tokenizer, cfg, out / "samples.txt")
            metrics["sample_seconds"] = time.perf_counter() - sample_start
            lyric_start = time.perf_counter()
            metrics.update(sample_metrics(samples, texts["train"], texts["val"]))  # ref_*: same count and length
            metrics["lyric_metric_seconds"] = time.perf_counter() - lyric_start
            mlflow.log_artifacts(tmp)
        metrics["wall_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
    metrics["val_bpc"] = metrics["best_val_bpc"]  # the objective sweeps minimise by default
    return metrics
