"""64-bit hashes of token n-grams, for counting them with numpy sorts (lyricslab.ngram, lyricslab.song_cache)."""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def gram_hashes(stream: np.ndarray, order: int) -> list[np.ndarray]:
    """hashes[k][i]: the k-gram ending at position i (valid from i = k - 1 on); hashes[0] is the empty history."""
    hashes = [np.full(len(stream), 0x9E3779B97F4A7C15, dtype=np.uint64)]
    for k in range(1, order + 1):
        shorter = np.roll(hashes[k - 1], 1)  # the (k-1)-gram ending one position earlier
        with np.errstate(over="ignore"):
            hashes.append(mix64(shorter * np.uint64(0x100000001B3) + stream))
    return hashes
