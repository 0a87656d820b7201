"""Model FLOP utilisation against a **measured matmul peak**, not a datasheet peak: the model's
training FLOP/s divided by the FLOP/s that one large float32 `tf.matmul` (2048³) reaches on
this machine in the same run, measured before and after the models (the higher of the two is
the denominator). A datasheet peak for these vCPUs would be higher, and the MFU lower.

Model FLOPs are counted analytically by lyricslab.training.flops, the formula train() logs `mfu` with:
matmuls only, training = 3 × forward. The output head is `2·d·V`, LSTM gates are
`2·4·u·(in+u)`, and the transformer counts its projections, FFN and `4·T·w` for attention.
The default LSTM and transformer are measured at two vocabularies: the
default tokenizer's (char) as it comes out of the demo corpus, where the recurrent or attention
matmuls dominate, and the word tokenizer's 8000, where the softmax head dominates.

Caveat: the target is set for real-data recipes. The project ships no such recipe yet, so the
default shapes are measured; their small matmuls (batch 32 × 64 tokens, 128–256 wide; the LSTM's
recurrent matmuls are sequential 32×256 @ 256×1024 products) don't reach a 2048³ matmul's
efficiency on 2 cores.
"""

from __future__ import annotations

from bench.common import Target, check, quick, record, timed
from bench.throughput import pair, steps
from lyricslab.training.flops import training_flops_per_token

WORD_VOCAB = 8000  # tokenizer=word default vocab_size
TARGET_MFU = Target(">=", 0.45, "%")  # training FLOP/s ÷ measured matmul peak, for real-data recipes


def matmul_flops_per_second(n: int = 2048, repeats: int = 8) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()  # warm up
    best = min(timed(lambda: tf.matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * n**3 / best


def default_vocab() -> tuple[str, int]:
    """The default config's tokenizer kind and the vocabulary it learns from the demo corpus."""
    from bench.common import compose, out_dir
    from lyricslab.data.prepare import load_splits
    from lyricslab.text.factory import train_tokenizer

    cfg = compose([])
    splits = load_splits(cfg.data, cfg.data_size.songs, cache_dir=out_dir() / "cache")
    return str(cfg.tokenizer.kind), train_tokenizer(cfg.tokenizer, splits.train).vocab_size


def run() -> dict:
    n, repeats = (256, 2) if quick() else (2048, 8)
    kind, default = default_vocab()
    vocabs = {f"default {kind} tokenizer": default, "word tokenizer": WORD_VOCAB}
    before = matmul_flops_per_second(n, repeats)
    model_flops = {}
    for vocab_name, vocab in vocabs.items():
        for name in ("lstm", "transformer"):
            cfg, _, _, run_ours, _, tokens = pair(name, vocab)
            run_ours()  # compile
            seconds = min(run_ours() for _ in range(2 if quick() else 5))
            model_flops[(name, vocab_name, vocab)] = training_flops_per_token(cfg, vocab) * tokens / seconds
    after = matmul_flops_per_second(n, repeats)
    peak = max(before, after)
    figures = {f"measured matmul peak GFLOP/s before (float32, {n}³, best of {repeats})": before / 1e9,
               "measured matmul peak GFLOP/s after": after / 1e9}
    checks = []
    for (name, vocab_name, vocab), flops in model_flops.items():
        figures[f"{name}, vocab {vocab} ({vocab_name}): model GFLOP/s (training)"] = flops / 1e9
        checks.append(check(f"{name}, vocab {vocab} ({vocab_name}): MFU vs measured matmul peak", flops / peak,
                            TARGET_MFU))
    budget = (f"default LSTM and transformer shapes, {steps()} steps of {cfg.trainer.batch_size} × "
              f"{cfg.trainer.seq_len} random tokens per epoch, best of {2 if quick() else 5} epochs after one to "
              f"compile; vocabularies {', '.join(f'{v} ({k})' for k, v in vocabs.items())}")
    return record("mfu", "MFU", budget, checks, figures)


if __name__ == "__main__":
    run()
