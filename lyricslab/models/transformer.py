"""Decoder-only transformer trained from scratch (`model.family: transformer`)."""

from __future__ import annotations

from typing import Any

import keras
import keras_hub


def build_transformer(cfg: Any, vocab_size: int) -> keras.Model:
    """Token + learned position embeddings -> pre-norm causal decoder blocks -> logits."""
    m, emb, drop = cfg.model, cfg.embedding, cfg.dropout
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedding = keras_hub.layers.ReversibleEmbedding(vocab_size, m.width, tie_weights=emb.tied, name="embedding")
    x = embedding(tokens)
    x = x + keras_hub.layers.PositionEmbedding(m.context, name="position_embedding")(x)
    x = keras.layers.Dropout(drop.rate, name="embedding_dropout")(x)
    for i in range(m.layers):
        # Without encoder inputs TransformerDecoder is a GPT block with a causal mask.
        x = keras_hub.layers.TransformerDecoder(intermediate_dim=m.ff_dim, num_heads=m.heads, dropout=drop.rate,
                                                normalize_first=True, name=f"decoder_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = embedding(x, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(tokens, logits, name=m.name)
