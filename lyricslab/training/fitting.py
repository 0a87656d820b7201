"""The plumbing every Keras fit in lyricslab shares: runtime settings, divergence handling, MLflow
logging per round, the round size and what stopped a fit.

Kept apart from train.py so that each training loop (train.py for causal LMs, masked_lm.py for
BERT) imports it, and neither imports the other.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Callable, Iterator, Sequence

import keras
import mlflow
import numpy as np

from lyricslab.config.runtime import choose_backend
from lyricslab.data import load_splits
from lyricslab.data.prepare import SPLITS, Splits
from lyricslab.training.budget import Budget, check_trainer, steps_for_minutes
from lyricslab.training.callbacks import LearningRateByProgress, StopAtBudget
from lyricslab.training.optim import budget_schedule


class NonFiniteLoss(FloatingPointError):
    """Training diverged; raised so the run (or sweep trial) fails with the reason recorded."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {loss} in epoch {epoch + 1}; lower optimizer.learning_rate "
                                f"or set trainer.gradient_clip")


@contextlib.contextmanager
def diverged_as_non_finite_loss(model: keras.Model) -> Iterator[None]:
    """Report a diverged run as NonFiniteLoss even when no epoch ends to show the loss.

    Keras' sparse update for the embedding (RMSprop divides by a dense denominator) takes a path
    for NaN denominators that fails on repeated token ids with a graph error, inside the very
    step whose loss became NaN. Non-finite weights or optimizer state tell that crash from a bug.
    (TensorFlow only: other backends have no such path, and their NaN loss ends the round as usual.)
    """
    graph_errors: tuple[type[BaseException], ...] = ()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph_errors = (tf.errors.InvalidArgumentError,)
    try:
        yield
    except graph_errors as err:
        values = [*model.weights, *model.optimizer.variables]
        if all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in values):
            raise
        raise NonFiniteLoss("training diverged (weights or optimizer state became non-finite); lower "
                            "optimizer.learning_rate or set trainer.gradient_clip") from err


class MlflowEpochLogger(keras.callbacks.Callback):
    """Every number in the round's logs, with the round (0-based; a Keras epoch) as the step.

    mlflow.keras.MlflowCallback would also do this, but it logs optimizer params that clash
    with our flattened config params; this is its on_epoch_end alone.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs and mlflow.active_run() is not None:
            mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)


def configure_runtime(trainer: Any) -> None:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Every trial of a sweep traces new graphs on purpose; TF's "retracing" warning is noise here.
        tf.get_logger().setLevel("ERROR")
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(trainer.seed))
    policy = {"bf16": "mixed_bfloat16", "float32": "float32"}.get(str(trainer.precision))
    if policy is None:
        raise ValueError(f"trainer.precision must be float32 or bf16, not {trainer.precision!r}")
    keras.mixed_precision.set_dtype_policy(policy)
    keras.distribution.set_distribution(data_parallel() if trainer.get("data_parallel") else None)


def data_parallel() -> Any:
    """Keras' DataParallel over every accelerator when there are several (JAX only: Keras' distribution
    API has no TensorFlow implementation); None on one device, where it would only add overhead."""
    if keras.backend.backend() != "jax":
        return None
    devices = keras.distribution.list_devices()
    return keras.distribution.DataParallel(devices=devices) if len(devices) > 1 else None


def prepare_run(cfg: Any) -> tuple[Splits, dict[str, list[str]]]:
    """The opening of every training loop: check the trainer settings, set the runtime (seed,
    precision), then read the data once: the splits and their texts by name."""
    check_trainer(cfg.trainer)
    choose_backend(cfg.get("backend"))  # the config's backend is the one Keras runs on, or a ConfigError
    configure_runtime(cfg.trainer)
    splits = load_splits(cfg.data, cfg.data_size.songs)
    return splits, {name: getattr(splits, name) for name in SPLITS}


def budget_callbacks(cfg: Any, budget: Budget | None) -> list[keras.callbacks.Callback]:
    """Under `trainer.budget_minutes`: the lr moved along the schedule by the budget's spent fraction
    (none for constant or plateau), then the stop when the budget is spent. Nothing without a budget."""
    if budget is None:
        return []
    callbacks: list[keras.callbacks.Callback] = []
    schedule = budget_schedule(cfg.scheduler, float(cfg.optimizer.learning_rate))
    if schedule is not None:
        callbacks.append(LearningRateByProgress(schedule, budget.fraction))
    return [*callbacks, StopAtBudget(budget)]


def log_model_size(model: keras.Model, vocab_size: int) -> int:
    """Log the vocabulary, total and trainable parameters as run params; the trainable count (LoRA: the adapters)."""
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    mlflow.log_params({"data.vocab_size": vocab_size, "model.params": model.count_params(),
                       "model.trainable_params": trainable})
    return trainable


def progress_verbosity(setting: Any) -> int:
    """Keras progress bars on a terminal, one line per epoch in logs and CI."""
    if str(setting) == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def steps_per_round(tr: Any, batches: int, probe: Callable[[], float]) -> int:
    """Training steps per evaluation round (one Keras epoch): `eval_every_steps`; or what
    `eval_every_minutes` takes at the rate `probe()` measures; else one pass over the train split's
    `batches`, capped by `steps_per_epoch`. The first two don't grow with the corpus."""
    if tr.get("eval_every_steps"):
        return int(tr.eval_every_steps)
    if tr.get("eval_every_minutes"):
        rate = probe()
        steps = steps_for_minutes(rate, float(tr.eval_every_minutes))
        if progress_verbosity(tr.verbose):
            print(f"trainer.eval_every_minutes={tr.eval_every_minutes:g}: {rate:.2f} training steps/s measured, "
                  f"so a validation round every {steps} steps", flush=True)
        return steps
    return min(batches, tr.steps_per_epoch) if tr.steps_per_epoch else batches


def stopped_by(callbacks: Sequence[keras.callbacks.Callback]) -> str:
    """What ended the fit: `budget`, `early_stopping` or `epochs` (all rounds ran)."""
    if any(isinstance(c, StopAtBudget) and c.stopped for c in callbacks):
        return "budget"
    if any(isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0 for c in callbacks):
        return "early_stopping"
    return "epochs"
