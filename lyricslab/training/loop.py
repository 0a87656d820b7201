"""The one training skeleton, shared by causal LMs (train.py) and masked LMs (masked_lm.py).

    with training_run(cfg, parent_run_id, tags, on_run_start):        # one MLflow run
        rounds = begin_rounds(cfg, model, batches, compile, probe, vocab_size, clock)
        rounds.fit(train_ds, round_callbacks(cfg, monitor, scoring, extra, rounds.budget))
        metrics = rounds.summary(model, (monitor, ...))
        with run_artifacts(cfg, tokenizer, model, data_summary) as folder: ...

`begin_rounds` starts the budget, sizes a round (one Keras epoch) by `trainer.eval_every_steps`, by a
throughput probe for `trainer.eval_every_minutes`, or as one pass, and compiles the model for it.
`round_callbacks` scores each round, logs it to MLflow, stops on a non-finite loss, stops early and
restores the best round, drives the lr and the budget, and prints the progress line. `Rounds.fit`
runs the fit with the divergence guard and tags what stopped it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import mlflow
import numpy as np
from omegaconf import OmegaConf

from lyricslab.config.errors import ConfigError
from lyricslab.tracking import runs as tracking
from lyricslab.tracking.bundle import save_bundle
from lyricslab.training.budget import Budget
from lyricslab.training.callbacks import RoundProgress, ThroughputProbe
from lyricslab.training.fitting import (
    MlflowEpochLogger,
    StopOnNonFiniteLoss,
    budget_callbacks,
    diverged_as_non_finite_loss,
    log_model_size,
    progress_verbosity,
    steps_per_round,
    stopped_by,
)
from lyricslab.training.optim import build_optimizer, scheduler_callbacks

MAX_ROUNDS = 1_000_000  # under a budget: "unbounded"; the budget or early stopping ends the fit
PROBE_MAX_STEPS = 200  # a throughput probe stops sooner: see ThroughputProbe

Compile = Callable[[keras.Model, keras.optimizers.Optimizer], None]


@contextlib.contextmanager
def training_run(cfg: Any, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                 on_run_start: Callable[[str], None] | None = None) -> Iterator[Any]:
    """lyricslab.tracking.runs.training_run, calling `on_run_start(run_id)` as soon as the run exists."""
    running = keras.backend.backend()
    if cfg.get("backend") and str(cfg.backend) != running:  # Keras picks its backend once per process
        raise ConfigError(f"this run asks for backend={cfg.backend} but Keras runs on {running} in this process; "
                          f"start it in a new process (python -m lyricslab.run ...) or set backend={running}")
    tags = {"keras_backend": running, **(tags or {})}
    with tracking.training_run(cfg, parent_run_id=parent_run_id, tags=tags) as run:
        if on_run_start:
            on_run_start(run.info.run_id)
        yield run


def repeats(tr: Any) -> bool:
    """Whether a round may be other than one whole pass (steps_per_epoch, eval_every_*): then the
    training batches must repeat."""
    return bool(tr.steps_per_epoch or tr.get("eval_every_steps") or tr.get("eval_every_minutes"))


def probe_steps_per_second(copy: keras.Model, compile: Compile, cfg: Any, train_ds: Any) -> float:
    """Training steps per second of `copy`, a throwaway twin of the model to train (same shapes,
    optimizer and batches).

    A copy, so the real run's weights, optimizer state and step-keyed lr schedule (which needs the
    round size this sizes) are untouched; the price is one more graph trace and a few steps.
    """
    compile(copy, build_optimizer(cfg, 1))
    timer = ThroughputProbe()
    copy.fit(train_ds, epochs=1, steps_per_epoch=PROBE_MAX_STEPS, shuffle=False, verbose=0, callbacks=[timer])
    return timer.steps_per_second()


def round_callbacks(cfg: Any, monitor: str, scoring: Sequence[keras.callbacks.Callback],
                    extra: Sequence[keras.callbacks.Callback] = (), budget: Budget | None = None
                    ) -> list[keras.callbacks.Callback]:
    """The callbacks of every fit, in the order they must run: Keras hands each the same logs dict,
    so `scoring` (the callbacks that add the round's val metrics, `monitor` among them) comes first,
    then whatever reads them; the progress line last, so it shows them all.

    EarlyStopping restores the best round's weights at the end of training whoever stopped it
    (Keras 3 restores in on_train_end whenever it has seen a round), so a budget stop ends on them too.
    """
    callbacks = [*scoring, MlflowEpochLogger(), StopOnNonFiniteLoss(),
                 keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=cfg.trainer.patience,
                                               restore_best_weights=True),
                 *scheduler_callbacks(cfg.scheduler, monitor)]
    return [*callbacks, *budget_callbacks(cfg, budget), *extra, RoundProgress(budget)]


@dataclass
class Rounds:
    """One fit in evaluation rounds of `steps` training steps (a Keras epoch each)."""

    cfg: Any
    model: keras.Model
    steps: int
    budget: Budget | None
    probe_seconds: float
    trainable: int  # trainable parameters (LoRA: the adapters)
    history: dict[str, list[float]] = field(default_factory=dict)
    fit_seconds: float = 0.0
    budget_used: float | None = None

    def fit(self, train_ds: Any, callbacks: Sequence[keras.callbacks.Callback]) -> dict[str, list[float]]:
        """Train until `trainer.epochs` rounds ran, or under a budget until it is spent (never a round
        count), or early stopping ends it; a diverged run raises NonFiniteLoss. The per-round history."""
        tr = self.cfg.trainer
        start = time.perf_counter()
        with diverged_as_non_finite_loss(self.model):
            self.history = self.model.fit(train_ds, epochs=MAX_ROUNDS if self.budget else tr.epochs,
                                          steps_per_epoch=self.steps, shuffle=False, callbacks=list(callbacks),
                                          verbose=progress_verbosity(tr.verbose)).history
        self.fit_seconds = time.perf_counter() - start
        self.budget_used = self.budget.used_minutes() if self.budget else None
        mlflow.set_tag("stopped_by", stopped_by(callbacks))
        return self.history

    def summary(self, model: keras.Model, best_of: Sequence[str]) -> dict[str, float]:
        """`best_<key>` of the restored round (the lowest `best_of[0]`: the monitored metric) for each
        key of `best_of`; the per-round series keep the plain names. Then the rounds, the size of
        `model` (the trained weights), the training time and the budget."""
        best = int(np.argmin(self.history[best_of[0]]))
        metrics = {f"best_{key}": float(self.history[key][best]) for key in best_of}
        if self.budget is not None:
            metrics.update({"budget_minutes": self.budget.minutes, "budget_used_minutes": self.budget_used})
        metrics.update({"best_round": float(best + 1), "rounds_run": float(len(self.history[best_of[0]])),
                        "params": float(model.count_params()), "trainable_params": float(self.trainable),
                        "train_seconds": self.fit_seconds})
        return metrics


def begin_rounds(cfg: Any, model: keras.Model, batches: int, compile: Compile, probe: Callable[[], float],
                 vocab_size: int, clock: Callable[[], float] = time.perf_counter) -> Rounds:
    """Start the budget (`trainer.budget_minutes`, read from `clock`), size the rounds (steps_per_round;
    `probe()` measures training steps per second for `trainer.eval_every_minutes`), compile `model`
    with the optimizer for that size and log its size."""
    tr = cfg.trainer
    budget = Budget(tr.budget_minutes, clock) if tr.get("budget_minutes") else None
    if budget is not None:
        budget.start()  # before the throughput probe: the budget counts it
    start = time.perf_counter()
    steps = steps_per_round(tr, batches, probe)
    probe_seconds = time.perf_counter() - start
    compile(model, build_optimizer(cfg, steps, budget=budget is not None))
    return Rounds(cfg, model, steps, budget, probe_seconds, log_model_size(model, vocab_size))


@contextlib.contextmanager
def run_artifacts(cfg: Any, tokenizer: Any, model: keras.Model, data_summary: dict[str, Any]) -> Iterator[Path]:
    """A folder with what every run leaves (config.yaml, the tokenizer, the model bundle and
    data_summary.json) for the caller to add to; logged as the run's artifacts at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tokenizer.save(out / "tokenizer")
        save_bundle(out / "model", model, tokenizer, cfg)
        (out / "data_summary.json").write_text(json.dumps(data_summary, indent=2))
        yield out
        mlflow.log_artifacts(tmp)
