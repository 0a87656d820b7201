"""The baseline every model must beat: an interpolated Kneser-Ney character n-gram.

Trained on the train split, scored in bits per character exactly like the models: every
character of every song plus one end-of-song mark per song, the songs read as one stream.

Why our own code: nltk.lm's KneserNeyInterpolated scores one n-gram at a time in pure Python
(hours on a few million characters), the `kenlm` wheel only queries ARPA files (estimating one
needs KenLM's C++ `lmplz`, which no package ships), and `knlm` has been unmaintained since 2019.
Counting with numpy sorts does the dev corpus (2.4M characters, order 8) in seconds.

Each n-gram is one uint64, a hash of its characters built left to right (splitmix64 over
"hash of the n-gram one shorter, then the next character"), so the order is not capped by the
alphabet (real lyrics have 500+ distinct characters). With a few million n-grams per order a
collision in 64 bits has a chance of about 1e-7.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

import lyricslab
from lyricslab.scoring import hashing as hashing_module
from lyricslab.scoring import song_cache as song_cache_module
from lyricslab.scoring.hashing import gram_hashes
from lyricslab.scoring.song_cache import fit_and_score

EOS = "\x00"  # the end-of-song symbol; also pads the history before the first song
UNK = "\x01"  # characters never seen in training


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the source of the code the cached figures come from: this module (the n-gram and its
    cache), the n-gram hashes and the song cache (the `*_song_cache` baseline). Part of the cache's key,
    so a changed baseline is recomputed, not read back. Where the source cannot be read (a frozen
    install), the package version stands in."""
    digest = hashlib.sha256()
    for module in (hashing_module, song_cache_module, sys.modules[__name__]):
        try:
            digest.update(inspect.getsource(module).encode())
        except (OSError, TypeError):
            digest.update(f"{module.__name__} {lyricslab.__version__}".encode())
    return digest.hexdigest()[:16]


@dataclass
class _Order:
    """Counts of one order k: n-gram hashes (sorted), their counts, and per-history totals."""

    grams: np.ndarray  # k-gram hashes, sorted
    counts: np.ndarray  # raw counts (highest order) or continuation counts (lower orders)
    histories: np.ndarray  # (k-1)-gram hashes that have followers, sorted
    totals: np.ndarray  # sum of counts over each history's followers
    types: np.ndarray  # number of distinct followers of each history
    discount: float


def _discount(counts: np.ndarray) -> float:
    """Kneser-Ney's D = n1 / (n1 + 2 n2), from how many n-grams occur once and twice."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query, 0 where the key is absent (keys sorted)."""
    if not len(keys):
        return np.zeros(len(queries), dtype=values.dtype)
    pos = np.searchsorted(keys, queries).clip(max=len(keys) - 1)
    return np.where(keys[pos] == queries, values[pos], 0)


class KneserNey:
    """Interpolated Kneser-Ney over characters (Chen & Goodman's formulation, one D per order)."""

    def __init__(self, order: int = 8):
        if order < 1:
            raise ValueError(f"baseline.order must be at least 1, not {order}")
        self.order = order
        self.symbols: dict[str, int] = {}
        self.levels: list[_Order] = []

    # ---- streams -------------------------------------------------------------------------
    def symbol_stream(self, songs: Sequence[str]) -> np.ndarray:
        """Symbol ids of `EOS*(order-1) song EOS song EOS ...`; unknown characters become UNK."""
        text = EOS * (self.order - 1) + "".join(s + EOS for s in songs)
        unk = self.symbols[UNK]
        return np.fromiter((self.symbols.get(ch, unk) for ch in text), dtype=np.uint64, count=len(text))

    # ---- training ------------------------------------------------------------------------
    def fit(self, songs: Sequence[str]) -> "KneserNey":
        alphabet = sorted(set("".join(songs)) - {EOS, UNK})
        self.symbols = {EOS: 0, UNK: 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
        hashes = gram_hashes(self.symbol_stream(songs), self.order)
        positions = np.arange(self.order - 1, len(hashes[0]))  # every scored symbol
        counts: np.ndarray | None = None
        self.levels = [None] * self.order  # type: ignore[list-item]
        # Highest order: raw counts of the n-grams at every position. Each lower order k:
        # continuation counts, i.e. how many distinct symbols precede the k-gram, read off the
        # suffixes of the distinct (k+1)-grams.
        for k in range(self.order, 0, -1):
            grams, first, counts = np.unique(hashes[k][positions], return_index=True, return_counts=True)
            positions = positions[first]  # one occurrence of each distinct k-gram
            history = hashes[k - 1][positions - 1]
            histories, inverse = np.unique(history, return_inverse=True)
            totals = np.bincount(inverse, weights=counts).astype(np.int64)
            types = np.bincount(inverse)
            self.levels[k - 1] = _Order(grams, counts, histories, totals, types, _discount(counts))
        return self

    # ---- scoring -------------------------------------------------------------------------
    def log2_probs(self, songs: Sequence[str]) -> np.ndarray:
        """log2 P(symbol | history) for every character and end-of-song mark of `songs`."""
        hashes = gram_hashes(self.symbol_stream(songs), self.order)
        positions = np.arange(self.order - 1, len(hashes[0]))
        prob = np.full(len(positions), 1.0 / len(self.symbols))  # order 0: uniform over the symbols
        for k in range(1, self.order + 1):
            level = self.levels[k - 1]
            count = _lookup(level.grams, level.counts, hashes[k][positions]).astype(np.float64)
            history = hashes[k - 1][positions - 1]
            total = _lookup(level.histories, level.totals, history).astype(np.float64)
            types = _lookup(level.histories, level.types, history).astype(np.float64)
            seen = total > 0  # an unseen history leaves the lower order's estimate as it is
            d = level.discount
            prob = np.where(seen, (np.maximum(count - d, 0.0) + d * types * prob) / np.where(seen, total, 1.0), prob)
        return np.log2(prob)

    def bits_per_char(self, songs: Sequence[str]) -> float:
        chars = sum(len(s) + 1 for s in songs)
        return float(-self.log2_probs(songs).sum() / max(chars, 1))


def baseline_bpc(train: Sequence[str], evaluate: dict[str, Sequence[str]], order: int = 8,
                 cache: Path | None = None, song_cache: int | None = None) -> dict[str, float]:
    """`{name: bpc}` of a Kneser-Ney n-gram fitted on `train`, cached as JSON when `cache` is given.

    With `song_cache` (its longest context, in characters) and a "val" split among `evaluate`, also
    `{name}_song_cache`: the n-gram mixed with the song cache (lyricslab.scoring.song_cache), whose weights
    are fitted on val. The baseline a model with the same cache must beat.
    """
    with_cache = bool(song_cache) and "val" in evaluate
    names = [*evaluate, *(f"{name}_song_cache" for name in evaluate if with_cache)]
    # The cache's key: the order, the song cache's context and the code that computes them.
    key = {"order": order, "song_cache": song_cache if with_cache else None, "code": code_version()}
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        if all(saved.get(k) == v for k, v in key.items()) and set(names) <= set(saved.get("bpc", {})):
            return {name: saved["bpc"][name] for name in names}
    model = KneserNey(order).fit(train)
    out, probs = {}, {}
    for name, songs in evaluate.items():
        log2_probs = model.log2_probs(songs)
        chars = sum(len(s) + 1 for s in songs)
        out[name] = float(-log2_probs.sum() / max(chars, 1))
        # The symbols with one leading end-of-song mark: the cache's stream layout (targets = stream[1:]).
        symbols = np.concatenate([np.zeros(1, dtype=np.uint64), model.symbol_stream(songs)[order - 1:]])
        probs[name] = (symbols, 2.0 ** log2_probs, chars)
    if with_cache:
        _, bits = fit_and_score({name: p[:2] for name, p in probs.items()}, boundary=0, max_context=int(song_cache))
        out.update({f"{name}_song_cache": bits[name] / max(probs[name][2], 1) for name in evaluate})
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({**key, "bpc": out}))
        tmp.replace(cache)
    return out
