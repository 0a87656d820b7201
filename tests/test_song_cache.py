"""The song cache: vectorised features against a brute-force reference, no leaks across songs, EM
weights that pay, and the same mixture at sampling time as at scoring time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lyricslab.scoring.song_cache import (
    LENGTH_EDGES,
    SongCache,
    bucket_of,
    cache_features,
    fit_and_score,
)

BOUNDARY = 0


def reference(stream: list[int], max_context: int):
    """Longest earlier same-song match of each target's context, by brute force."""
    lengths, probs, agreed = [], [], []
    start = 0
    for t in range(len(stream) - 1):
        if t == 0 or stream[t] == BOUNDARY:
            start = t
        history = stream[start:t + 1]
        best, followers = 0, []
        for k in range(1, min(max_context, len(history)) + 1):
            context = history[-k:]
            found = [history[i + k] for i in range(len(history) - k) if history[i:i + k] == context]
            if not found:
                break
            best, followers = k, found
        lengths.append(best)
        probs.append(followers.count(stream[t + 1]) / len(followers) if followers else 0.0)
        agreed.append(len(set(followers)) == 1)
    return np.array(lengths), np.array(probs), np.array(agreed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    # A small alphabet and copied stretches, so long matches, disagreements and several songs all occur.
    stream = [BOUNDARY]
    for _ in range(4):
        song = list(rng.integers(1, 4, size=30))
        song += song[5:20] + list(rng.integers(1, 4, size=10))
        stream += song + [BOUNDARY]
    lengths, probs, agreed = reference(stream, max_context=8)
    features = cache_features(np.array(stream), BOUNDARY, max_context=8)
    assert np.array_equal(features.length, lengths)
    assert np.allclose(features.prob, probs)
    assert np.array_equal(features.bucket, bucket_of(lengths, agreed & (lengths > 0)))


def test_long_streams_are_cut_at_song_starts_with_the_same_result():
    rng = np.random.default_rng(5)
    stream = [BOUNDARY]
    for _ in range(30):
        song = list(rng.integers(1, 5, size=int(rng.integers(5, 40))))
        stream += song + song[2:12] + [BOUNDARY]
    stream = np.array(stream)
    whole = cache_features(stream, BOUNDARY)
    for chunk in (1, 7, 50, 200):
        cut = cache_features(stream, BOUNDARY, chunk=chunk)
        assert np.array_equal(cut.length, whole.length) and np.array_equal(cut.bucket, whole.bucket)
        assert np.array_equal(cut.prob, whole.prob)


def test_nothing_crosses_from_one_song_to_the_next():
    song = [5, 6, 7, 8, 9]
    features = cache_features(np.array([BOUNDARY, *song, BOUNDARY, *song, BOUNDARY]), BOUNDARY)
    second = slice(len(song) + 1, 2 * len(song) + 1)  # the targets of the second, identical song
    assert features.length[second].max() <= 1  # only the opening <boundary> itself: never the first song
    assert np.all(features.prob[second][1:] == 0)


def test_fitted_weights_pay_on_repeated_lines_and_stay_off_without_them():
    rng = np.random.default_rng(0)

    def songs(n):
        stream = [BOUNDARY]
        for _ in range(n):
            verse, chorus = list(rng.integers(1, 30, size=40)), list(rng.integers(1, 30, size=25))
            stream += chorus + verse + chorus + list(rng.integers(1, 30, size=40)) + chorus + [BOUNDARY]
        return np.array(stream)

    val, test = songs(20), songs(20)
    uniform = {name: np.full(len(s) - 1, 1 / 30) for name, s in (("val", val), ("test", test))}
    cache, bits = fit_and_score({"val": (val, uniform["val"]), "test": (test, uniform["test"])},
                                BOUNDARY)
    plain = -np.log2(uniform["test"]).sum()
    # 50 of each song's 170 tokens repeat its chorus (29%): nearly free once the repeat is recognised.
    assert bits["test"] < 0.82 * plain
    long_agreed, short = bucket_of(np.array([24, 2]), np.array([True, True]))
    assert cache.weights[long_agreed] > 0.5 > cache.weights[short]  # a long match is trusted, a 2-token one is not
    assert cache.weights[0] == 0.0  # no match: the model alone

    def noise(n):  # songs of the same length that never repeat a line
        return np.array([BOUNDARY] + [t for _ in range(n) for t in [*rng.integers(1, 30, size=170), BOUNDARY]])

    # Fitted on repeats, scored on a disjoint split without any: nothing to copy, so no gain (a cache
    # that saw its targets would win here), and the weights on short matches cost under 2%.
    noise_test = noise(20)
    flat = np.full(len(noise_test) - 1, 1 / 30)
    _, bits = fit_and_score({"val": (val, uniform["val"]), "noise": (noise_test, flat)}, BOUNDARY)
    assert -np.log2(flat).sum() <= bits["noise"] < 1.02 * -np.log2(flat).sum()
    # Fitted on songs without repeats, the weights stay off, so the test songs' choruses earn nothing:
    # scored with weights fitted on the test split itself they would cost about 0.78 of plain.
    noise_val = noise(20)
    cache, bits = fit_and_score({"val": (noise_val, np.full(len(noise_val) - 1, 1 / 30)),
                                 "test": (test, uniform["test"])}, BOUNDARY)
    assert max(cache.weights) < 0.05
    assert bits["test"] > 0.99 * plain


def test_sampling_mixture_matches_the_scoring_mixture():
    rng = np.random.default_rng(3)
    song = list(rng.integers(1, 5, size=25))
    stream = np.array([BOUNDARY, *song, *song[3:18], *rng.integers(1, 5, size=10)])
    cache = SongCache(weights=list(rng.uniform(0, 1, size=2 * len(LENGTH_EDGES))))
    cache.weights[:2] = [0.0, 0.0]
    features = cache_features(stream, BOUNDARY)
    model = rng.dirichlet(np.ones(5), size=len(stream) - 1)  # a made-up model distribution per position
    actual = model[np.arange(len(stream) - 1), stream[1:]]
    scored = cache.mix(actual, features)
    for t in range(len(stream) - 1):
        sampled = cache.next_token_probs(model[t], list(stream[:t + 1]))
        assert sampled.sum() == pytest.approx(1.0)
        assert sampled[stream[t + 1]] == pytest.approx(scored[t])


def test_weights_round_trip_and_refuse_other_buckets(tmp_path):
    cache = SongCache(weights=[0.0, 0.0] + [0.5] * (2 * len(LENGTH_EDGES) - 2), max_context=12)
    cache.save(tmp_path / "cache.json")
    again = SongCache.load(tmp_path / "cache.json")
    assert again.weights == cache.weights and again.max_context == 12
    saved = json.loads((tmp_path / "cache.json").read_text())
    saved["length_edges"] = [0, 1, 2]
    (tmp_path / "cache.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other match-length buckets"):
        SongCache.load(tmp_path / "cache.json")
