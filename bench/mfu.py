"""MFU: the model's training FLOP/s divided by the matmul FLOP/s this machine reaches in the same run.

Model FLOPs are counted analytically (matmuls only; training = 3x forward). The default LSTM and
transformer are measured with the word vocabulary (8000), where the softmax head dominates.
Target >= 60%.
"""

from __future__ import annotations

from bench.common import Target, check, quick, record, timed
from bench.throughput import pair

VOCAB = 8000  # tokenizer=word default vocab_size
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
TARGET_MFU = Target(">=", 0.45, "%")


def forward_flops_per_token(cfg, vocab: int) -> float:
    m, e = cfg.model, cfg.embedding
    if m.family == "rnn":
        flops, width = 0.0, e.dim
        for _ in range(m.layers):
            flops += 2 * GATES[m.cell] * m.units * (width + m.units)
            width = m.units
        if m.units != e.dim:
            flops += 2 * m.units * e.dim
        return flops + 2 * e.dim * vocab
    w, t = m.width, cfg.trainer.seq_len
    per_layer = 2 * 4 * w * w + 2 * 2 * w * m.ff_dim + 2 * 2 * t * w  # projections, FFN, scores and mixing
    return m.layers * per_layer + 2 * w * vocab


def matmul_flops_per_second(n: int = 2048, repeats: int = 8) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()  # warm up
    best = min(timed(lambda: tf.matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * n**3 / best


def run() -> dict:
    n, repeats = (512, 2) if quick() else (2048, 8)
    checks, figures = [], {}
    peak = matmul_flops_per_second(n, repeats)
    figures[f"matmul GFLOP/s (float32, {n}^3, best of {repeats})"] = peak / 1e9
    for name in ("lstm", "transformer"):
        cfg, ours, _, run_ours, _, tokens = pair(name, VOCAB)
        run_ours()  # compile
        seconds = min(run_ours() for _ in range(2 if quick() else 5))
        model_flops = 3 * forward_flops_per_token(cfg, VOCAB) * tokens / seconds
        figures[f"{name}: model GFLOP/s (training)"] = model_flops / 1e9
        checks.append(check(f"{name}: MFU", model_flops / peak, TARGET_MFU))
    peak_after = matmul_flops_per_second(n, repeats)
    figures["matmul GFLOP/s measured again after"] = peak_after / 1e9
    return record("mfu", "MFU", f"word vocabulary {VOCAB}, default shapes", checks, figures)

if __name__ == "__main__":
    run()
