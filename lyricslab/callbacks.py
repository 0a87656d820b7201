"""Keras callbacks: derived per-epoch metrics (perplexity, bits per character, lr, tokens/s)."""

from __future__ import annotations

import math
import time

import keras

LN2 = math.log(2.0)


class DerivedMetrics(keras.callbacks.Callback):
    """Adds perplexity, val bits-per-character, lr and train tokens/s to each epoch's logs.

    It must come before any logger in the callback list: Keras hands every callback the same
    logs dict, so the loggers see these keys too.

    `nll` is the mean next-token NLL over real (non-padding) tokens, a weighted metric, so
    val_bpc = val_nll / ln 2 * (val tokens / val characters) is exact for any tokenizer.
    """

    def __init__(self, val_tokens_per_char: float, tokens_per_step: int):
        super().__init__()
        self.val_tokens_per_char = val_tokens_per_char
        self.tokens_per_step = tokens_per_step
        self.epoch_start = self.train_seconds = 0.0
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.steps, self.train_end = time.perf_counter(), 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):  # inside fit this marks the end of the epoch's training part
        if self.train_end is None:
            self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        train_time = (self.train_end or time.perf_counter()) - self.epoch_start
        self.train_seconds += train_time
        logs["tokens_per_sec"] = self.steps * self.tokens_per_step / max(train_time, 1e-9)
        for prefix in ("", "val_"):
            if f"{prefix}nll" in logs:
                logs[f"{prefix}perplexity"] = math.exp(min(float(logs[f"{prefix}nll"]), 50.0))
        if "val_nll" in logs:
            logs["val_bpc"] = float(logs["val_nll"]) / LN2 * self.val_tokens_per_char
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
