"""Optimizer and learning-rate schedule from the `optimizer/` and `scheduler/` config groups."""

from __future__ import annotations

from typing import Any

from lyricslab.runtime import quiet_tensorflow

quiet_tensorflow()  # before keras: TensorFlow's start-up lines stay off the console
import keras  # noqa: E402
from hydra.utils import instantiate


def build_schedule(cfg: Any, learning_rate: float, steps_per_epoch: int, epochs: int):
    """A float (constant, plateau) or a keras LearningRateSchedule."""
    name = cfg.name
    total = max(steps_per_epoch * epochs, 1)
    if name in ("constant", "plateau"):  # plateau: ReduceLROnPlateau edits the lr during fit
        return learning_rate
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=max(steps_per_epoch, 1),
                                                           decay_rate=cfg.decay_rate)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total, alpha=cfg.alpha)
    if name == "warmup_cosine":
        warmup = max(int(total * cfg.warmup_fraction), 1)
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(total - warmup, 1), alpha=cfg.alpha,
                                                      warmup_target=learning_rate, warmup_steps=warmup)
    raise ValueError(f"unknown scheduler.name {name!r}; choose constant, exponential, cosine, warmup_cosine or plateau")


def build_optimizer(cfg: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    schedule = build_schedule(cfg.scheduler, float(cfg.optimizer.learning_rate), steps_per_epoch, cfg.trainer.epochs)
    clip = cfg.trainer.gradient_clip
    # The optimizer group holds a partial (`_partial_: true`); the schedule replaces the float lr.
    return instantiate(cfg.optimizer)(learning_rate=schedule, clipnorm=float(clip) if clip else None)


def scheduler_callbacks(cfg: Any) -> list[keras.callbacks.Callback]:
    if cfg.name == "plateau":  # on the full-context val_bpc, the number the run is judged by
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_bpc", mode="min", factor=cfg.factor,
                                                  patience=cfg.patience, min_lr=cfg.min_lr, verbose=0)]
    return []
