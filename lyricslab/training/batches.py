"""Training and evaluation batches of token windows, as numpy: the input pipeline every backend reads.

A `keras.utils.PyDataset` rather than `tf.data`: Keras hands it to TensorFlow as a dataset and to
JAX as numpy arrays itself, and it needs no TensorFlow at all (a JAX-only GPU machine has none).
Slicing numpy windows costs microseconds next to a training step.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from lyricslab.text.windows import Windows


class WindowBatches(keras.utils.PyDataset):
    """Batches of `windows`: shuffled afresh on every pass (`shuffle`) or in order (carried state);
    endless with `repeat`, for rounds of `steps_per_epoch` steps that run on across passes."""

    def __init__(self, windows: Windows, batch_size: int, shuffle: bool, seed: int, repeat: bool = False):
        super().__init__()
        # Training windows are never padded, so their all-ones weights are left out (less work per step);
        # evaluation keeps them so padding is excluded from every metric.
        keep_weights = not (shuffle and windows.w.all())
        self.arrays = (windows.x, windows.y, windows.w) if keep_weights else (windows.x, windows.y)
        self.rows, self.batch_size, self.shuffle, self.seed, self.repeat = len(windows.x), batch_size, shuffle, seed, repeat
        # Training batches are full (tokens/s counts exact work); evaluation keeps every window.
        full = shuffle and self.rows >= batch_size
        self.per_pass = self.rows // batch_size if full else math.ceil(self.rows / batch_size)
        self.passes = 0  # finished passes, when not endless (Keras calls on_epoch_end after each)
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def num_batches(self) -> int | None:
        return None if self.repeat else self.per_pass

    def __len__(self) -> int:
        return self.per_pass

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.rows))
        return self._order[1]

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.per_pass)
        epoch += self.passes
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        if self.shuffle:
            rows = self.order(epoch)[rows]
        return tuple(a[rows] for a in self.arrays)

    def on_epoch_end(self) -> None:
        if not self.repeat:
            self.passes += 1


def to_dataset(windows: Windows, batch_size: int, shuffle: bool, seed: int, repeat: bool = False) -> WindowBatches:
    return WindowBatches(windows, int(batch_size), shuffle, int(seed), repeat)
