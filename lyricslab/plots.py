"""Learning-curve figure for a training run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402


def learning_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Loss, val bits/char, accuracy and lr per epoch, in one 2x2 PNG."""
    panels = [("loss", ["loss", "val_loss"]), ("bits per character", ["val_bpc"]),
              ("accuracy", ["accuracy", "val_accuracy", "top5_accuracy", "val_top5_accuracy"]),
              ("learning rate", ["lr"])]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
