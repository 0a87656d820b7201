"""Model FLOP utilisation (MFU) of the default LSTM and transformer, with the one definition every
training run logs `mfu` with (`lyricslab.training.flops.mfu`): training FLOPs per token × training
tokens/s ÷ this machine's **measured matmul peak** at the run's precision (float32 here), not a
datasheet peak (one for these shared vCPUs would be higher, and the MFU lower).

The peak is `lyricslab.training.flops.matmul_peak`, the one a run on this machine divides by: the
fastest of repeated 2048×2048 `tf.matmul`s, cached per device, core count and dtype. This
benchmark measures it again before and after the models (both shown as figures) and the cache
keeps the highest measurement, since contention only ever lowers one; the MFUs below and every
later run's `mfu` use that highest peak.

Model FLOPs are counted analytically by lyricslab.training.flops: matmuls only, training = 3 ×
forward. The output head is `2·d·V`, LSTM gates are `2·4·u·(in+u)`, and the transformer counts its
projections, FFN and `4·T·w` for attention. Tokens/s is the best of several epochs of the
lyricslab side of the throughput benchmark (the model compiled as train() compiles it, on cached
batches of random tokens). Both models are measured at two vocabularies: the default tokenizer's
(char) as it comes out of the demo corpus, where the recurrent or attention matmuls dominate, and
the word tokenizer's 8000, where the softmax head dominates.

Caveat: the target is set for real-data recipes, but this benchmark measures the default shapes,
not the shipped recipe (`experiment=lyrics_lstm`, a 2×256 LSTM like the default one, trained
with its state carried across windows); that recipe's run logs its own `mfu`, which the quality
benchmark reports. The default shapes' small matmuls (batch 32 × 64 tokens, 128–256 wide; the
LSTM's recurrent matmuls are sequential 32×256 @ 256×1024 products) don't reach a 2048³ matmul's
efficiency on 2 cores.
"""

from __future__ import annotations

from bench.common import Target, check, quick, record
from bench.throughput import pair, steps
from lyricslab.training.flops import (
    matmul_peak,
    mfu,
    remeasure_matmul_peak,
    training_flops_per_token,
)

WORD_VOCAB = 8000  # tokenizer=word default vocab_size
TARGET_MFU = Target(">=", 0.45, "%")  # lyricslab.training.flops.mfu, for real-data recipes


def default_vocab() -> tuple[str, int, str]:
    """The default config's tokenizer kind, the vocabulary it learns from the demo corpus, and its
    trainer.precision (the dtype of the peak)."""
    from bench.common import compose, out_dir
    from lyricslab.data.prepare import load_splits
    from lyricslab.text.factory import train_tokenizer

    cfg = compose([])
    splits = load_splits(cfg.data, cfg.data_size.songs, cache_dir=out_dir() / "cache")
    vocab = train_tokenizer(cfg.tokenizer, splits.train).vocab_size
    return str(cfg.tokenizer.kind), vocab, str(cfg.trainer.precision)


def run() -> dict:
    epochs = 2 if quick() else 5
    kind, default, precision = default_vocab()
    vocabs = {f"default {kind} tokenizer": default, "word tokenizer": WORD_VOCAB}
    # Quick mode checks the code path: it reads (or, the first time on a machine, measures) the cached peak.
    measured = {} if quick() else {"before": remeasure_matmul_peak(precision)}
    speeds = {}
    for vocab_name, vocab in vocabs.items():
        for name in ("lstm", "transformer"):
            cfg, _, _, run_ours, _, tokens = pair(name, vocab)
            run_ours()  # compile
            speeds[(name, vocab_name, vocab)] = (cfg, tokens / min(run_ours() for _ in range(epochs)))
    if not quick():
        measured["after"] = remeasure_matmul_peak(precision)
    peak = matmul_peak(precision)
    figures: dict[str, object] = {
        f"matmul peak GFLOP/s ({precision}; lyricslab.training.flops.matmul_peak, the highest measured on this "
        "machine: the denominator)": peak / 1e9}
    for when, flops in measured.items():
        figures[f"matmul GFLOP/s measured now, {when} the models"] = flops / 1e9
    checks = []
    for (name, vocab_name, vocab), (cfg, tokens_per_second) in speeds.items():
        figures[f"{name}, vocab {vocab} ({vocab_name}): model GFLOP/s (training)"] = (
            training_flops_per_token(cfg, vocab) * tokens_per_second / 1e9)
        checks.append(check(f"{name}, vocab {vocab} ({vocab_name}): MFU vs measured matmul peak",
                            mfu(cfg, vocab, tokens_per_second, peak), TARGET_MFU))
    budget = (f"default LSTM and transformer shapes, {steps()} steps of {cfg.trainer.batch_size} × "
              f"{cfg.trainer.seq_len} random tokens per epoch, best of {epochs} epochs after one to "
              f"compile; vocabularies {', '.join(f'{v} ({k})' for k, v in vocabs.items())}")
    return record("mfu", "MFU", budget, checks, figures)


if __name__ == "__main__":
    run()
