"""The mixture of the network, the n-gram and the song cache: units of whole characters line the three up,
and weights fitted on val never code val worse than the best component alone."""

import numpy as np
import pytest

from lyricslab.scoring.mixture import (
    BUCKETS,
    Mixture,
    char_lengths,
    unit_probs,
    units_of,
)
from lyricslab.scoring.ngram import KneserNey
from lyricslab.scoring.song_cache import cache_features
from lyricslab.text.tokenizers import EOS_ID, CharTokenizer
from lyricslab.text.windows import with_start


def component_bits(probs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log2(probs).sum(axis=0)


@pytest.mark.parametrize("seed", range(6))
def test_weights_fitted_on_val_never_code_val_worse_than_the_best_component(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    bucket = rng.integers(0, BUCKETS, n)
    probs = rng.uniform(1e-4, 1, (n, 3))
    probs[bucket < 2, 2] = 0.0  # no earlier match: the cache gives nothing
    # One component far better than the others in some buckets: a mixture must not dilute it there.
    strong = rng.integers(0, 2)
    probs[bucket % 3 == 0, strong] = rng.uniform(0.95, 1.0, int((bucket % 3 == 0).sum()))
    mixture = Mixture().fit(probs, bucket)
    best = component_bits(probs).min()
    assert mixture.bits(probs, bucket) <= best + 1e-6
    # Each bucket on its own, too: the buckets are independent, so it holds per bucket.
    for b in range(BUCKETS):
        inside = bucket == b
        if inside.any():
            alone = component_bits(probs[inside]).min()
            assert mixture.bits(probs[inside], bucket[inside]) <= alone + 1e-6
    weights = np.asarray(mixture.weights)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert (weights >= 0).all()


def test_a_component_that_is_always_right_takes_all_the_weight():
    rng = np.random.default_rng(0)
    n = 2000
    probs = np.stack([rng.uniform(0.01, 0.5, n), np.ones(n), rng.uniform(0.01, 0.5, n)], axis=1)
    bucket = rng.integers(2, BUCKETS, n)
    mixture = Mixture().fit(probs, bucket)
    assert mixture.bits(probs, bucket) == pytest.approx(0.0, abs=1e-6)


def test_units_cover_whole_characters_for_tags_and_byte_spelled_characters():
    songs = ["[chorus]\nla la\n", "oh ☃ la\n"]  # a structure tag is one token; ☃ is unseen: three byte tokens
    tokenizer = CharTokenizer.train(["[chorus]\nla la oh\n"])
    stream = tokenizer.encode_songs(songs)
    lengths = char_lengths(tokenizer)
    nll = np.full(len(stream), 0.5)
    chars = sum(len(s) + 1 for s in songs)
    units = units_of(stream, nll, lengths, chars)
    assert units is not None and units.count == chars - len("[chorus]") + 1  # the tag: one unit of 8 characters
    assert len(units.char_unit) == chars and np.all(np.diff(units.char_unit) >= 0)
    tag_chars = np.flatnonzero(units.char_unit == 0)
    assert len(tag_chars) == len("[chorus]")
    snowman = len(songs[0]) + 1 + len("oh ")  # its character index in the n-gram stream
    assert (units.token_unit == units.char_unit[snowman]).sum() == 3  # its three bytes, one unit
    # A model whose scored text is not the n-gram's (one character more) is not mixed.
    assert units_of(stream, nll, lengths, chars + 1) is None


def test_the_network_vertex_reproduces_the_network_and_the_ngram_vertex_the_ngram():
    train = ["[verse]\nthe river knows my name\nthe river knows\n"] * 3
    held = ["[verse]\nthe river holds my name\nthe river knows ☃\n"]
    tokenizer = CharTokenizer.train(train)
    stream = tokenizer.encode_songs(held)
    rng = np.random.default_rng(1)
    nll = rng.uniform(0.1, 3.0, len(stream))
    chars = sum(len(s) + 1 for s in held)
    units = units_of(stream, nll, char_lengths(tokenizer), chars)
    ngram = KneserNey(4).fit(train)
    log2 = ngram.log2_probs(held)
    probs, bucket = unit_probs(units, nll, log2, cache_features(with_start(stream), EOS_ID, 40))
    for k, expected in ((0, nll.sum() / np.log(2)), (1, -log2.sum())):
        mixture = Mixture(weights=[list(np.eye(3)[k])] * BUCKETS)
        assert mixture.bits(probs, bucket) == pytest.approx(expected, rel=1e-9)
