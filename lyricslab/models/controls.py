"""Control tokens at every step of an RNN (`conditioning.every_step`): the song's `<tag:rap>`,
`<decade:1990s>`, ... stay an input of every character, not only of the ones that follow them.

Why: an LSTM reads a control token once and must learn to keep it in its state; feeding the
controls in force to every step, as conditional LMs do (Ficler & Goldberg 2017), gives each gate a
direct, per-genre input instead. (Measured on the dev corpus: README, "Conditioning".)

The controls in force are the state of a tiny RNN (`ControlCell`): a control token replaces the
one of its field and the others carry on, across windows too (a stateful layer in carried-state
training). Keras has no layer that forward-fills a value along time, hence these two small layers.
Transformers need none of this: attention looks back at the prefix directly.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

ONE_HOT, STATE, EMBEDDING = "control_one_hot", "control_state", "control_embedding"  # layer names


@keras.saving.register_keras_serializable(package="lyricslab")
class ControlOneHot(keras.layers.Layer):
    """Token ids (batch, time) -> (batch, time, controls): the one-hot of each control token, zeros elsewhere."""

    def __init__(self, vocab_size: int, control_ids: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.control_ids = int(vocab_size), [int(i) for i in control_ids]
        table = np.zeros(self.vocab_size, dtype="int32")
        table[self.control_ids] = np.arange(1, len(self.control_ids) + 1)
        self.table = table  # id -> 1 + its control index; 0 for every other token

    def call(self, ids):
        index = ops.take(ops.convert_to_tensor(self.table), ops.cast(ids, "int32"))
        return ops.one_hot(index, len(self.control_ids) + 1, dtype=self.compute_dtype)[..., 1:]

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "control_ids": self.control_ids}


@keras.saving.register_keras_serializable(package="lyricslab")
class ControlCell(keras.layers.Layer):
    """One step of the controls in force: a control read now replaces its field's; the rest carry on.

    `fields[c]` is control c's field index; the state is a multi-hot over the controls (one per field at most).
    """

    def __init__(self, fields: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.fields = [int(f) for f in fields]
        self.state_size = self.output_size = len(self.fields)
        same = np.equal.outer(self.fields, self.fields).astype("float32")
        self.same_field = same  # (controls, controls): 1 where two controls share a field

    def call(self, inputs, states):
        previous = states[0] if isinstance(states, (list, tuple)) else states
        replaced = ops.minimum(ops.matmul(inputs, ops.convert_to_tensor(self.same_field, inputs.dtype)), 1.0)
        current = previous * (1.0 - replaced) + inputs
        return current, [current]

    def get_config(self):
        return {**super().get_config(), "fields": self.fields}


def control_table(tokens: Sequence[tuple[int, str]]) -> tuple[list[int], list[int]]:
    """(id, field name) pairs -> the ids and their field indices, fields numbered in first-seen order."""
    names: dict[str, int] = {}
    ids = [int(i) for i, _ in tokens]
    return ids, [names.setdefault(name, len(names)) for _, name in tokens]


def add_controls(tokens, embedded, vocab_size: int, controls: Sequence[tuple[int, str]], stateful_batch: int | None):
    """`embedded` plus a learned vector of the controls in force at each step. The projection starts
    at zero, so an untrained conditioned model is the unconditioned one."""
    ids, fields = control_table(controls)
    one_hot = ControlOneHot(vocab_size, ids, name=ONE_HOT)(tokens)
    state = keras.layers.RNN(ControlCell(fields), return_sequences=True, stateful=stateful_batch is not None,
                             name=STATE)(one_hot)
    projected = keras.layers.Dense(embedded.shape[-1], use_bias=False, kernel_initializer="zeros",
                                   name=EMBEDDING)(state)
    return keras.layers.Add(name="with_controls")([embedded, projected])


def recurrent_stack(model: keras.Model) -> list[keras.layers.RNN]:
    """The model's RNN layers in order, without the control state (which feeds the embedding)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN) and layer.name != STATE]


class ControlPath:
    """A built model's control layers, for code that steps its RNN cells itself (decoding, carried-state
    scoring): `of(model)` is None for a model without them."""

    def __init__(self, model: keras.Model):
        self.one_hot = model.get_layer(ONE_HOT)
        self.layer = model.get_layer(STATE)
        self.projection = model.get_layer(EMBEDDING)
        self.size = len(self.one_hot.control_ids)

    @classmethod
    def of(cls, model: keras.Model) -> "ControlPath | None":
        return cls(model) if ONE_HOT in {layer.name for layer in model.layers} else None

    def initial(self, batch):
        return ops.zeros((batch, self.size))

    def step(self, embedded, token, state):
        """One token (batch,): the embedding plus its controls' vector, and the new state."""
        current, _ = self.layer.cell(self.one_hot(token), [state])
        return embedded + self.projection(current), current

    def twin(self) -> keras.layers.RNN:
        """The state layer rebuilt to return its final state (carried-state scoring); weightless."""
        twin = keras.layers.RNN(ControlCell(self.layer.cell.fields), return_sequences=True, return_state=True,
                                name=f"{STATE}_eval")
        twin(ops.zeros((1, 1, self.size)))
        return twin

    def sequence(self, twin, embedded, tokens, state):
        """A chunk (batch, time): the embeddings plus their controls' vectors, and the state after it."""
        current, state = twin(self.one_hot(tokens), initial_state=[state])
        return embedded + self.projection(current), state
