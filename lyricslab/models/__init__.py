"""Every lyricslab model, built from the config in one place (`build_model`): one file per family.

All models map token ids (batch, time) to next-token logits (batch, time, vocab); gpt2 wraps a
keras_hub preset's backbone to do the same (and registers that wrapper for safe_mode loading);
bert is keras_hub's BertMaskedLM, a masked LM trained by lyricslab.training.masked_lm.
The output layer is the embedding run in reverse (keras_hub ReversibleEmbedding), so
`embedding.tied=true` shares one matrix between input and output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from lyricslab.models.bert import build_bert_mlm
from lyricslab.models.gpt2 import build_gpt2
from lyricslab.models.rnn import RNN_CELLS, build_rnn
from lyricslab.models.transformer import build_transformer

if TYPE_CHECKING:
    import keras

__all__ = ["BUILDERS", "RNN_CELLS", "build_model"]

BUILDERS = {"rnn": build_rnn, "transformer": build_transformer, "gpt2": build_gpt2, "bert": build_bert_mlm}


def build_model(cfg: Any, vocab_size: int, controls: Sequence[tuple[int, str]] = ()) -> keras.Model:
    """`controls`: the tokenizer's control tokens as (id, field); only RNNs take them as a separate
    input (transformers attend to the prefix itself)."""
    family = cfg.model.family
    if family not in BUILDERS:
        raise ValueError(f"model.family must be one of {sorted(BUILDERS)}, not {family!r}")
    if family == "rnn":
        return build_rnn(cfg, vocab_size, controls=controls)
    return BUILDERS[family](cfg, vocab_size)
