"""The song cache: a model's next-token probabilities mixed with what the song itself has said so far.

Songs repeat themselves: on the dev corpus about a third of the held-out characters sit in lines
that repeat an earlier line of the same song (choruses, hooks, refrains). A model trained on other
songs cannot know those lines, and a few hundred CPU-minutes do not teach a network to copy them.
A cache model does (Kuhn & De Mori 1990; Grave et al. 2017 "neural cache"): at each position it
finds the longest context, up to `max_context` tokens, that already occurred earlier in the same
song, and predicts what followed it there. Its prediction is mixed with the model's:

    p(token) = (1 - w) * p_model(token) + w * p_cache(token)

with one weight `w` per match length (bucketed) and per "did every earlier occurrence agree", fitted
by EM on the validation split and then applied unchanged to test and to generation. A 30-character
match that always continued the same way earns a weight near 1; a 2-character one, about 0.

It works on token ids, so it serves every tokenizer and the character n-gram baseline alike, and it
never sees another song: each song's cache starts empty.

Why our own code: no maintained library offers a cache LM over arbitrary token streams (KenLM,
nltk.lm and the neural-cache papers' code are word-level or research scripts). Counting with numpy
sorts, one pass per context length, scores the dev corpus's test split in about a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lyricslab.scoring.hashing import extend_hashes, gram_hashes, mix64

MAX_CONTEXT = 40  # tokens; longer matches add little: a repeated line is long past this
# Match lengths that share a weight (each bucket also splits on whether earlier occurrences agreed).
LENGTH_EDGES = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 36, 40)
EM_ITERATIONS = 60
ARTIFACT = "song_cache.json"  # the fitted weights, beside a run's model


@dataclass
class CacheFeatures:
    """Per target of a stream: the longest earlier match's bucket and the cache's probability of the target."""

    bucket: np.ndarray  # int64, 0 = no earlier match (weight 0)
    prob: np.ndarray  # float64, the cache's probability of the actual target (0 without a match)
    length: np.ndarray  # int64, the match length in tokens


class _Groups:
    """Equal keys as groups, positions in stream order inside each; one sort serves every query."""

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")  # stable: inside a group, positions stay in stream order
        ranked = keys[self.order]
        new = np.r_[True, ranked[1:] != ranked[:-1]]
        self.starts = np.flatnonzero(new)
        self.group_of = np.cumsum(new) - 1

    def _unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty(len(sorted_values), dtype=np.int64)
        out[self.order] = sorted_values
        return out

    def earlier(self) -> np.ndarray:
        """For each i: how many j < i share its key."""
        return self._unsort(np.arange(len(self.order)) - self.starts[self.group_of])

    def earlier_sum(self, values: np.ndarray) -> np.ndarray:
        """For each i: the sum of values[j] over the j < i that share its key."""
        v = values[self.order].astype(np.int64)
        running = np.cumsum(v) - v  # exclusive prefix sums, then rebased to each group's start
        return self._unsort(running - running[self.starts][self.group_of])


def bucket_of(length: np.ndarray, agreed: np.ndarray) -> np.ndarray:
    """The weight index of each (match length, all earlier followers agreed) pair."""
    edge = np.searchsorted(np.asarray(LENGTH_EDGES), length, side="right") - 1
    return edge * 2 + agreed.astype(np.int64)


CHUNK_TARGETS = 2_000_000  # songs are featurised in pieces of about this many tokens: memory stays bounded


def cache_features(stream: np.ndarray, boundary: int, max_context: int = MAX_CONTEXT,
                   chunk: int = CHUNK_TARGETS) -> CacheFeatures:
    """Features for the targets `stream[1:]`; `stream[0]` and every `boundary` token start a song.

    A target's context is the stream up to it inside its own song (the boundary that opens the song
    included), so nothing crosses from one song to the next, and a long stream can be cut at song
    starts into pieces of about `chunk` targets, each featurised on its own, with the same result.
    """
    stream = np.asarray(stream)
    n = len(stream) - 1
    opens = np.flatnonzero(stream[:max(n, 0)] == boundary)
    cuts = [0]
    for target in range(chunk, n, chunk):  # the first song start at or after each multiple of chunk
        at = opens[np.searchsorted(opens, target):][:1]
        if len(at) and at[0] > cuts[-1]:
            cuts.append(int(at[0]))
    cuts.append(max(n, 0))
    pieces = [_features(stream[a:b + 1], boundary, max_context) for a, b in zip(cuts[:-1], cuts[1:])]
    if len(pieces) == 1:
        return pieces[0]
    return CacheFeatures(*(np.concatenate([getattr(p, name) for p in pieces]) for name in ("bucket", "prob", "length")))


def _features(stream: np.ndarray, boundary: int, max_context: int) -> CacheFeatures:
    stream = stream.astype(np.uint64)
    n = len(stream) - 1  # targets: stream[t + 1] follows the context ending at stream[t]
    length = np.zeros(max(n, 0), dtype=np.int64)
    prob = np.zeros(max(n, 0))
    agreed = np.zeros(max(n, 0), dtype=bool)
    if n <= 0:
        return CacheFeatures(np.zeros(0, dtype=np.int64), prob, length)
    opens = (stream[:n] == np.uint64(boundary))
    opens[0] = True
    song = np.cumsum(opens) - 1  # song index of the context position t
    start = np.flatnonzero(opens)[song]  # where that song's context begins
    room = np.arange(n) - start + 1  # tokens of same-song context available at t
    targets = stream[1:]
    salt = mix64(song.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
    hashes = gram_hashes(stream[:n], 0)[0]  # the empty context; longer ones are built one length at a time
    for k in range(1, max_context + 1):
        hashes = extend_hashes(hashes, stream[:n])  # the k-gram ending at each position
        valid = np.flatnonzero(room >= k)
        if not len(valid):
            break
        with np.errstate(over="ignore"):
            context = mix64(hashes[valid] ^ salt[valid])
            pair = mix64(context * np.uint64(0x100000001B3) + targets[valid])
        groups = _Groups(context)
        seen = groups.earlier()  # earlier occurrences of this context in the song
        if not seen.any():
            break  # no context of this length repeats: none longer can either
        same = _Groups(pair).earlier()  # ... that were followed by this target
        first = (same == 0).astype(np.int64)  # the first time this context was followed by this target
        kinds = groups.earlier_sum(first)  # distinct followers before this position
        hit = seen > 0
        at = valid[hit]
        length[at] = k
        prob[at] = same[hit] / seen[hit]
        agreed[at] = kinds[hit] == 1
    return CacheFeatures(bucket_of(length, agreed), prob, length)


@dataclass
class SongCache:
    """Mixing weights per bucket; `fit` on validation targets, then `mix` anywhere."""

    weights: list[float] = field(default_factory=lambda: [0.0] * (2 * len(LENGTH_EDGES)))
    max_context: int = MAX_CONTEXT

    def fit(self, model_prob: np.ndarray, features: CacheFeatures) -> "SongCache":
        """EM on the mixture weights: each bucket's weight becomes the mean responsibility of the cache."""
        keep = np.isfinite(model_prob)
        p, q, b = model_prob[keep], features.prob[keep], features.bucket[keep]
        size = 2 * len(LENGTH_EDGES)
        counts = np.bincount(b, minlength=size)
        w = np.where(np.arange(size) >= 2, 0.5, 0.0)  # bucket 0/1: no match, the cache says nothing
        for _ in range(EM_ITERATIONS):
            mixed = (1 - w[b]) * p + w[b] * q
            share = np.divide(w[b] * q, mixed, out=np.zeros_like(q), where=mixed > 0)
            w = np.bincount(b, weights=share, minlength=size) / np.maximum(counts, 1)
        w[:2] = 0.0
        self.weights = [float(x) for x in w]
        return self

    def mix(self, model_prob: np.ndarray, features: CacheFeatures) -> np.ndarray:
        """The mixed probability of each actual target (NaN where the model's is NaN: not scored)."""
        w = np.asarray(self.weights)[features.bucket]
        return (1 - w) * model_prob + w * features.prob

    def bits(self, model_prob: np.ndarray, features: CacheFeatures) -> float:
        """Total code length, in bits, of the scored targets under the mixture."""
        mixed = self.mix(model_prob, features)
        mixed = mixed[np.isfinite(mixed)]
        return float(-np.log2(np.maximum(mixed, 1e-300)).sum())

    def next_token_probs(self, model_probs: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """The mixed distribution over the vocabulary after `history` (one song's tokens so far), for sampling."""
        history = list(history)
        found: list[int] = []
        k = 0
        # Longest match first would rescan the history for every length; matches are nested (a repeat of
        # k tokens repeats its last k - 1), so grow k until nothing repeats.
        for length in range(1, min(self.max_context, len(history) - 1) + 1):
            context = history[-length:]
            followers = [history[i + length] for i in range(len(history) - length)
                         if history[i:i + length] == context]
            if not followers:
                break
            found, k = followers, length
        if not found:
            return model_probs
        counts = np.bincount(found, minlength=len(model_probs))[:len(model_probs)].astype(np.float64)
        agreed = int((counts > 0).sum()) == 1
        w = self.weights[int(bucket_of(np.array([k]), np.array([agreed]))[0])]
        return (1 - w) * model_probs + w * counts / max(counts.sum(), 1.0)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"max_context": self.max_context, "length_edges": list(LENGTH_EDGES),
                                    "weights": self.weights}, indent=1))

    @classmethod
    def load(cls, path: Path) -> "SongCache":
        saved = json.loads(Path(path).read_text())
        if list(saved.get("length_edges", [])) != list(LENGTH_EDGES):
            raise ValueError(f"{path} was fitted with other match-length buckets; retrain or refit it")
        return cls(weights=[float(w) for w in saved["weights"]], max_context=int(saved["max_context"]))


def fit_and_score(splits: dict[str, tuple[np.ndarray, np.ndarray]], boundary: int,
                  max_context: int = MAX_CONTEXT, fit_on: str = "val") -> tuple[SongCache, dict[str, float]]:
    """Fit the weights on `splits[fit_on]` = (stream, model probability per target) and return the total
    bits of every split by name (the fitted split's own figure is fitted on itself, so slightly
    optimistic). Each split's features are computed once, for fitting and scoring alike."""
    features = {name: cache_features(stream, boundary, max_context) for name, (stream, _) in splits.items()}
    cache = SongCache(max_context=max_context).fit(splits[fit_on][1], features[fit_on])
    return cache, {name: cache.bits(prob, features[name]) for name, (_, prob) in splits.items()}
