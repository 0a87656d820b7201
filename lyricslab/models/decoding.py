"""Incremental (cached) decoding for every lyricslab model, driven by keras_hub samplers.

The naive way (keras.io's text-generation examples) re-runs the whole window for each new token.
Here each step costs one token:
- RNNs call their trained cells on the new token and carry the state from step to step;
- the transformer calls its keras_hub TransformerDecoder blocks with `self_attention_cache`,
  so keys and values of earlier tokens are computed once, and the window slides when a
  song outgrows the context.
The `next(prompt, cache, index)` functions follow the keras_hub sampler protocol, so greedy,
top-k, top-p, random and beam search all come from `keras_hub.samplers`.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
from keras import ops

from lyricslab.models.controls import ControlPath, recurrent_stack


class RNNCache:
    """Token-by-token stepping through the trained RNN cells (weights shared, nothing copied)."""

    def __init__(self, model: keras.Model):
        self.embedding = model.get_layer("embedding")
        self.controls = ControlPath.of(model)  # conditioning.every_step: its state comes first in the cache
        self.cells = [layer.cell for layer in recurrent_stack(model)]
        names = {layer.name for layer in model.layers}
        self.projection = model.get_layer("projection") if "projection" in names else None
        self.state_counts = [len(c.state_size) if isinstance(c.state_size, (list, tuple)) else 1 for c in self.cells]

    def initial(self, batch: int) -> tuple:
        states = [] if self.controls is None else [self.controls.initial(batch)]
        for cell, count in zip(self.cells, self.state_counts):
            states += [ops.zeros((batch, cell.units))] * count
        return tuple(states)

    def step(self, token, cache):
        x = self.embedding(token)
        if self.controls is not None:
            x, controls = self.controls.step(x, token, cache[0])
            cache = cache[1:]
        new, i = [] if self.controls is None else [controls], 0
        for cell, count in zip(self.cells, self.state_counts):
            states = list(cache[i:i + count])
            i += count
            x, states = cell(x, states, training=False)
            new += list(states) if isinstance(states, (list, tuple)) else [states]
        hidden = self.projection(x) if self.projection is not None else x
        logits = ops.cast(self.embedding(hidden, reverse=True), "float32")
        return logits, hidden, tuple(new)

    def prefill(self, prompt, length: int):
        """State after reading prompt[:, :length - 1]; the sampler's first step feeds token length - 1."""
        cache = self.initial(ops.shape(prompt)[0])
        for t in range(length - 1):
            _, _, cache = self.step(prompt[:, t], cache)
        return cache

    def next(self, prompt, cache, index):
        token = ops.take(prompt, index - 1, axis=1)
        return self.step(token, cache)


class TransformerCache:
    """keras_hub TransformerDecoder blocks with a key/value cache of shape (B, layers, 2, T, heads, dim).

    Songs can run past the context: when the cache is full, the window slides forward by
    `stride` tokens and the last `context - stride` tokens are re-prefilled at positions 0...
    (learned position embeddings only cover `context` positions, and shifting cached keys
    would change them). Every other step stays one cached token; a re-prefill is one batched
    pass over `context - stride + 1` tokens, once every `stride` tokens.
    """

    def __init__(self, model: keras.Model, stride: int | None = None):
        self.embedding = model.get_layer("embedding")
        self.position = model.get_layer("position_embedding")
        self.blocks = [layer for layer in model.layers if isinstance(layer, keras_hub.layers.TransformerDecoder)]
        self.norm = model.get_layer("final_norm")
        self.context = self.position.sequence_length
        # A quarter of the context: the model always sees at least 3/4 of it, for ~1 re-prefill per stride tokens.
        self.stride = stride or max(1, self.context // 4)
        if not 1 <= self.stride < self.context:
            raise ValueError(f"the window stride must be between 1 and context - 1 = {self.context - 1}, "
                             f"not {self.stride}")
        self.keep = self.context - self.stride
        width = self.embedding.output_dim
        self.heads = self.blocks[0].num_heads
        self.head_dim = width // self.heads

    def window_start(self, position):
        """First absolute position of the window that holds `position` (ints or int tensors)."""
        over = position - self.context
        return ops.where(over < 0, 0, (over // self.stride + 1) * self.stride)

    def forward(self, tokens, cache, index):
        x = self.embedding(tokens)
        x = x + self.position(x, start_index=index)
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, self_attention_cache=cache[:, i], self_attention_cache_update_index=index)
            caches.append(layer_cache)
        hidden = self.norm(x)
        logits = ops.cast(self.embedding(hidden, reverse=True), "float32")
        return logits, hidden, ops.stack(caches, axis=1)

    def prefill(self, prompt, length: int):
        batch, total = ops.shape(prompt)[0], ops.shape(prompt)[1]
        size = min(total, self.context)  # the first window; later ones reuse this cache
        cache = ops.zeros((batch, len(self.blocks), 2, size, self.heads, self.head_dim))
        # Positions past the prompt get placeholder keys; each is overwritten before it is attended to.
        _, _, cache = self.forward(prompt[:, :size], cache, 0)
        return cache

    def next(self, prompt, cache, index):
        batch = ops.shape(prompt)[0]
        position = index - 1  # the token fed now; the logits predict position `index`
        token = ops.slice(prompt, [0, position], [batch, 1])
        if ops.shape(prompt)[1] <= self.context:  # the whole song fits the first window: never slides
            logits, hidden, cache = self.forward(token, cache, position)
            return logits[:, 0], hidden[:, 0], cache
        start = self.window_start(position)
        slot = position - start

        def step():
            return self.forward(token, cache, slot)

        def slide():
            # The window just moved: its kept tokens and this one in one pass, at positions 0..keep.
            # Slots past `keep` still hold the old window; the causal mask hides them until overwritten.
            window = ops.slice(prompt, [0, start], [batch, self.keep + 1])
            logits, hidden, new = self.forward(window, cache, 0)
            return logits[:, -1:], hidden[:, -1:], new

        logits, hidden, cache = ops.cond(ops.logical_and(position >= self.context, slot == self.keep), slide, step)
        return logits[:, 0], hidden[:, 0], cache


def make_cache(model: keras.Model, stride: int | None = None) -> RNNCache | TransformerCache:
    """The decoder for `model`; `stride` (transformers only) is how far the window slides when full."""
    if hasattr(model, "decoding_cache"):  # a model that brings its own (the GPT-2 preset adapter)
        return model.decoding_cache(stride)
    names = {layer.name for layer in model.layers}
    return TransformerCache(model, stride) if "position_embedding" in names else RNNCache(model)


def make_sampler(name: str = "top_k", temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, num_beams: int = 4) -> Any:
    """A keras_hub sampler from generation options. temperature must be > 0 (use greedy instead)."""
    samplers = keras_hub.samplers
    if name == "greedy":
        return samplers.GreedySampler()
    if name == "beam":
        return samplers.BeamSampler(num_beams=num_beams)
    if temperature is None or temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); for deterministic output use sampler=greedy")
    if top_p is not None:
        return samplers.TopPSampler(p=top_p, k=top_k, seed=seed, temperature=temperature)
    if top_k is not None:
        return samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
    return samplers.RandomSampler(seed=seed, temperature=temperature)
