"""The token-stream cache is keyed on the tokenizer code version as well as its config."""

from omegaconf import OmegaConf

import lyricslab.text.tokenizers


def test_bumping_the_tokenizer_cache_version_misses_the_cache(tmp_path, monkeypatch):
    from lyricslab.training.train import tokenize_splits

    texts = {"train": ["[verse]\nkites over the quarry"] * 3, "val": ["[chorus]\nkites"], "test": ["[verse]\nquarry"]}
    cfg = OmegaConf.create({"kind": "char"})
    tokenize_splits(cfg, texts, tmp_path / "abc")
    hit, streams = tokenize_splits(cfg, {k: [] for k in texts}, tmp_path / "abc")  # no text: served from disk
    assert len(streams["train"]) > 3 and len(list(tmp_path.glob("abc-tok-*"))) == 1

    bumped = lyricslab.text.tokenizers.TOKENIZER_CACHE_VERSION + 1
    monkeypatch.setattr(lyricslab.text.tokenizers, "TOKENIZER_CACHE_VERSION", bumped)
    _, fresh = tokenize_splits(cfg, {k: [] for k in texts}, tmp_path / "abc")  # a miss: encodes the empty texts
    assert len(fresh["train"]) == 0
    assert len(list(tmp_path.glob("abc-tok-*"))) == 2
