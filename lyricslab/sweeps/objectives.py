"""The metrics a sweep may optimise: the names `lyricslab.training.train.train()` returns, with their direction.

Kept apart from train.py so that checking a sweep file needs no TensorFlow. A test checks this
table against what a real trial returns, so a renamed metric fails there, not after a sweep.
"""

from __future__ import annotations

from typing import Mapping

MIN, MAX = "minimize", "maximize"

# What the per-epoch Keras logs carry (compile_model's metrics plus callbacks.DerivedMetrics):
# the names a pruner can watch epoch by epoch.
PER_EPOCH = ("val_bpc", "val_nll", "val_perplexity", "val_accuracy", "val_top5_accuracy")

# The best (restored) epoch's validation metrics, returned as best_<name>; <name> is accepted too
# and means the same value (train() also returns val_bpc itself).
BEST_EPOCH = {"val_bpc": MIN, "val_nll": MIN, "val_perplexity": MIN, "val_accuracy": MAX, "val_top5_accuracy": MAX}

OBJECTIVES: dict[str, str | None] = {
    **BEST_EPOCH,
    **{f"best_{name}": direction for name, direction in BEST_EPOCH.items()},
    # Cost: a Pareto front of quality against time or size.
    "train_seconds": MIN, "wall_seconds": MIN, "eval_seconds": MIN, "sample_seconds": MIN, "params": MIN,
    "train_tokens_per_sec": MAX,
    # Generated lyrics (lyric_metrics.py). None: no better direction; the sweep file must say which.
    "distinct_1": MAX, "distinct_2": MAX, "structure_validity": MAX, "repetition": MIN, "copy_rate": MIN,
    "rhyme_density": None, "words_per_line": None, "lines_per_section": None,
}

# Test-split metrics train() also returns; choosing models by them would leak the test split.
TEST_TO_VAL = {"test_bpc": "val_bpc", "test_nll": "val_nll", "test_perplexity": "val_perplexity",
               "test_accuracy": "val_accuracy"}


class ObjectiveError(ValueError):
    pass


def check(metric: str, direction: str | None) -> str:
    """The objective's direction (inferred when not given); ObjectiveError says what to write instead."""
    if metric.startswith("test_"):
        instead = TEST_TO_VAL.get(metric)
        hint = f"use {instead} (the validation split) instead" if instead else \
            f"use a validation metric ({', '.join(BEST_EPOCH)})"
        raise ObjectiveError(f"objective {metric} would select models on the test split; {hint}")
    if metric not in OBJECTIVES:
        raise ObjectiveError(f"objective {metric!r} is not a metric train() returns; choose one of "
                             f"{', '.join(OBJECTIVES)}")
    known = OBJECTIVES[metric]
    if direction is None:
        if known is None:
            raise ObjectiveError(f"objective {metric} has no natural direction; write {metric}:maximize "
                                 f"or {metric}:minimize")
        return known
    if direction not in (MIN, MAX):
        raise ObjectiveError(f"objective {metric}: direction must be minimize or maximize, not {direction!r}")
    if known is not None and direction != known:
        raise ObjectiveError(f"objective {metric} is better when {'higher' if known == MAX else 'lower'}; "
                             f"write {metric}:{known} (or leave the direction out)")
    return direction


def per_epoch_name(metric: str) -> str | None:
    """The per-epoch log a pruner watches for this objective (val_nll for best_val_nll), if any."""
    name = metric.removeprefix("best_")
    return name if name in PER_EPOCH else None


def value(metric: str, metrics: Mapping[str, float]) -> float:
    """The objective's value in train()'s result, reading val_X and best_X as one metric."""
    for name in (metric, f"best_{metric}", metric.removeprefix("best_")):
        if name in metrics:
            return float(metrics[name])
    raise KeyError(f"objective metric {metric} not produced by train(); known: {sorted(metrics)}")
