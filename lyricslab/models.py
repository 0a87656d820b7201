"""Every lyricslab model, built from the config in one place (`build_model`).

All models map token ids (batch, time) to next-token logits (batch, time, vocab).
The output layer is the embedding run in reverse (keras_hub ReversibleEmbedding), so
`embedding.tied=true` shares one matrix between input and output.
"""

from __future__ import annotations

from typing import Any

from lyricslab.runtime import quiet_tensorflow

quiet_tensorflow()  # before keras: TensorFlow's start-up lines stay off the console
import keras  # noqa: E402
import keras_hub  # noqa: E402

RNN_CELLS = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def build_rnn(cfg: Any, vocab_size: int) -> keras.Model:
    """Embedding -> stacked RNN layers -> (projection if tied) -> logits."""
    m, emb, drop = cfg.model, cfg.embedding, cfg.dropout
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedding = keras_hub.layers.ReversibleEmbedding(vocab_size, emb.dim, tie_weights=emb.tied, name="embedding")
    x = keras.layers.Dropout(drop.rate, name="embedding_dropout")(embedding(tokens))
    for i in range(m.layers):
        x = RNN_CELLS[m.cell](m.units, return_sequences=True, recurrent_dropout=drop.recurrent, name=f"{m.cell}_{i}")(x)
        x = keras.layers.Dropout(drop.rate, name=f"dropout_{i}")(x)
    if m.units != emb.dim:  # the reversed embedding expects vectors of the embedding size
        x = keras.layers.Dense(emb.dim, name="projection")(x)
    logits = embedding(x, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)  # fp32 under bf16
    return keras.Model(tokens, logits, name=m.name)


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


BUILDERS = {"rnn": build_rnn, "transformer": build_transformer}


def build_model(cfg: Any, vocab_size: int) -> keras.Model:
    family = cfg.model.family
    if family not in BUILDERS:
        raise ValueError(f"model.family must be one of {sorted(BUILDERS)}, not {family!r}")
    return BUILDERS[family](cfg, vocab_size)
