"""Keras callbacks: derived per-epoch training metrics (perplexity, lr, tokens/s) and full-context validation."""

from __future__ import annotations

import math
import time
from typing import Callable

from lyricslab.runtime import quiet_tensorflow

quiet_tensorflow()  # before keras: TensorFlow's start-up lines stay off the console
import keras  # noqa: E402
import numpy as np

from lyricslab.evaluation import Scores


class DerivedMetrics(keras.callbacks.Callback):
    """Adds train perplexity, lr and train tokens/s to each epoch's logs.

    It must come before any logger in the callback list: Keras hands every callback the same
    logs dict, so the loggers see these keys too.
    """

    def __init__(self, tokens_per_step: int):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self.epoch_start = self.train_seconds = 0.0
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # Runs before FullContextValidation, so the time is the epoch's training alone.
        train_time = time.perf_counter() - self.epoch_start
        self.train_seconds += train_time
        logs["tokens_per_sec"] = self.steps * self.tokens_per_step / max(train_time, 1e-9)
        if "nll" in logs:
            logs["perplexity"] = math.exp(min(float(logs["nll"]), 50.0))
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class FullContextValidation(keras.callbacks.Callback):
    """val_nll, val_bpc, val_perplexity, val_accuracy, val_top5_accuracy (and val_seconds) each epoch.

    Replaces Keras' windowed validation: every val token is scored once, with full context,
    padding excluded, so the per-epoch val_bpc is the same exact number the run reports.
    It must come before EarlyStopping, ReduceLROnPlateau, pruning and logging callbacks, which
    read these keys from the shared logs dict.
    """

    def __init__(self, score: Callable[[np.ndarray], Scores], stream: np.ndarray, chars: int):
        super().__init__()
        self.score, self.stream, self.chars = score, stream, chars

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        start = time.perf_counter()
        logs.update(self.score(self.stream).metrics(self.chars, "val_"))
        logs.pop("val_tokens")
        logs["val_seconds"] = time.perf_counter() - start
