"""Optimizer and learning-rate schedule from the `optimizer/` and `scheduler/` config groups."""

from __future__ import annotations

from typing import Any, Callable

import keras
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


PROGRESS_STEPS = 10_000  # a budget's spent fraction, in steps of the Keras schedules below


def budget_schedule(cfg: Any, learning_rate: float) -> Callable[[float], float] | None:
    """The lr as a function of the budget's spent fraction (0 to 1); None when nothing decays it on
    a clock (constant; plateau, which val_bpc drives).

    The same Keras schedules as without a budget, read at `fraction × PROGRESS_STEPS` of a run of
    PROGRESS_STEPS steps, so cosine and warmup_cosine have one definition and reach lr × alpha
    when the budget ends. Exponential decay is per epoch without a budget; under one it runs
    from lr to lr × alpha over the budget.
    """
    if cfg.name in ("constant", "plateau"):
        return None
    if cfg.name == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=PROGRESS_STEPS,
                                                               decay_rate=cfg.alpha)
    else:
        schedule = build_schedule(cfg, learning_rate, PROGRESS_STEPS, 1)
    return lambda fraction: float(keras.ops.convert_to_numpy(schedule(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)))


def build_optimizer(cfg: Any, steps_per_epoch: int, budget: bool = False) -> keras.optimizers.Optimizer:
    """The configured optimizer; its lr follows the schedule over `trainer.epochs` rounds of
    `steps_per_epoch` steps, or under a budget (`budget=True`) is a plain settable value that
    LearningRateByProgress moves along `budget_schedule`."""
    lr = float(cfg.optimizer.learning_rate)
    schedule = lr if budget else build_schedule(cfg.scheduler, lr, steps_per_epoch, cfg.trainer.epochs)
    clip = cfg.trainer.gradient_clip
    # The optimizer group holds a partial (`_partial_: true`); the schedule replaces the float lr.
    return instantiate(cfg.optimizer)(learning_rate=schedule, clipnorm=float(clip) if clip else None)


def scheduler_callbacks(cfg: Any, monitor: str = "val_bpc") -> list[keras.callbacks.Callback]:
    """plateau: lower the lr when `monitor` stalls (a causal LM's full-context val_bpc, the number the
    run is judged by; a masked LM's val_masked_nll). The other schedules need no callback."""
    if cfg.name == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="min", factor=cfg.factor,
                                                  patience=cfg.patience, min_lr=cfg.min_lr, verbose=0)]
    return []
