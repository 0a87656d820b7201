"""Sampling lyrics from a trained model."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lyricslab.data.normalize import render_structure_tags
from lyricslab.tokenizers import EOS_ID, Tokenizer


def sample_next(logits: np.ndarray, temperatures: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row from softmax(logits / temperature); temperature 0 means greedy."""
    logits = logits.astype(np.float64)
    greedy = temperatures <= 0
    scaled = logits / np.where(greedy, 1.0, temperatures)[:, None]
    scaled -= scaled.max(axis=1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=1, keepdims=True)
    picks = (probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1)
    picks = np.minimum(picks, logits.shape[1] - 1)
    return np.where(greedy, logits.argmax(axis=1), picks)


def unescape_prompt(prompt: str) -> str:
    """Command lines can't easily carry a newline: read a typed backslash-n as one."""
    return prompt.replace("\\n", "\n")


def generate(model: Any, tokenizer: Tokenizer, prompt: str, temperatures: Sequence[float], max_tokens: int,
             seed: int = 0, context: int | None = None) -> list[str]:
    """One sample per temperature, batched, by re-feeding the window at every step.

    Stops a row at <eos>. `context` caps the window (the transformer's position table).
    """
    import tensorflow as tf

    # One traced graph for every window length; eager RNN calls cost ~100 ms a step on CPU.
    forward = tf.function(lambda x: model(x, training=False)[:, -1, :], reduce_retracing=True,
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])
    rng = np.random.default_rng(seed)
    temps = np.asarray(temperatures, dtype=np.float64)
    start = np.concatenate([[EOS_ID], tokenizer.encode(unescape_prompt(prompt))]).astype(np.int32)
    tokens = np.tile(start, (len(temps), 1))
    done = np.zeros(len(temps), dtype=bool)
    for _ in range(max_tokens):
        window = tokens if context is None else tokens[:, -context:]
        logits = forward(window).numpy()
        nxt = np.where(done, EOS_ID, sample_next(logits, temps, rng)).astype(np.int32)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        done |= nxt == EOS_ID
        if done.all():
            break
    texts = []
    for row in tokens:
        body = row[1:]
        ends = np.flatnonzero(body[len(start) - 1:] == EOS_ID)
        if len(ends):
            body = body[: len(start) - 1 + ends[0]]
        texts.append(render_structure_tags(tokenizer.decode(body)))
    return texts
