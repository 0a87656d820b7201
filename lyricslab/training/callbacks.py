"""Keras callbacks: derived per-round training metrics (perplexity, lr, tokens/s), full-context validation,
the time budget's stop, and the progress line.

A Keras epoch is one evaluation round (see trainer.eval_every_steps in lyricslab.training.train).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import keras
import numpy as np

from lyricslab.scoring.scorers import Scores
from lyricslab.training.budget import Budget


class DerivedMetrics(keras.callbacks.Callback):
    """Adds train perplexity, lr, train tokens/s, the round (1-based) and the training tokens seen
    so far to each round's logs: rounds need not be passes over the data, so these say where a
    round's numbers stand.

    It must come before any logger in the callback list: Keras hands every callback the same
    logs dict, so the loggers see these keys too.
    """

    def __init__(self, tokens_per_step: int):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self.epoch_start = self.train_seconds = 0.0
        self.steps = self.tokens_seen = 0

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
        self.tokens_seen += self.steps * self.tokens_per_step
        logs["round"] = epoch + 1
        logs["tokens_seen"] = self.tokens_seen
        logs["tokens_per_sec"] = self.steps * self.tokens_per_step / max(train_time, 1e-9)
        if "loss" in logs:  # the mean next-token NLL of the round's training batches (no padding in them)
            logs["nll"] = float(logs["loss"])
            logs["perplexity"] = math.exp(min(logs["nll"], 50.0))
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def sync_fit_state(model: keras.Model) -> None:
    """Call before a callback assigns a variable in the middle of a round. On JAX, Keras' fit keeps
    the variables' values outside them during an epoch and reads them back only after this sync
    (`jax_state_sync`), so without it the assignment would be lost. A no-op on TensorFlow."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


class ResetStatesEachPass(keras.callbacks.Callback):
    """Carried-state training: zero the RNN states where a pass over the rows starts again, so the
    state from the end of one row never flows into its beginning. Counted in steps, because rounds
    (Keras epochs) need not be passes."""

    def __init__(self, steps_per_pass: int):
        super().__init__()
        self.steps_per_pass, self.step = steps_per_pass, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step % self.steps_per_pass == 0:
            sync_fit_state(self.model)
            for layer in self.model.layers:
                if getattr(layer, "stateful", False):
                    layer.reset_state()
        self.step += 1


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
        # The best round's per-token NLL (the weights EarlyStopping restores), to fit the song cache on.
        self.best_token_nll: np.ndarray | None = None
        self.best_bpc = float("inf")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        start = time.perf_counter()
        scores = self.score(self.stream)
        logs.update(scores.metrics(self.chars, "val_"))
        logs.pop("val_tokens")
        if logs["val_bpc"] < self.best_bpc:  # strictly lower, as EarlyStopping picks its best round
            self.best_bpc, self.best_token_nll = logs["val_bpc"], scores.token_nll
        logs["val_seconds"] = time.perf_counter() - start


class StopAtBudget(keras.callbacks.Callback):
    """Stops training once the budget is spent, checked after every step and after each round.

    Keras still ends the round it stopped in (on_epoch_end runs), so the partial round is
    validated like any other and can be the best one that EarlyStopping restores. The check
    after the round (it must come after FullContextValidation) keeps a budget spent during
    validation from starting a round only to stop it after one step.
    """

    def __init__(self, budget: Budget):
        super().__init__()
        self.budget = budget
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.budget.start()

    def on_train_batch_end(self, batch, logs=None):
        if self.budget.spent():
            self.model.stop_training = self.stopped = True

    def on_epoch_end(self, epoch, logs=None):
        # Early stopping, earlier in the list, may already have stopped it: then it gets the credit.
        if not self.model.stop_training and self.budget.spent():
            self.model.stop_training = self.stopped = True


class LearningRateByProgress(keras.callbacks.Callback):
    """Sets the lr before every step to `schedule(progress())`, progress being the budget's spent fraction.

    Why the clock and not a step count estimated from the first steps' throughput: on a shared
    CPU the step rate drifts (other jobs, validation rounds, a model that slows as it warms up),
    so an estimated count would end the decay early or late; read from the clock, the decay ends
    when the budget does. The price: a budget run's lr sequence depends on timing, so it is not
    step-for-step reproducible.
    """

    def __init__(self, schedule: Callable[[float], float], progress: Callable[[], float]):
        super().__init__()
        self.schedule, self.progress = schedule, progress

    def on_train_batch_begin(self, batch, logs=None):
        sync_fit_state(self.model)  # on JAX a full sync per step: a Python loop that rebinds arrays, no copies
        self.model.optimizer.learning_rate = self.schedule(self.progress())

    def on_train_batch_end(self, batch, logs=None):
        # Again as the step ends: the lr logged after a round, and after a budget stop the end value.
        sync_fit_state(self.model)
        self.model.optimizer.learning_rate = self.schedule(self.progress())


class RoundProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar (or one line per round), headed `Round k/N`, or under a budget
    `Round k · 3.2 of 10 min`: Keras' `Epoch k/N` would show an epoch count the run doesn't use.

    Keras uses a ProgbarLogger found in the callback list instead of adding its own; it must be
    last, so that its line shows the metrics the other callbacks add.
    """

    def __init__(self, budget: Budget | None = None):
        super().__init__()
        self.budget = budget

    def on_epoch_begin(self, epoch, logs=None):
        rounds, self.epochs = self.epochs, 1  # 1: Keras' own header stays off
        super().on_epoch_begin(epoch, logs)
        self.epochs = rounds
        if self.verbose:
            spent = (f" · {self.budget.used_minutes():.1f} of {self.budget.minutes:g} min" if self.budget
                     else f"/{rounds}")
            print(f"Round {epoch + 1}{spent}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        # The header has the round; counters would print as "tokens_seen: 40960.0000".
        super().on_epoch_end(epoch, {k: v for k, v in (logs or {}).items() if k not in ("round", "tokens_seen")})


class ThroughputProbe(keras.callbacks.Callback):
    """Times the steps after the first (which traces the graph) and stops the fit once `min_steps`
    of them took at least `min_seconds`, so the rate is neither the trace's nor one noisy step's."""

    def __init__(self, min_steps: int = 3, min_seconds: float = 2.0, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.min_steps, self.min_seconds, self.clock = min_steps, min_seconds, clock
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(self.clock())
        if len(self.ends) > self.min_steps and self.ends[-1] - self.ends[0] >= self.min_seconds:
            self.model.stop_training = True

    def steps_per_second(self) -> float:
        if len(self.ends) < 2 or self.ends[-1] <= self.ends[0]:
            raise RuntimeError("the throughput probe timed no steps after the first")
        return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])
