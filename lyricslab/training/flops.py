"""Model FLOPs per token and MFU (model FLOP utilisation): the one definition and the one peak.

MFU = training FLOPs per token × training tokens/s ÷ this machine's measured matmul peak at the
run's precision (`mfu`). train() logs it as `mfu` for every run, and bench/mfu.py and
bench/throughput.py report it through the same `mfu` and the same cached `matmul_peak`; nothing
else in the project computes an MFU or measures a peak.

FLOPs are the model's matmuls, counted analytically from the config (2 FLOPs per multiply-add):
the output head `2·d·V`, each RNN layer `2·gates·u·(in+u)` (plus the `2·u·d` projection when
units ≠ embedding size), each transformer block `2·4·w²` (Q, K, V and output projections),
`2·2·w·ff` (FFN) and `2·2·T·w` (attention scores and mixing over T = seq_len). Training is
3 × forward (the backward pass costs twice the forward): the 6N + 12·L·T·w of PaLM's appendix B
and nanoGPT's estimate_mfu. Embedding lookups, biases, norms and softmax are left out, as there.

The denominator is a matmul peak measured on this machine at the run's precision (a datasheet
peak for shared vCPUs is neither known nor reached): the fastest of repeated n×n matmuls
(`keras.ops`, on the running backend), cached per device, core count and dtype. The backends' CPU
kernels differ (oneDNN for TensorFlow, XLA's for JAX); the cache keeps the higher, so both share
one peak. Other jobs on the cores only ever make a measurement lower, so a new measurement (`remeasure_matmul_peak`, which `python -m bench mfu` runs) replaces
the cached peak only when it is higher.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from lyricslab.hub.presets import backbone_config

GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}  # weight matrices per RNN cell (Keras' kernel is in × gates·u)
PEAK_DTYPES = {"float32": "float32", "bf16": "bfloat16"}  # trainer.precision -> matmul dtype


def forward_flops_per_token(cfg: Any, vocab: int) -> float:
    """Matmul FLOPs of one forward pass, per token, for the model `cfg` describes."""
    m, e = cfg.model, cfg.embedding
    if m.family == "rnn":
        flops, width = 0.0, e.dim
        for _ in range(m.layers):
            flops += 2 * GATES[m.cell] * m.units * (width + m.units)
            width = m.units
        if m.units != e.dim:
            flops += 2 * m.units * e.dim
        return flops + 2 * e.dim * vocab
    if m.family == "gpt2":  # the preset's shapes; GPT-2's MLP width is intermediate_dim

        shape = backbone_config(m.preset, "gpt2")
        w, ff, layers, t = shape["hidden_dim"], shape["intermediate_dim"], shape["num_layers"], cfg.trainer.seq_len
        return layers * (2 * 4 * w * w + 2 * 2 * w * ff + 2 * 2 * t * w) + 2 * w * vocab
    w, t = m.width, cfg.trainer.seq_len
    per_layer = 2 * 4 * w * w + 2 * 2 * w * m.ff_dim + 2 * 2 * t * w  # projections, FFN, scores and mixing
    return m.layers * per_layer + 2 * w * vocab


def training_flops_per_token(cfg: Any, vocab: int) -> float:
    """Forward + backward (twice the forward) matmul FLOPs per training token.

    Under LoRA the frozen weights need no weight gradients, only the gradients flowing back through
    them: the backward pass costs one forward, not two (the rank-r adapters add well under 1%).
    """
    backward = 1 if cfg.model.get("lora_rank") else 2
    return (1 + backward) * forward_flops_per_token(cfg, vocab)


def gpu_name() -> str | None:
    """The first GPU the running backend would use, or None."""
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return str(gpus[0].device_kind) if gpus else None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name))
    return None


def device_name() -> str:
    """The GPU the running backend would use, else the CPU model."""
    gpu = gpu_name()
    if gpu:
        return gpu
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def measure_matmul_peak(dtype: str = "float32", n: int | None = None, seconds: float = 1.5) -> float:
    """FLOP/s of the fastest of repeated n×n matmuls in `dtype`, for about `seconds`.

    n defaults to 2048 on a CPU (about 0.1-0.5 s a matmul on a few cores) and 8192 on a GPU,
    where a smaller one would time the launch and the copy back rather than the arithmetic.
    """
    n = n or (8192 if gpu_name() else 2048)
    a = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    a, b = ops.cast(a, dtype), ops.cast(ops.transpose(a), dtype)

    def matmul() -> None:  # a scalar back, not the product: the copy would be timed too on a GPU
        ops.convert_to_numpy(ops.max(ops.matmul(a, b)))

    matmul()  # warm up (thread pools, kernel selection)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            return 2 * n**3 / best


def peak_cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lyricslab" / "peak.json"


def _peak_key(dtype: str) -> str:
    # No backend in the key: the peak is the machine's, the best either backend's kernels reached.
    return f"{device_name()} | {usable_cores()} cores | {dtype}"


def _read_peaks(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _store_peak(path: Path, key: str, flops: float) -> float:
    """Keep the higher of the cached and the new measurement; the peak kept."""
    cache = _read_peaks(path)  # read again right before writing: a parallel run may have stored one
    kept = max(float(cache.get(key, 0.0)), flops)
    if cache.get(key) != kept:
        cache[key] = kept
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel runs: write aside, rename into place
        tmp.write_text(json.dumps(cache, indent=2))
        tmp.replace(path)
    return kept


def matmul_peak(precision: str, path: Path | None = None) -> float:
    """The machine's measured matmul FLOP/s at `trainer.precision`: the denominator of every MFU.

    Measured once per device, core count and dtype and cached, so every run and benchmark on a
    machine shares one denominator (their MFUs compare) and none pays the 1-2 s measurement again.
    """
    dtype = PEAK_DTYPES[str(precision)]
    path = path or peak_cache_path()
    key = _peak_key(dtype)
    cached = _read_peaks(path).get(key)
    if cached is not None:
        return float(cached)
    return _store_peak(path, key, measure_matmul_peak(dtype))


def remeasure_matmul_peak(precision: str, path: Path | None = None) -> float:
    """Measure the matmul peak again and cache it if it beats the cached one; this measurement's FLOP/s.

    `matmul_peak` then returns the higher of the two: contention only ever lowers a measurement.
    """
    dtype = PEAK_DTYPES[str(precision)]
    flops = measure_matmul_peak(dtype)
    _store_peak(path or peak_cache_path(), _peak_key(dtype), flops)
    return flops


def model_flop_utilisation(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOP/s over the peak FLOP/s: the arithmetic of `mfu`."""
    return flops_per_token * tokens_per_second / peak


def mfu(cfg: Any, vocab: int, tokens_per_second: float, peak: float | None = None) -> float:
    """MFU of training the model `cfg` describes at `tokens_per_second`: training FLOPs per token ×
    tokens/s ÷ the measured matmul peak at `cfg.trainer.precision` (`matmul_peak`, unless given)."""
    peak = matmul_peak(cfg.trainer.precision) if peak is None else peak
    return model_flop_utilisation(training_flops_per_token(cfg, vocab), tokens_per_second, peak)
