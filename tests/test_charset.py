"""Samples use only the characters common in the training text: stray scripts never leak into a song."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compose, tiny
from omegaconf import OmegaConf

from lyricslab.models import build_model
from lyricslab.models.decoding import make_sampler
from lyricslab.sampling.generation import generate_ids
from lyricslab.text.charset import allowed_tokens, common_characters
from lyricslab.text.factory import train_tokenizer
from lyricslab.text.tokenizers import EOS_ID

# Original text: 2,700 common characters, then a rare word in another script and a rare symbol.
TEXT = ["[verse]\nthe lantern hums along the river road\n" * 60 + "a 위 b ☂ c\n"]


def test_the_common_set_covers_the_share_asked_for_and_no_more():
    assert common_characters(["aaaaaaaaab"], 0.9) == "a"
    assert common_characters(["aaaaaaaaab"], 0.95) == "ab"
    chars = common_characters(TEXT, 0.999)
    assert set("the lantern hums\n[verse]") <= set(chars) and "위" not in chars and "☂" not in chars
    with pytest.raises(ValueError, match="charset_coverage"):
        common_characters(TEXT, 0.0)


def test_allowed_tokens_leave_out_rare_characters_and_their_bytes_but_keep_eos_and_headers():
    tok = train_tokenizer(OmegaConf.create({"kind": "char", "vocab_size": 300, "min_freq": 2}), TEXT)
    allowed = allowed_tokens(tok, common_characters(TEXT, 0.999))
    texts = [tok.decode([i]) for i in range(tok.vocab_size)]
    assert allowed[EOS_ID] and allowed[texts.index("[verse]")] and allowed[texts.index("h")]
    banned = {texts[i] for i in np.flatnonzero(~allowed)}
    assert "\ufffd" in banned  # the byte tokens that spell 위 and ☂
    assert all(set(t) - set(common_characters(TEXT, 0.999)) for t in banned)


def test_sampling_never_writes_a_token_left_out():
    keras.utils.set_random_seed(0)
    model = build_model(compose(tiny("lstm")), 40)
    allowed = np.zeros(40, dtype=bool)
    allowed[[EOS_ID, *range(10, 20)]] = True
    start = np.array([EOS_ID, 12], dtype=np.int32)
    free = generate_ids(model, start, 4, 60, make_sampler("random", 1.5, seed=1), stop_at_eos=False)
    assert (~allowed[free[:, 2:]]).any()  # an untrained model samples all over the vocabulary
    kept = generate_ids(model, start, 4, 60, make_sampler("random", 1.5, seed=1), stop_at_eos=False, allowed=allowed)
    assert allowed[kept[:, 2:]].all()
