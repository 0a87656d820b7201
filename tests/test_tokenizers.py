"""Tokenizers: round trips, single-token tags and <eos>, save and reload."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from lyricslab.text.factory import load_tokenizer, train_tokenizer
from lyricslab.text.tokenizers import EOS_ID, SPECIALS, UNK_ID

TRAIN = ["[verse]\nThe lantern swings above the quiet pier\nand every gull is singing off the key\n\n"
         "[chorus]\nOh harbour, harbour, hold me near\nOh harbour, set the sailors free",
         "[verse]\nMy boots are full of river sand tonight\n[chorus]\nOh harbour, harbour, hold me near"]
HELD_OUT = "[verse]\nThe harbour lantern swings tonight\n[chorus]\nOh harbour, hold me near"


def make(kind, **kw):
    return train_tokenizer(OmegaConf.create({"kind": kind, "vocab_size": 300, "min_freq": 1, **kw}), TRAIN)


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_round_trip_and_reload(kind, tmp_path):
    tok = make(kind)
    ids = tok.encode(HELD_OUT)
    assert ids.dtype == np.int32 and len(ids) > 0 and UNK_ID not in ids.tolist()
    assert tok.decode(ids) == HELD_OUT
    reloaded = load_tokenizer(tok.save(tmp_path / kind))
    assert reloaded.kind == kind and reloaded.vocab_size == tok.vocab_size
    assert reloaded.encode(HELD_OUT).tolist() == ids.tolist()


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_structure_tags_and_eos_are_single_tokens(kind):
    tok = make(kind)
    for tag in ("[verse]", "[chorus]", "[bridge]", "[pre-chorus]"):
        assert tok.encode(tag).tolist() == [SPECIALS.index(tag)]
    stream = tok.encode_songs(["[verse]\nhi", "[chorus]\nhi"])
    assert stream.tolist().count(EOS_ID) == 2 and stream[-1] == EOS_ID


def test_word_tokenizer_caps_vocab_and_spells_rare_words():
    tok = make("word", vocab_size=len(SPECIALS) + 256 + 40)
    assert tok.vocab_size <= len(SPECIALS) + 256 + 40
    ids = tok.encode("zebra harbour")
    assert UNK_ID not in ids.tolist() and len(ids) > 2  # "zebra" is spelled in characters
    assert tok.decode(ids) == "zebra harbour"


def test_word_tokenizer_keeps_whitespace():
    tok = make("word")
    text = "Oh  harbour,\thold me\n\n  near ...  "
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(" harbour").tolist() == [tok.index[" harbour"]]  # a word with its space is one token


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unseen_characters_fall_back_to_bytes(kind):
    tok = make(kind)
    for text in ("é", "naïve ☃ café 🎸", "\x00\x7f"):
        ids = tok.encode(text)
        assert UNK_ID not in ids.tolist()
        assert tok.decode(ids) == text
    assert len(tok.encode("🎸")) == 4  # four UTF-8 bytes
    assert tok.decode(tok.encode("Oh")) == "Oh"


def split_songs(splits):
    return splits.train, splits.val + splits.test


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_every_held_out_demo_song_round_trips(kind, tmp_path):
    from lyricslab.data import load_splits
    from tests.conftest import compose

    cfg = compose([f"tokenizer={kind}", f"data.cache_dir={tmp_path}"])
    splits = load_splits(cfg.data, cfg.data_size.songs)
    tok = train_tokenizer(cfg.tokenizer, splits.train)
    for song in splits.val + splits.test:
        assert tok.decode(tok.encode(song)) == song
        assert UNK_ID not in tok.encode(song).tolist()


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_every_unseen_dev_song_round_trips(kind, tmp_path):
    from tests.conftest import DEV_CSV, compose

    if not DEV_CSV.exists():
        pytest.skip("needs ../shared/data/lyrics_dev.csv")
    from lyricslab.data import load_splits

    cfg = compose(["data=genius", f"data.path={DEV_CSV}", "data_size=full", f"tokenizer={kind}",
                   f"data.cache_dir={tmp_path}"])
    splits = load_splits(cfg.data, cfg.data_size.songs)
    tok = train_tokenizer(cfg.tokenizer, splits.train)
    bad = [song[:40] for song in splits.val + splits.test if tok.decode(tok.encode(song)) != song]
    assert not bad, f"{len(bad)} songs do not round-trip, e.g. {bad[:2]}"
