"""Token streams -> model inputs: training windows, and the layouts that score every token once.

Three layouts, each with weights that are 0 on padding (and, when windows overlap, on tokens an
earlier window already scored), so sums over weighted tokens count every real token exactly once:
- `make_windows`: non-overlapping windows (training; the cheap "windowed" evaluation);
- `sliding_windows`: overlapping windows for full-context transformer scoring;
- `parallel_streams`: a few long contiguous rows for carried-state RNN scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lyricslab.text.tokenizers import EOS_ID, PAD_ID


@dataclass
class Windows:
    x: np.ndarray  # (n, seq_len) int32
    y: np.ndarray  # (n, seq_len) int32, x shifted by one
    w: np.ndarray  # (n, seq_len) float32, 1 where a token is scored, 0 on padding
    pos: np.ndarray | None = None  # (n, seq_len) each target's index in the scored stream (full-context layouts)

    @property
    def tokens(self) -> int:
        return int(self.w.sum())


def with_start(stream: np.ndarray) -> np.ndarray:
    """The stream with a leading <eos>, so that its first real token is predicted too."""
    stream = np.concatenate([[EOS_ID], stream]).astype(np.int32)
    if len(stream) < 2:
        raise ValueError("split has no tokens to score; use more data or a larger data_size")
    return stream


def make_windows(stream: np.ndarray, seq_len: int, pad_last: bool) -> Windows:
    """Cut one stream into non-overlapping windows.

    Train drops the ragged end; val/test pad it (weight 0) so that every token is scored exactly once.
    """
    stream = with_start(stream)
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


def sliding_windows(stream: np.ndarray, context: int, stride: int, batch_size: int) -> Iterator[Windows]:
    """Overlapping windows of `context` tokens, `stride` apart, in batches (built lazily: they overlap).

    The first window scores all its targets; every later one only its last `stride` targets, the
    ones no earlier window scored. So each target is scored once, and every target past the first
    window sees at least `context - stride` tokens before it.
    """
    if not 0 < stride <= context:
        raise ValueError(f"trainer.eval_stride must be between 1 and the context ({context}), not {stride}")
    stream = with_start(stream)
    targets = len(stream) - 1
    count = 1 + max(math.ceil((targets - context) / stride), 0)
    last = (count - 1) * stride + context + 1  # the right-padded stream covers every window's inputs and targets
    padded = np.concatenate([stream, np.full(max(last - len(stream), 0), PAD_ID, dtype=np.int32)])
    offsets = np.arange(context)
    for first in range(0, count, batch_size):
        starts = np.arange(first, min(first + batch_size, count)) * stride
        positions = starts[:, None] + offsets  # target j is stream[j + 1], predicted from stream[: j + 1]
        new_from = np.where(starts == 0, 0, starts + context - stride)[:, None]
        scored = (positions >= new_from) & (positions < targets)
        yield Windows(padded[positions], padded[positions + 1], scored.astype(np.float32), positions)


def parallel_streams(stream: np.ndarray, rows: int, chunk: int) -> Windows:
    """The stream cut into `rows` contiguous rows of equal length (a multiple of `chunk`).

    A model that carries its state along each row, `chunk` tokens at a time, conditions every
    token on everything before it in its row; only the rows' first tokens start from nothing.
    The end of the last row is padding (weight 0).
    """
    stream = with_start(stream)
    targets = len(stream) - 1
    rows = max(1, min(rows, math.ceil(targets / chunk)))  # no row made of padding alone
    length = math.ceil(targets / (rows * chunk)) * chunk
    total = rows * length
    pad = np.full(total - targets, PAD_ID, dtype=np.int32)
    x = np.concatenate([stream[:-1], pad]).reshape(rows, length)
    y = np.concatenate([stream[1:], pad]).reshape(rows, length)
    w = (np.arange(total) < targets).astype(np.float32).reshape(rows, length)
    return Windows(x, y, w, np.arange(total).reshape(rows, length))


def carried_batches(stream: np.ndarray, rows: int, chunk: int) -> Windows:
    """Training batches for carried state (truncated backprop through time, as char-rnn does).

    The stream is cut into `rows` parallel rows (`parallel_streams`); batch k holds chunk k of every
    row, in row order, so row i of batch k+1 continues row i of batch k, and a stateful RNN that
    carries its state from batch to batch sees each row as one long sequence. Taken in order, never
    shuffled: `lyricslab.training.batches.to_dataset(..., batch_size=rows, shuffle=False)`.
    """
    parallel = parallel_streams(stream, rows, chunk)
    if len(parallel.x) != rows:  # a stateful model's batch size is fixed: every batch needs all its rows
        raise ValueError(f"the train split has too few tokens for {rows} rows of trainer.seq_len={chunk}; "
                         f"lower trainer.batch_size or trainer.seq_len, or use more data")
    n = parallel.x.shape[1] // chunk

    def time_major(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), n, chunk).transpose(1, 0, 2).reshape(-1, chunk)

    return Windows(time_major(parallel.x), time_major(parallel.y), time_major(parallel.w))
