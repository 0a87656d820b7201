"""Tokenizers: round trips, single-token tags and <eos>, save and reload."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from lyricslab.tokenizers import EOS_ID, SPECIALS, UNK_ID, load_tokenizer, train_tokenizer

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


def test_word_tokenizer_caps_vocab_and_marks_unknowns():
    tok = make("word", vocab_size=len(SPECIALS) + 5)
    assert tok.vocab_size == len(SPECIALS) + 5
    ids = tok.encode("zebra harbour")
    assert ids[0] == UNK_ID


def test_char_tokenizer_unknown_characters():
    tok = make("char")
    assert tok.encode("é")[0] == UNK_ID
    assert tok.decode(tok.encode("Oh")) == "Oh"
