"""A BERT-family masked LM from a keras_hub preset, fine-tuned with LoRA (`model.family: bert`).

keras_hub's BertMaskedLM (the preset's backbone + a masked-LM head tied to its token embedding),
without a preprocessor: lyricslab.training.masked_lm packs and masks the token windows itself. LoRA as for
GPT-2 (lyricslab.models.lora); the head is new, so it always trains.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub

from lyricslab.hub.presets import load_backbone
from lyricslab.models.lora import enable_lora


def build_bert_mlm(cfg: Any, vocab_size: int) -> keras.Model:
    m = cfg.model
    backbone = load_backbone(m.preset, "bert", dropout=float(cfg.dropout.rate),
                             dtype=keras.mixed_precision.global_policy().name)
    if vocab_size != backbone.vocabulary_size:
        raise ValueError(f"the tokenizer has {vocab_size} ids, the preset's BERT {backbone.vocabulary_size}; "
                         f"use tokenizer=bert with the same model.preset")
    if int(cfg.trainer.seq_len) > backbone.max_sequence_length:
        raise ValueError(f"trainer.seq_len={cfg.trainer.seq_len} is longer than the preset's "
                         f"{backbone.max_sequence_length} positions; lower trainer.seq_len")
    if m.get("lora_rank"):
        enable_lora(backbone, int(m.lora_rank), list(m.lora_targets))
    return keras_hub.models.BertMaskedLM(backbone, preprocessor=None, name=str(m.name))
