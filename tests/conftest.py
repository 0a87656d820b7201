"""Shared fixtures: configs composed with Hydra's compose(), tiny models, a temporary mlruns/."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from lyricslab.config.paths import CONF_DIR

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR
DEV_CSV = ROOT.parent / "shared" / "data" / "lyrics_dev.csv"
COLUMNS = ["title", "tag", "artist", "year", "views", "features", "lyrics", "id",
           "language_cld3", "language_ft", "language"]

# Small enough that one epoch of any model takes a couple of seconds on 2 cores.
TINY = ["trainer.epochs=1", "trainer.seq_len=32", "trainer.batch_size=16", "trainer.steps_per_epoch=4",
        "model.layers=1", "embedding=small", "samples.max_tokens=12", "samples.prompts=[\"[verse]\\n\"]",
        "samples.temperatures=[0.8]", "trainer.verbose=0"]
TINY_BY_MODEL = {"transformer": ["model.heads=2", "model.ff_dim=64"], "lstm": ["model.units=32"],
                 "gru": ["model.units=32"], "simple_rnn": ["model.units=32"]}


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides or [])


# Whole modules whose tests train several models or run commands in subprocesses: `make test-fast`
# (pytest -m "not slow") leaves them out; their modules are still exercised there by the faster tests.
SLOW_MODULES = {"test_adversarial", "test_bad_input", "test_bench", "test_bert_mlm", "test_budget", "test_carried_state",
                "test_cli", "test_conditioning", "test_generate", "test_gpt2_lora", "test_install", "test_services",
                "test_sweep", "test_sweep_objectives", "test_sweep_samplers", "test_two_hosts", "test_warm_start"}
# test_training.py trains a model in every test: test-fast keeps one whole run (it passes through
# data, text, models, training, scoring, sampling and tracking) and the tests that train nothing.
FAST_TRAINING = {"test_model_family_trains_and_logs_a_complete_run[lstm-char]", "test_test_bits_per_char_known_answer",
                 "test_tied_embedding_is_one_matrix_used_both_ways",
                 "test_recurrent_dropout_is_on_the_cell_and_only_in_training"}
# The second pass of `make test` runs these again on JAX (KERAS_BACKEND=jax pytest -m backends): training,
# carried state, full-context scoring, generation, evaluate and one sweep, with the numerical references.
BACKEND_MODULES = {"test_evaluation", "test_generate", "test_carried_state", "test_rnn_reference", "test_control_inputs",
                   "test_song_cache", "test_evaluate_contamination", "test_charset"}
BACKEND_TESTS = FAST_TRAINING | {"test_a_study_over_two_runs_logs_prunes_resumes_registers_and_reruns_its_best",
                                 "test_model_family_trains_and_logs_a_complete_run[transformer-subword]",
                                 "test_model_family_trains_and_logs_a_complete_run[gru-word]",
                                 "test_diverging_run_ends_failed_with_the_reason[rmsprop]",
                                 "test_line_prefix_forces_the_controls_after_a_line_end_and_nowhere_else"}
# Fixtures (and calls) that train a model: their tests get the `training` marker.
TRAINING_FIXTURES = {"trained_run", "finished_sweep", "bert_run", "gpt2_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if "services" in item.fixturenames:
            item.add_marker(pytest.mark.services)
            item.add_marker(pytest.mark.slow)
        if module in SLOW_MODULES or (module == "test_training" and item.name not in FAST_TRAINING):
            item.add_marker(pytest.mark.slow)
        if module in BACKEND_MODULES or item.name in BACKEND_TESTS:
            item.add_marker(pytest.mark.backends)
        if TRAINING_FIXTURES & set(item.fixturenames) or "train(" in _source(item):
            item.add_marker(pytest.mark.training)


def _source(item) -> str:
    import inspect

    try:
        return inspect.getsource(item.function)
    except (OSError, TypeError):
        return ""


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which is the configs' default tracking.uri:
    one test's store must not become the next test's default."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    """Overrides that send runs and caches into this test's temporary folder."""
    return [f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db", f"tracking.artifact_root={tmp_path}/mlruns/artifacts",
            f"data.cache_dir={tmp_path}/cache"]


def sharpen(model) -> None:
    """Scale a tiny model's matrices by 3, so that context visibly changes its scores (at initialisation
    it barely does), while keeping every SimpleRNN recurrence contractive (spectral radius 0.9).

    A tanh recurrence with gain above 1 is chaotic: the last-bit rounding differences between two
    correct kernels (oneDNN's and Eigen's summation order, or a twin layer's graph) then grow
    exponentially, by 2-4% of the NLL over 200 steps (issue 22). LSTM and GRU gates keep theirs bounded.
    """
    import keras

    model.set_weights([w * 3 if w.ndim > 1 else w for w in model.get_weights()])
    for layer in model.layers:
        if isinstance(layer, keras.layers.SimpleRNN):
            recurrent = layer.cell.recurrent_kernel
            radius = float(np.abs(np.linalg.eigvals(np.asarray(recurrent, np.float64))).max())
            recurrent.assign(np.asarray(recurrent) * (0.9 / radius))


def tiny(model: str = "lstm") -> list[str]:
    return [f"model={model}", *TINY, *TINY_BY_MODEL[model]]


def song(i: int, **fields) -> dict:
    """A fixture row in the Genius schema, with original placeholder lyrics."""
    lyrics = fields.pop("lyrics", None) or (
        f"[Verse 1]\nPaper boats are sailing down the gutter number {i}\n"
        f"Rain is drumming softly on the window of the diner\n\n[Chorus: Test & Fixture]\n"
        f"Row row row the little boat {i}\nAll the way to morning light\n")
    row = dict(title=f"Fixture Song {i}", tag="pop", artist="Fixture Band", year=2010 + i % 10, views=100 * i,
               features='{"Guest One","Guest Two"}', lyrics=lyrics, id=1000 + i, language_cld3="en",
               language_ft="en", language="en")
    row.update(fields)
    return row


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
