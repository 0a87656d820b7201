"""Learning-curve figure for a training run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt

# Masked values only: `nll`/`val_nll` average over real tokens. Keras' `val_loss` would count
# padding in its denominator and sit below the train loss for no real reason.
PANELS = [("next-token NLL (nats per token)", ["nll", "val_nll"]), ("bits per character (full context)", ["val_bpc"]),
          ("accuracy (validation)", ["val_accuracy", "val_top5_accuracy"]),
          ("learning rate", ["lr"])]


def curves(history: dict[str, list[float]]) -> list[tuple[str, dict[str, list[float]]]]:
    """What each panel plots: (title, {series name: per-epoch values})."""
    return [(title, {key: history[key] for key in keys if history.get(key)}) for title, keys in PANELS]


def learning_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Train and val NLL, val bits/char, val accuracy and lr per evaluation round, in one 2x2 PNG."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, series) in zip(axes.flat, curves(history)):
        for key, values in series.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("evaluation round")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
