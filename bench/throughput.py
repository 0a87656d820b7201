"""Training throughput: lyricslab's default LSTM (2×256, embedding 128) and transformer (2 layers,
width 128, 4 heads, FF 512) against plain hand-written Keras models of the same shape
(`Embedding → LSTM → LSTM → Dense → Dense`; a pre-norm `MultiHeadAttention` decoder), both fed
the same cached batches of random tokens and timed alternately in one process. The ratio is
plain epoch time ÷ lyricslab epoch time, so above 1 means lyricslab is faster.

Both sides train the same way: the loss alone, no compiled metrics (lyricslab's side is compiled
by train()'s own `compile_model`), and RMSprop at the default learning rate with gradients
clipped to norm 1 (lyricslab's side from `build_optimizer`, the default `optimizer=rmsprop` and
`trainer.gradient_clip`). lyricslab's side also runs train()'s `DerivedMetrics` callback, which
counts steps and tokens; its cost is part of what is compared.

The figures also give each lyricslab model's MFU at the throughput measured here, by the one
definition (`lyricslab.training.flops.mfu` over the cached `matmul_peak`; `python -m bench mfu`
says more).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import Target, check, compose, interleaved, quick, record, timed, tiny  # noqa: E402

VOCAB = 2000  # the subword tokenizer's default vocab_size
TARGET_RATIO = Target(">=", 1.0, "x")  # plain Keras epoch time / lyricslab epoch time


def steps() -> int:
    return 2 if quick() else 12


def plain_rnn(cfg, vocab: int) -> keras.Model:
    m, e, d = cfg.model, cfg.embedding, cfg.dropout
    layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(vocab, e.dim), keras.layers.Dropout(d.rate)]
    for _ in range(m.layers):
        layers += [keras.layers.LSTM(m.units, return_sequences=True), keras.layers.Dropout(d.rate)]
    layers += [keras.layers.Dense(e.dim), keras.layers.Dense(vocab)]
    return keras.Sequential(layers)


def plain_transformer(cfg, vocab: int) -> keras.Model:
    m, d = cfg.model, cfg.dropout
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab, m.width)(tokens)
    positions = keras.ops.arange(m.context)[None, :]
    x = x + keras.layers.Embedding(m.context, m.width)(positions)
    for _ in range(m.layers):
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.MultiHeadAttention(m.heads, m.width // m.heads, dropout=d.rate)(h, h, use_causal_mask=True)
        x = x + keras.layers.Dropout(d.rate)(h)
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.Dense(m.ff_dim, activation="relu")(h)
        x = x + keras.layers.Dropout(d.rate)(keras.layers.Dense(m.width)(h))
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    return keras.Model(tokens, keras.layers.Dense(vocab)(x))


def batches(cfg, vocab: int, steps: int):
    """lyricslab's side is fed as train() feeds it (training.batches.to_dataset: numpy batches through
    a PyDataset); the plain side by a cached tf.data pipeline, the usual TensorFlow idiom."""
    import tensorflow as tf

    from lyricslab.text.windows import Windows
    from lyricslab.training.batches import to_dataset

    rng = np.random.default_rng(0)
    n, t = cfg.trainer.batch_size * steps, cfg.trainer.seq_len
    x = rng.integers(3, vocab, size=(n, t)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    ours = to_dataset(Windows(x, y, np.ones_like(x, dtype=np.float32)), cfg.trainer.batch_size, shuffle=True, seed=0)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg.trainer.batch_size).cache()
    return ours, plain


def pair(model_name: str, vocab: int = VOCAB, extra=()):
    """(our model compiled as train() does, the plain one, their datasets, tokens per epoch)."""
    from lyricslab.models import build_model
    from lyricslab.training.callbacks import DerivedMetrics
    from lyricslab.training.optim import build_optimizer
    from lyricslab.training.train import compile_model

    cfg = compose([f"model={model_name}", *extra, *tiny()])
    keras.utils.set_random_seed(0)
    ours = build_model(cfg, vocab)
    compile_model(ours, build_optimizer(cfg, steps()))
    plain = plain_rnn(cfg, vocab) if cfg.model.family == "rnn" else plain_transformer(cfg, vocab)
    plain.compile(optimizer=keras.optimizers.RMSprop(cfg.optimizer.learning_rate, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds_ours, ds_plain = batches(cfg, vocab, steps())
    tokens = steps() * cfg.trainer.batch_size * cfg.trainer.seq_len
    callbacks = [DerivedMetrics(cfg.trainer.batch_size * cfg.trainer.seq_len)]
    run_ours = lambda: timed(lambda: ours.fit(ds_ours, epochs=1, verbose=0, callbacks=callbacks))  # noqa: E731
    run_plain = lambda: timed(lambda: plain.fit(ds_plain, epochs=1, verbose=0))  # noqa: E731
    return cfg, ours, plain, run_ours, run_plain, tokens


def run() -> dict:
    from lyricslab.training.flops import matmul_peak, mfu

    rounds = 2 if quick() else 5
    checks, figures = [], {}
    for name in ("lstm", "transformer"):
        cfg, ours, plain, run_ours, run_plain, tokens = pair(name)
        run_ours(), run_plain()  # compile and warm up both
        t_ours, t_plain = interleaved(run_ours, run_plain, rounds=rounds)
        figures[f"{name}: params lyricslab / plain"] = f"{ours.count_params():,} / {plain.count_params():,}"
        figures[f"{name}: tokens/s lyricslab"] = tokens / t_ours
        figures[f"{name}: tokens/s plain Keras"] = tokens / t_plain
        figures[f"{name}: MFU lyricslab, % of the matmul peak (flops.mfu)"] = 100 * mfu(cfg, VOCAB, tokens / t_ours)
        checks.append(check(f"{name}: throughput lyricslab ÷ plain Keras", t_plain / t_ours, TARGET_RATIO))
    figures[f"matmul peak GFLOP/s ({cfg.trainer.precision}; lyricslab.training.flops.matmul_peak)"] = (
        matmul_peak(cfg.trainer.precision) / 1e9)
    shape = " (quick: tiny 1-layer models)" if quick() else ""
    budget = (f"{steps()} steps of {cfg.trainer.batch_size} × {cfg.trainer.seq_len} random tokens (vocab {VOCAB}) "
              f"per epoch, best of {rounds} alternating epochs per side after one warm-up epoch each{shape}")
    return record("throughput", "Training throughput", budget, checks, figures)


if __name__ == "__main__":
    run()
