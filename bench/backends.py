"""Keras backends: training tokens/s of the LSTM recipe (`experiment=lyrics_lstm`: 2×256 LSTM, state
carried across 32 × 64 batches) and the transformer recipe (`experiment=lyrics_transformer`: 4
layers, width 256, 16 × 512 batches) on TensorFlow and on JAX, on this machine's CPU.

Keras picks its backend once per process, so each measurement is a child process
(`KERAS_BACKEND=...`), and the two backends alternate (tf, jax, jax, tf, ...) so that a slow spell
of the machine hits both. A child builds the recipe's training model, optimizer and input pipeline
with lyricslab's own functions (`build_training_model`, `compile_model`, `to_dataset`, as train()
does), trains a warm-up round (which compiles), then times a round of training steps on random
tokens. The figure per backend is its best round; the ratio is JAX ÷ TensorFlow tokens/s. MFU is
lyricslab.training.flops.mfu over the machine's matmul peak, which each child measures again on its
backend (XLA's CPU kernels and oneDNN differ; the cache keeps the higher, shared by both).

The GPU recipe (`experiment=lyrics_gpu`) needs a GPU: its rows say "not measured" unless one is
visible to JAX, in which case its tokens/s and bf16 MFU are measured the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Target, check, quick, record

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax")
VOCAB = 120  # about a character vocabulary of real lyrics
RECIPES = {"lstm": "experiment=lyrics_lstm", "transformer": "experiment=lyrics_transformer",
           "gpu": "experiment=lyrics_gpu"}
TARGET_JAX = Target(">=", 0.8, "x")  # JAX tokens/s ÷ TensorFlow's: JAX should not cost a CPU user much
TARGET_GPU_MFU = Target(">=", 0.45, "%")
QUICK_SHAPE = ["model.layers=1", "embedding=small", "++model.units=32", "++model.heads=2", "++model.ff_dim=64",
               "trainer.batch_size=4", "trainer.seq_len=32", "trainer.precision=float32"]


def steps(recipe: str) -> int:
    return 2 if quick() else {"lstm": 40, "transformer": 6, "gpu": 30}.get(recipe, 20)


def measure(recipe: str, overrides: list[str] | None = None) -> dict:
    """In a child process on one backend: the recipe's training tokens/s and MFU (best of 2 rounds).
    `overrides`: the config to time instead of RECIPES[recipe] (`recipe` then only sizes the rounds)."""
    import time

    import keras
    import numpy as np

    from bench.common import compose
    from lyricslab.text.windows import Windows
    from lyricslab.training.batches import to_dataset
    from lyricslab.training.fitting import configure_runtime
    from lyricslab.training.flops import (
        gpu_name,
        remeasure_matmul_peak,
        training_flops_per_token,
    )
    from lyricslab.training.optim import build_optimizer
    from lyricslab.training.train import (
        build_training_model,
        compile_model,
        training_windows,
    )

    config = [RECIPES[recipe]] if overrides is None else list(overrides)
    cfg = compose([*config, f"backend={keras.backend.backend()}", *(QUICK_SHAPE if quick() else [])])
    tr, n = cfg.trainer, steps(recipe)
    configure_runtime(tr)
    model = build_training_model(cfg, VOCAB)
    compile_model(model, build_optimizer(cfg, n))
    stream = np.random.default_rng(0).integers(3, VOCAB, size=tr.batch_size * tr.seq_len * (n + 2) + 1)
    windows: Windows = training_windows(tr, stream.astype(np.int32))
    data = to_dataset(windows, tr.batch_size, shuffle=not tr.get("carry_state"), seed=0, repeat=True)
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # compiles
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=n, verbose=0)
        best = min(best, time.perf_counter() - start)
    tokens_per_s = n * tr.batch_size * tr.seq_len / best
    return {"tokens_per_s": tokens_per_s, "flops_per_token": training_flops_per_token(cfg, VOCAB),
            "peak": remeasure_matmul_peak(str(tr.precision)), "gpu": gpu_name(), "precision": str(tr.precision)}


def child(recipe: str, backend: str, overrides: list[str] | None = None) -> dict:
    """measure() in a new process on `backend` (Keras picks its backend once per process)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    extra = [json.dumps(overrides)] if overrides is not None else []
    done = subprocess.run([sys.executable, "-m", "bench.backends", recipe, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{recipe} on {backend} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def jax_sees_a_gpu() -> bool:
    code = "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return done.returncode == 0 and done.stdout.strip().endswith("True")


def run() -> dict:
    rounds = 1 if quick() else 2
    checks, figures = [], {}
    # Quick mode times the LSTM recipe only: the transformer's path through measure() is the same code.
    for recipe in ("lstm",) if quick() else ("lstm", "transformer"):
        seen: dict[str, list[dict]] = {b: [] for b in BACKENDS}
        for i in range(rounds):  # alternate, swapping which backend goes first
            for backend in (BACKENDS if i % 2 == 0 else BACKENDS[::-1]):
                seen[backend].append(child(recipe, backend))
                print(f"    {recipe} on {backend}: {seen[backend][-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
        best = {b: max(seen[b], key=lambda r: r["tokens_per_s"]) for b in BACKENDS}
        peak = max(r["peak"] for runs in seen.values() for r in runs)  # the machine's: the best either reached
        for backend in BACKENDS:
            figures[f"{recipe} recipe: tokens/s on {backend} (CPU)"] = best[backend]["tokens_per_s"]
            figures[f"{recipe} recipe: MFU on {backend}, % of the matmul peak"] = (
                100 * best[backend]["flops_per_token"] * best[backend]["tokens_per_s"] / peak)
        ratio = best["jax"]["tokens_per_s"] / best["tensorflow"]["tokens_per_s"]
        checks.append(check(f"{recipe} recipe: tokens/s JAX ÷ TensorFlow (CPU)", ratio, TARGET_JAX))
    if jax_sees_a_gpu():
        gpu = child("gpu", "jax")
        figures["GPU recipe: device"] = gpu["gpu"]
        figures["GPU recipe: tokens/s on JAX"] = gpu["tokens_per_s"]
        checks.append(check("GPU recipe: bf16 MFU on JAX", gpu["flops_per_token"] * gpu["tokens_per_s"] / gpu["peak"],
                            TARGET_GPU_MFU))
    else:
        figures["GPU recipe (experiment=lyrics_gpu): tokens/s, bf16 MFU, bits/char in 10 GPU-minutes"] = (
            "not measured: no GPU visible to JAX on this machine")
    figures["matmul peak GFLOP/s (float32, the best of every child's measurement)"] = peak / 1e9
    shape = " (quick: tiny 1-layer models, batches of 4 × 32)" if quick() else ""
    budget = (f"random tokens (vocab {VOCAB}); per backend and recipe {rounds} child process(es), each timing "
              f"2 rounds of {steps('lstm')} (LSTM) or {steps('transformer')} (transformer) steps after a warm-up "
              f"round; best round shown{shape}")
    return record("backends", "Keras backends: TensorFlow vs JAX", budget, checks, figures,
                  overrides=[RECIPES["lstm"], RECIPES["transformer"]])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in RECIPES:  # a child: one recipe on this process's backend
        from lyricslab.config.runtime import start_keras

        start_keras()
        print(json.dumps(measure(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)))
    else:
        run()
