"""LoRA against full fine-tuning of the same GPT-2 preset, side by side: trainable parameters,
training step time and peak memory.

Both sides load the same preset through `model=gpt2_lora` (lora_rank 4 on query and value, the
config's default, against `model.lora_rank=null`) and train on the same random windows with
AdamW. Each side runs in its own subprocess, so its peak resident memory (`ru_maxrss`: TensorFlow's
baseline plus the model, its gradients and the optimizer's two slots per trainable weight) is
its own; the subprocesses alternate, swapping which goes first each round, and the best step time
of each side is kept. The step time is the median of the timed steps after the first (compiling) one.

The preset is the tiny one the project builds (2 layers, width 64: `python -m lyricslab.presets
tiny-gpt2 OUT`), so on it LoRA's savings are small in absolute terms: the optimizer slots it saves are
those of a 150k-parameter model, next to TensorFlow's few hundred MB. Set `BENCH_LORA_PRESET` to a
real preset folder (e.g. gpt2_base_en's) to measure one that matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Target, check, compose, out_dir, quick, record

TARGET_TRAINABLE = Target("<=", 0.05, "%")  # LoRA's trainable share of full fine-tuning's
TARGET_STEP = Target("<=", 1.0, "x")        # LoRA step time / full fine-tuning step time
TARGET_MEMORY = Target("<=", 1.0, "x")      # LoRA peak memory / full fine-tuning peak memory
SIDES = {"lora": [], "full": ["model.lora_rank=null"]}


def shapes() -> tuple[int, int, int]:
    """(batch, seq_len, timed steps)."""
    return (2, 16, 2) if quick() else (8, 64, 20)


def preset() -> Path:
    """BENCH_LORA_PRESET, or the tiny GPT-2 preset, built once into bench/out/."""
    given = os.environ.get("BENCH_LORA_PRESET")
    if given:
        return Path(given).resolve()
    folder = out_dir() / "cache" / "tiny-gpt2"
    if not (folder / "config.json").exists():
        from lyricslab.hub.presets import build_tiny_gpt2

        build_tiny_gpt2(folder)
    return folder.resolve()


def measure_side(side: str, preset_dir: str) -> dict:
    """In a fresh process: build one side, time its training steps, report its parameters and peak RSS."""
    import resource
    import statistics
    import time

    import keras
    import numpy as np

    from lyricslab.models import build_model
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer
    from lyricslab.training.fitting import configure_runtime
    from lyricslab.training.train import compile_model

    batch, seq_len, steps = shapes()
    cfg = compose(["model=gpt2_lora", f"model.preset={preset_dir}", f"trainer.seq_len={seq_len}", *SIDES[side]])
    configure_runtime(cfg.trainer)
    tok = GPT2BPETokenizer.from_preset(preset_dir)
    model = build_model(cfg, tok.vocab_size)
    compile_model(model, keras.optimizers.AdamW(1e-4))
    x = np.random.default_rng(0).integers(3, tok.vocab_size, size=(batch, seq_len + 1)).astype("int32")
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model.train_on_batch(x[:, :-1], x[:, 1:])
        times.append(time.perf_counter() - start)
    return {"trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)), "total": model.count_params(),
            "step_seconds": statistics.median(times[1:]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_side(side: str, preset_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.lora", "side", side, str(preset_dir)], capture_output=True,
                         text=True, timeout=1800, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise SystemExit(f"error: the {side} side failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    preset_dir = preset()
    rounds = 1 if quick() else 3
    results: dict[str, list[dict]] = {"lora": [], "full": []}
    for i in range(rounds):
        for side in (("lora", "full") if i % 2 == 0 else ("full", "lora")):
            results[side].append(run_side(side, preset_dir))
    best = {side: min(r["step_seconds"] for r in rs) for side, rs in results.items()}
    peak = {side: min(r["peak_rss_mb"] for r in rs) for side, rs in results.items()}
    lora, full = results["lora"][0], results["full"][0]
    figures = {"preset": str(preset_dir.name), "total parameters": full["total"],
               "LoRA trainable parameters": lora["trainable"], "full fine-tuning trainable parameters": full["trainable"],
               "LoRA step seconds (median of timed steps, best run)": best["lora"],
               "full fine-tuning step seconds": best["full"],
               "LoRA peak RSS MB": peak["lora"], "full fine-tuning peak RSS MB": peak["full"]}
    checks = [check("LoRA trainable parameters / full fine-tuning's", lora["trainable"] / full["trainable"],
                    TARGET_TRAINABLE),
              check("LoRA step time / full fine-tuning's", best["lora"] / best["full"], TARGET_STEP),
              check("LoRA peak memory / full fine-tuning's", peak["lora"] / peak["full"], TARGET_MEMORY)]
    batch, seq_len, steps = shapes()
    budget = (f"preset {preset_dir.name}, lora_rank 4 on query and value vs every weight, AdamW, {steps} timed "
              f"steps of {batch} × {seq_len} random tokens after one to compile, {rounds} alternating subprocess "
              f"run(s) per side")
    sides = [" ".join(["model=gpt2_lora", f"model.preset={preset_dir.name}", f"trainer.seq_len={seq_len}", *extra])
             for extra in SIDES.values()]
    return record("lora", "LoRA vs full fine-tuning", budget, checks, figures, overrides=sides)


if __name__ == "__main__":
    if sys.argv[1:2] == ["side"]:
        print(json.dumps(measure_side(sys.argv[2], sys.argv[3])))
    else:
        run()
