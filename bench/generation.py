"""Generation speed for one song (no early stop at `<eos>`), from the default LSTM and from a
transformer with a 512-token context: incremental decoding (RNN state / keras_hub KV cache, one
token per step) against the keras.io baseline, which re-feeds a fixed window of the last
`seq_len` tokens every step (keras.io's character LSTM keeps a `maxlen` window; its miniature
GPT pads the window to `maxlen`). Both models here are untrained: speed doesn't depend on the
weights.

Each speed-up compares like with like, in two pairings:
- **compiled**: the whole sampling loop in one `tf.function` with the same keras_hub
  `RandomSampler` on both sides; only the step differs. The incremental graph is the one
  `lyricslab.sampling.generation.generate_ids` builds (prefill, then the sampler over the cache's step).
- **Python loop**: one `tf.function` call per token on both sides, sampling in NumPy between
  calls.

Every graph is traced before timing. `generate_ids` itself traces a new graph per call; its
tokens/s as called, tracing included, is shown as a figure. For reference, the figures also
show lyricslab's own `generate_naive`, which re-feeds the whole growing history in a Python
loop (quadratic in the song length for the LSTM). The former headline, `generate_ids` against
it, mixed two differences (growing history vs. a window, and a compiled loop vs. a Python one)
and overstated the speed-up; it is shown only to re-state that figure.

Caveat: the small transformer (2 layers, width 128) is dispatch-bound on CPU: a cached step
runs about a hundred small ops, and a naive step's matmuls are small too, so re-feeding costs
it less than its token count suggests.
"""

from __future__ import annotations

import numpy as np

from bench.common import Target, check, interleaved, quick, record, timed, tiny

TARGET_SPEEDUP = Target(">=", 10, "x")  # naive fixed-window time / incremental time, same driver


def fixed_window_next(model, window: int, total: int):
    """A keras_hub sampler `next` that re-runs `model` on the last `window` tokens (keras.io's way).

    The window is always `window` tokens (zero-padded past the end of the prompt buffer, as
    keras.io's miniature GPT pads), so every step costs the same and the graph has fixed shapes.
    """
    from keras import ops

    pad = max(window - total, 0)

    def step(prompt, state, index):
        padded = ops.pad(prompt, [[0, 0], [0, pad]]) if pad else prompt
        start = ops.maximum(index - window, 0)
        x = ops.slice(padded, [0, start], [ops.shape(prompt)[0], window])
        logits = model(x, training=False)
        return ops.cast(ops.take(logits, index - 1 - start, axis=1), "float32"), None, state

    return step


def compiled_loops(model, cache, start: np.ndarray, tokens: int, window: int, sampler):
    """(incremental, naive) generators driven the same way: the whole sampling loop in one graph,
    the same keras_hub sampler, traced on the first call and reused; only the step differs.

    The incremental graph is the one generate_ids builds (prefill, then the sampler over cache.next).
    """
    import tensorflow as tf

    length, total = len(start), len(start) + tokens
    ids = np.zeros((1, total), dtype=np.int32)
    ids[:, :length] = start
    ids = tf.constant(ids)
    naive_step = fixed_window_next(model, window, total)
    incremental = tf.function(lambda ids: sampler(cache.next, ids, cache.prefill(ids, length), index=length))
    naive = tf.function(lambda ids: sampler(naive_step, ids, (), index=length))
    return lambda: np.asarray(incremental(ids)), lambda: np.asarray(naive(ids))


def sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Temperature-1 sampling in NumPy, shared by both Python-loop sides."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    picks = (probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1)
    return np.minimum(picks, probs.shape[1] - 1)


def python_loops(model, cache, start: np.ndarray, tokens: int, window: int):
    """(incremental, naive) generators driven the same way: a Python loop, one compiled call per token."""
    import tensorflow as tf

    length, total = len(start), len(start) + tokens
    prefill = tf.function(lambda ids: cache.prefill(ids, length))
    step = tf.function(lambda ids, state, index: cache.next(ids, state, index)[::2])  # (logits, state)
    forward = tf.function(lambda x, position: model(x, training=False)[:, position])

    def buffer() -> np.ndarray:
        ids = np.zeros((1, max(total, window)), dtype=np.int32)  # room for a full window, as keras.io pads
        ids[:, :length] = start
        return ids

    def incremental() -> np.ndarray:
        rng, ids = np.random.default_rng(0), buffer()[:, :total]
        state = prefill(tf.constant(ids))
        for index in range(length, total):
            logits, state = step(tf.constant(ids), state, tf.constant(index))
            ids[:, index] = sample(np.asarray(logits), rng)
        return ids

    def naive() -> np.ndarray:
        rng, ids = np.random.default_rng(0), buffer()
        for index in range(length, total):
            first = max(index - window, 0)
            logits = forward(tf.constant(ids[:, first:first + window]), tf.constant(index - 1 - first))
            ids[:, index] = sample(np.asarray(logits), rng)
        return ids[:, :total]

    return incremental, naive


def run() -> dict:
    from omegaconf import OmegaConf

    from bench.common import compose
    from lyricslab.models import build_model
    from lyricslab.models.decoding import make_cache, make_sampler
    from lyricslab.sampling.generation import generate_ids, generate_naive, prompt_ids
    from lyricslab.text.factory import train_tokenizer

    tokens, rounds = (40, 2) if quick() else (400, 3)
    tok = train_tokenizer(OmegaConf.create({"kind": "char"}), ["[verse]\nthe quick brown fox\n[chorus]\nla la"])
    start = prompt_ids(tok, "[verse]\n")
    checks, figures, windows = [], {}, {}
    # Quick: the LSTM's 32-token window is passed, the transformer's 64-token context is not.
    context = "trainer.seq_len=64" if quick() else "trainer.seq_len=512"
    for name, extra in (("lstm", []), ("transformer", [context])):
        cfg = compose([f"model={name}", *tiny(), *extra])
        model = build_model(cfg, tok.vocab_size)
        cache = make_cache(model)
        sampler = make_sampler("random", 1.0, seed=0)
        window = windows[name] = int(cfg.trainer.seq_len)

        pairings = {"compiled": compiled_loops(model, cache, start, tokens, window, sampler),
                    "Python loop": python_loops(model, cache, start, tokens, window)}
        best = {}
        for pairing, (incremental, naive) in pairings.items():
            incremental(), naive()  # trace and warm up
            best[pairing] = interleaved(lambda: timed(incremental), lambda: timed(naive), rounds=rounds)
            t_inc, t_naive = best[pairing]
            figures[f"{name}, {pairing}: tokens/s incremental"] = tokens / t_inc
            figures[f"{name}, {pairing}: tokens/s naive, {window}-token window"] = tokens / t_naive
            checks.append(check(f"{name}, {pairing}: speed-up over a {window}-token window re-feed",
                                t_naive / t_inc, TARGET_SPEEDUP))

        # As lyricslab calls it: generate_ids traces a new graph per call.
        as_called = lambda: timed(lambda: generate_ids(model, start, 1, tokens, sampler, cache=cache,  # noqa: E731
                                                       stop_at_eos=False))
        as_called()  # warm up
        t_as_called = min(as_called() for _ in range(2))
        figures[f"{name}: tokens/s generate_ids as called (new graph per call)"] = tokens / t_as_called
        context = cfg.model.context if name == "transformer" else None
        history = lambda: timed(lambda: generate_naive(model, tok, "[verse]\n", [1.0], tokens,  # noqa: E731
                                                       context=context, stop_at_eos=False))
        history()  # warm up
        t_history = min(history() for _ in range(2))
        figures[f"{name}, reference: tokens/s generate_naive (whole history, Python loop)"] = tokens / t_history
        figures[f"{name}, reference: generate_ids ÷ generate_naive (the former headline)"] = t_history / t_as_called
    models = "tiny 1-layer (quick mode)" if quick() else "default"
    budget = (f"one {tokens}-token song after a 9-token prompt, batch 1, untrained {models} LSTM (window "
              f"{windows['lstm']}) and transformer (context and window {windows['transformer']}); best of {rounds} "
              "alternating runs per side after one warm-up run each")
    return record("generation", "Generation speed", budget, checks, figures)


if __name__ == "__main__":
    run()
