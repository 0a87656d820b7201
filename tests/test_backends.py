"""The same weights give the same scores on TensorFlow and JAX, and a model saved on one loads on the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

BACKENDS = ("tensorflow", "jax")
pytestmark = pytest.mark.skipif(any(__import__("importlib").util.find_spec(b) is None for b in BACKENDS),
                                reason="needs both tensorflow and jax installed (pip install -e '.[test]')")


def on(backend: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_parity.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_same_weights_score_the_same_on_both_backends_and_load_across(tmp_path: Path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "stream.npy", rng.integers(1, 40, size=700).astype(np.int32))  # 22 windows of 32, ragged end
    for backend in BACKENDS:
        on(backend, "make", str(tmp_path))
    bits = {backend: json.loads(on(backend, "score", str(tmp_path)).stdout.strip().splitlines()[-1])["bits"]
            for backend in BACKENDS}
    models = {f"{name}-{saved}" for name in ("lstm", "gru", "simple_rnn", "transformer") for saved in BACKENDS}
    for backend in BACKENDS:  # every model, saved on either backend, loads and scores on both
        assert set(bits[backend]) == models
    for model in sorted(models):
        tf_bits, jax_bits = bits["tensorflow"][model], bits["jax"][model]
        assert abs(tf_bits - jax_bits) < 1e-4, f"{model}: tensorflow {tf_bits:.6f}, jax {jax_bits:.6f} bits/token"
    assert len({round(v, 3) for v in bits["jax"].values()}) == len(models)  # 8 different models, not one score


def test_the_gpu_recipe_runs_a_tiny_smoke_version_on_cpu(tmp_path: Path):
    """experiment=lyrics_gpu (JAX, bf16, a transformer sized for a GPU) composes and trains end to end on a
    CPU when shrunk, through the command a user types; its run logs the backend it ran on."""
    import mlflow

    shrink = ["data=demo", "data_size=tiny", "model.layers=1", "embedding.dim=32", "model.heads=2", "model.ff_dim=64",
              "trainer.seq_len=32", "trainer.batch_size=4", "trainer.budget_minutes=null", "trainer.epochs=1",
              "trainer.eval_every_minutes=null", "trainer.steps_per_epoch=2", "samples.max_tokens=20",
              "samples.candidates=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
              f"tracking.artifact_root={tmp_path}/artifacts", f"data.cache_dir={tmp_path}/cache", "trainer.verbose=0"]
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-m", "lyricslab.run", "experiment=lyrics_gpu", *shrink], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["backend"] == "jax" and run.data.tags["keras_backend"] == "jax"
    assert run.data.params["trainer.precision"] == "bf16" and run.data.params["model.family"] == "transformer"
    assert 0 < run.data.metrics["test_bpc"] < 20
