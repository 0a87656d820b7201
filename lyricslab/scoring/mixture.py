"""The network, the character n-gram and the song cache mixed into one predictor, weights fitted on val.

The network and the Kneser-Ney n-gram are good at different things: the n-gram remembers exact
spellings and rare phrases of the training songs for free, the network generalises. A linear
mixture of the two (Jelinek-Mercer interpolation) codes held-out text better than either, and the
song cache (lyricslab.scoring.song_cache) adds what the song itself has said:

    p(unit) = a_b * p_network(unit) + g_b * p_ngram(unit) + c_b * p_cache(unit),  a_b + g_b + c_b = 1

with one weight triple per song-cache bucket b (the longest earlier match in the song, and whether
its followers agreed), fitted by EM on the val split and applied unchanged to test.

The three do not share a tokenizer: the n-gram predicts characters, the network predicts tokens
(a structure tag is one token of many characters; a character the vocabulary lacks is several
UTF-8 byte tokens). So they are mixed per *unit*: the shortest run of tokens that covers whole
characters, scored as the product of its tokens' (or its characters') probabilities. For the char
tokenizer almost every unit is one character, and the mixture is the exact per-character one.

EM maximises a concave likelihood, so it converges to the best weights; after a finite number of
iterations each bucket also keeps whichever of the EM weights and each single component codes
that bucket's val units best. The buckets are independent, so the fitted mixture never codes val
worse than its best component alone.

Why our own code: no library mixes language models across tokenizations; the EM is the song
cache's, with three components instead of two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lyricslab.scoring.song_cache import LENGTH_EDGES, CacheFeatures
from lyricslab.text.tokenizers import BYTES_START, EOS_ID, Tokenizer

EM_ITERATIONS = 200
BUCKETS = 2 * len(LENGTH_EDGES)
COMPONENTS = ("network", "ngram", "cache")
ARTIFACT = "mixture.json"


def char_lengths(tokenizer: Tokenizer) -> np.ndarray | None:
    """Characters each token id spells, for a tokenizer whose tokens are strings (char, word); None
    for one whose tokens split characters at arbitrary bytes (byte-level BPE).

    <eos> counts one (the n-gram's end-of-song mark). A UTF-8 byte token counts one if it starts a
    character and 0 if it continues one, so a unit ends where a character does."""
    tokens = getattr(tokenizer, "tokens", None)
    if tokens is None:
        return None
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    byte = np.arange(256)
    lengths[BYTES_START:BYTES_START + 256] = ~((byte >= 0x80) & (byte < 0xC0))  # continuation bytes: 0
    lengths[:BYTES_START] = [len(t) for t in tokens[:BYTES_START]]
    lengths[EOS_ID] = 1
    lengths[:EOS_ID] = 0  # <pad>, <unk>: never in a stream
    return lengths


@dataclass
class Units:
    """A stream's scored tokens grouped into units of whole characters."""

    token_unit: np.ndarray  # the unit of each scored token
    char_unit: np.ndarray  # the unit of each character (n-gram position)
    scored: np.ndarray  # bool per target: a scored token (not a control token)
    count: int


def units_of(stream: np.ndarray, token_nll: np.ndarray, lengths: np.ndarray, chars: int) -> Units | None:
    """The units of `stream` (targets in stream order, `token_nll` NaN where not scored); None when the
    scored tokens do not spell exactly `chars` characters (the n-gram's stream), so nothing is mixed."""
    scored = np.isfinite(token_nll)
    spelled = lengths[np.asarray(stream)[scored]]
    if int(spelled.sum()) != chars or (len(spelled) and spelled[0] == 0):
        return None
    token_unit = np.cumsum(spelled > 0) - 1  # a token that spells no whole character joins the previous unit
    count = int(token_unit[-1]) + 1 if len(token_unit) else 0
    starts = np.flatnonzero(spelled > 0)
    char_unit = np.repeat(token_unit[starts], spelled[starts])
    return Units(token_unit, char_unit, scored, count)


def unit_probs(units: Units, token_nll: np.ndarray, ngram_log2: np.ndarray, cache: CacheFeatures
               ) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, shape (units, 3): network, n-gram, cache; the cache bucket of each unit's first token)."""
    log_net = np.bincount(units.token_unit, weights=-token_nll[units.scored], minlength=units.count)
    log_ngram = np.bincount(units.char_unit, weights=ngram_log2 * np.log(2.0), minlength=units.count)
    with np.errstate(divide="ignore"):
        log_cache = np.bincount(units.token_unit, weights=np.log(cache.prob[units.scored]), minlength=units.count)
    first = np.r_[True, units.token_unit[1:] != units.token_unit[:-1]]
    bucket = cache.bucket[units.scored][first]
    return np.exp(np.stack([log_net, log_ngram, log_cache], axis=1)), bucket


def _bucket_bits(probs: np.ndarray, bucket: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bits of each bucket's units under `weights` (buckets x 3)."""
    mixed = (probs * weights[bucket]).sum(axis=1)
    return np.bincount(bucket, weights=-np.log2(np.maximum(mixed, 1e-300)), minlength=len(weights))


@dataclass
class Mixture:
    """One weight triple (network, n-gram, cache) per song-cache bucket."""

    weights: list[list[float]] = field(default_factory=lambda: [[1.0, 0.0, 0.0]] * BUCKETS)

    def fit(self, probs: np.ndarray, bucket: np.ndarray) -> "Mixture":
        """EM on val units, then per bucket the best of the EM weights and each component alone."""
        counts = np.bincount(bucket, minlength=BUCKETS)
        w = np.tile([0.5, 0.3, 0.2], (BUCKETS, 1))
        w[:2] = [0.6, 0.4, 0.0]  # buckets 0 and 1: no earlier match, the cache says nothing
        for _ in range(EM_ITERATIONS):
            share = probs * w[bucket]
            total = share.sum(axis=1, keepdims=True)
            share = np.divide(share, total, out=np.zeros_like(share), where=total > 0)
            sums = np.stack([np.bincount(bucket, weights=share[:, k], minlength=BUCKETS) for k in range(3)], axis=1)
            w = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], w)
        candidates = [w, *(np.tile(np.eye(3)[k], (BUCKETS, 1)) for k in range(3))]
        bits = np.stack([_bucket_bits(probs, bucket, c) for c in candidates])  # candidates x buckets
        best = bits.argmin(axis=0)
        self.weights = [[float(x) for x in candidates[best[b]][b]] for b in range(BUCKETS)]
        return self

    def bits(self, probs: np.ndarray, bucket: np.ndarray) -> float:
        """Total code length of the units, in bits."""
        return float(_bucket_bits(probs, bucket, np.asarray(self.weights)).sum())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"components": list(COMPONENTS), "length_edges": list(LENGTH_EDGES),
                                    "weights": self.weights}, indent=1))
