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
    model = keras.Model(tokens, logits, name=m.name)
    if stateful_batch is not None:
        track_carried_states(model)
    return model


def track_carried_states(model: keras.Model) -> None:
    """Make a stateful model's RNN states its own non-trainable variables, on JAX.

    Keras keeps a stateful layer's states out of every variable list (so they are not saved), and
    its JAX trainer carries only the listed variables from step to step: there the states would be
    read as constants, zero at every step. Tracked by the model (not the layers, whose weights the
    plain model takes one by one), they are carried. TensorFlow updates them in place already.
    """
    if keras.backend.backend() != "jax":
        return
    for layer in model.layers:
        if getattr(layer, "stateful", False) and getattr(layer, "states", None) is not None:
            for state in keras.tree.flatten(layer.states):
                model._track_variable(state)  # noqa: SLF001  (no public API registers an existing variable)


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """The weights of `source` into `target`, a model of the same layers (by name) that may differ in
    batch size and statefulness: layer by layer, since on JAX a stateful model also lists its states."""
    for layer in target.layers:
        layer.set_weights(source.get_layer(layer.name).get_weights())
