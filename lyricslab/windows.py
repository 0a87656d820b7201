"""Token streams -> tf.data batches of (input window, next-token targets, weights)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lyricslab.tokenizers import EOS_ID, PAD_ID


@dataclass
class Windows:
    x: np.ndarray  # (n, seq_len) int32
    y: np.ndarray  # (n, seq_len) int32, x shifted by one
    w: np.ndarray  # (n, seq_len) float32, 0 on padding

    @property
    def tokens(self) -> int:
        return int(self.w.sum())


def make_windows(stream: np.ndarray, seq_len: int, pad_last: bool) -> Windows:
    """Cut one stream into non-overlapping windows.

    The stream starts with <eos> so the first real token is predicted too. Train drops the
    ragged end; val/test pad it (weight 0) so that every token is scored exactly once.
    """
    stream = np.concatenate([[EOS_ID], stream]).astype(np.int32)
    targets = len(stream) - 1
    n = math.ceil(targets / seq_len) if pad_last else targets // seq_len
    if n == 0:
        raise ValueError(f"split has {targets} tokens, fewer than trainer.seq_len={seq_len}; lower trainer.seq_len "
                         f"or use more data")
    needed = n * seq_len + 1
    if len(stream) < needed:
        stream = np.concatenate([stream, np.full(needed - len(stream), PAD_ID, dtype=np.int32)])
    x = stream[: n * seq_len].reshape(n, seq_len)
    y = stream[1:needed].reshape(n, seq_len)
    w = (y != PAD_ID).astype(np.float32)
    return Windows(x, y, w)


def to_dataset(windows: Windows, batch_size: int, shuffle: bool, seed: int, repeat: bool = False):
    """Training batches are full (tokens/s counts exact work); evaluation keeps every window."""
    import tensorflow as tf

    # Training windows are never padded, so their all-ones weights are left out (less work per step);
    # evaluation keeps them so padding is excluded from every metric.
    tensors = (windows.x, windows.y) if shuffle and windows.w.all() else (windows.x, windows.y, windows.w)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(windows.x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    drop = shuffle and len(windows.x) >= batch_size
    return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)
