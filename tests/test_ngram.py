"""The Kneser-Ney character n-gram baseline: a proper distribution, exact accounting, cached."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lyricslab.scoring.ngram import EOS, UNK, KneserNey, baseline_bpc
from tests.conftest import DEV_CSV, compose

SONGS = ["the river runs to the sea\nthe river runs away\n", "oh the sea, the sea is calling\ncalling me home\n",
         "run away, run away with me\nto the river and the sea\n"]


def next_symbol_probs(model: KneserNey, history: str) -> dict[str, float]:
    """P(c | history) for every symbol c, read off the scores of history + c."""
    out = {}
    for ch in model.symbols:
        song = history if ch == EOS else history + ch
        out[ch] = float(2.0 ** model.log2_probs([song])[len(history)])
    return out


@pytest.mark.parametrize("order", [1, 3, 8])
@pytest.mark.parametrize("history", ["", "the riv", "zzz unseen", "run away, run "])
def test_next_symbol_probabilities_sum_to_one(order, history):
    model = KneserNey(order).fit(SONGS)
    probs = next_symbol_probs(model, history)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    assert min(probs.values()) > 0  # unseen symbols (and UNK) keep some mass


def test_bits_per_char_counts_every_character_and_one_end_mark_per_song():
    model = KneserNey(4).fit(SONGS)
    scores = model.log2_probs(SONGS)
    assert len(scores) == sum(len(s) + 1 for s in SONGS)
    assert model.bits_per_char(SONGS) == pytest.approx(-scores.sum() / len(scores))


def test_context_helps_and_unknown_characters_are_scored():
    seen = "the river runs to the sea\n"
    low, high = KneserNey(1).fit(SONGS), KneserNey(6).fit(SONGS)
    assert high.bits_per_char([seen]) < low.bits_per_char([seen]) - 1.0  # longer histories pay off
    odd = high.log2_probs(["the sea ☃"])
    assert np.isfinite(odd).all() and odd[-2] < -5  # the snowman is UNK: possible but expensive
    assert UNK in high.symbols


def test_baseline_is_cached_per_order(tmp_path):
    cache = tmp_path / "ngram.json"
    first = baseline_bpc(SONGS, {"val": SONGS[:1]}, order=3, cache=cache)
    assert cache.exists()
    cache.write_text(cache.read_text().replace(str(first["val"])[:6], "9.8765"))  # tamper: a hit reads the file
    assert baseline_bpc(SONGS, {"val": SONGS[:1]}, order=3, cache=cache)["val"] != first["val"]
    assert baseline_bpc(SONGS, {"val": SONGS[:1]}, order=4, cache=cache)["val"] != first["val"]  # order is keyed



def test_baseline_cache_is_keyed_by_the_code_that_computes_it(tmp_path, monkeypatch):
    """A changed n-gram (or song cache) is recomputed, not read back from an older run's cache file."""
    from lyricslab.scoring import ngram

    cache = tmp_path / "ngram.json"
    evaluate = {"val": SONGS[:1], "test": SONGS[1:2]}
    first = baseline_bpc(SONGS, evaluate, order=3, cache=cache, song_cache=8)
    assert json.loads(cache.read_text())["code"] == ngram.code_version()
    cache.write_text(cache.read_text().replace(str(first["val"])[:6], "9.8765"))  # tamper
    assert baseline_bpc(SONGS, evaluate, order=3, cache=cache, song_cache=8)["val"] == pytest.approx(9.8765, abs=1e-3)
    monkeypatch.setattr(ngram, "code_version", lambda: "another-version")
    assert baseline_bpc(SONGS, evaluate, order=3, cache=cache, song_cache=8) == first  # recomputed
    assert json.loads(cache.read_text())["code"] == "another-version"


def test_code_version_hashes_the_source_of_the_ngram_and_song_cache_modules(monkeypatch):
    from lyricslab.scoring import ngram

    real = ngram.code_version()
    try:
        ngram.code_version.cache_clear()
        monkeypatch.setattr(ngram.inspect, "getsource", lambda module: f"# {module.__name__}, as shipped\n")
        shipped = ngram.code_version()
        assert shipped != real
        for changed in ("lyricslab.scoring.ngram", "lyricslab.scoring.song_cache", "lyricslab.scoring.hashing"):
            ngram.code_version.cache_clear()
            monkeypatch.setattr(ngram.inspect, "getsource", lambda module, changed=changed: (
                f"# {module.__name__}, {'edited' if module.__name__ == changed else 'as shipped'}\n"))
            assert ngram.code_version() != shipped, changed
    finally:
        ngram.code_version.cache_clear()
        monkeypatch.undo()
    assert ngram.code_version() == real


@pytest.mark.skipif(not DEV_CSV.exists(), reason="needs ../shared/data/lyrics_dev.csv")
def test_dev_corpus_baseline_is_fast_and_plausible(tmp_path):
    from lyricslab.data import load_splits

    cfg = compose(["data=genius", f"data.path={DEV_CSV}", "data_size=full", f"data.cache_dir={tmp_path}"])
    splits = load_splits(cfg.data, cfg.data_size.songs)
    start = time.perf_counter()
    bpc = baseline_bpc(splits.train, {"val": splits.val, "test": splits.test}, order=8)
    assert time.perf_counter() - start < 30  # the budget; it takes about 2 s here
    assert 1.8 < bpc["test"] < 2.3 and 1.8 < bpc["val"] < 2.3
