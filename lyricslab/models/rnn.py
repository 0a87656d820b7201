"""Stacked RNN language model: SimpleRNN, LSTM or GRU cells (`model.family: rnn`)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import keras_hub

from lyricslab.models.controls import add_controls

RNN_CELLS = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def build_rnn(cfg: Any, vocab_size: int, stateful_batch: int | None = None,
              controls: Sequence[tuple[int, str]] = ()) -> keras.Model:
    """Embedding (+ the controls in force) -> stacked RNN layers -> (projection if tied) -> logits.

    `stateful_batch`: a model for carried-state training (`trainer.carry_state`): its RNN layers keep
    their final state as the next batch's initial state, which needs that fixed batch size. Its
    weights are the same list as the plain model's, so the plain one takes them after training.
    `controls`: the tokenizer's control tokens as (id, field) pairs; with `conditioning.every_step`
    every step also reads the ones in force (lyricslab.models.controls).
    """
    m, emb, drop = cfg.model, cfg.embedding, cfg.dropout
    tokens = keras.Input(shape=(None,), batch_size=stateful_batch, dtype="int32", name="tokens")
    embedding = keras_hub.layers.ReversibleEmbedding(vocab_size, emb.dim, tie_weights=emb.tied, name="embedding")
    x = embedding(tokens)
    if controls and (cfg.get("conditioning") or {}).get("every_step", False):
        x = add_controls(tokens, x, vocab_size, controls, stateful_batch)
    x = keras.layers.Dropout(drop.rate, name="embedding_dropout")(x)
    for i in range(m.layers):
        x = RNN_CELLS[m.cell](m.units, return_sequences=True, recurrent_dropout=drop.recurrent,
                              stateful=stateful_batch is not None, name=f"{m.cell}_{i}")(x)
        x = keras.layers.Dropout(drop.rate, name=f"dropout_{i}")(x)
    if m.units != emb.dim:  # the reversed embedding expects vectors of the embedding size
        x = keras.layers.Dense(emb.dim, name="projection")(x)
    logits = embedding(x, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)  # fp32 under bf16
    return keras.Model(tokens, logits, name=m.name)
