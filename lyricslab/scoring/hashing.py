"""64-bit hashes of token n-grams, for counting them with numpy sorts (lyricslab.scoring.ngram, lyricslab.scoring.song_cache)."""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def extend_hashes(shorter: np.ndarray, stream: np.ndarray) -> np.ndarray:
    """From the (k-1)-gram hash ending at each position, the k-gram's: hash of the (k-1)-gram
    ending one position earlier, then this position's symbol."""
    with np.errstate(over="ignore"):
        return mix64(np.roll(shorter, 1) * np.uint64(0x100000001B3) + stream)


def gram_hashes(stream: np.ndarray, order: int) -> list[np.ndarray]:
    """hashes[k][i]: the k-gram ending at position i (valid from i = k - 1 on); hashes[0] is the empty history."""
    hashes = [np.full(len(stream), 0x9E3779B97F4A7C15, dtype=np.uint64)]
    for _ in range(order):
        hashes.append(extend_hashes(hashes[-1], stream))
    return hashes
