"""Bad files, configs, search spaces and arguments through the real command lines, as a user types them.

Every case must exit non-zero with a last stderr line that starts with `error:` and no traceback
anywhere. The cheap cases stop before TensorFlow loads (a few seconds each); the one that needs
TensorFlow is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from services import free_port

SWEEP_OK = "study_name: adv\nn_trials: 1\nparams:\n  optimizer.learning_rate: choice(0.001, 0.002)\n"
SWEEP_FILES = {
    "unknown-key.yaml": SWEEP_OK + "bogus: 1\n",
    "empty-choice.yaml": "params:\n  model: choice()\n",
    "empty-interval.yaml": "params:\n  optimizer.learning_rate: interval(5, 1)\n",
    "yaml-syntax.yaml": "params: [\n  - model\n",
    "yaml-list.yaml": "- model\n- optimizer\n",
    "ok.yaml": SWEEP_OK,
    "interval.yaml": "study_name: adv\nn_trials: 1\nparams:\n  optimizer.learning_rate: interval(0.001, 0.01)\n",
}
# Runs and caches go to the case folder; should bad input ever reach training, it is over in seconds.
SANDBOX = ["tracking.uri=sqlite:///{d}/mlruns/mlflow.db", "tracking.artifact_root={d}/mlruns/artifacts",
           "data.cache_dir={d}/cache", "trainer.steps_per_epoch=1", "model.units=16", "samples.max_tokens=4"]


# id -> (command line with {d} for the case folder, text the error line must contain)
CASES = [
    # lyricslab.run: Hydra composition and config values (all before TensorFlow loads)
    pytest.param(["run", "model=lstmm"], "Could not find 'model/lstmm'", id="run-unknown-group-option"),
    pytest.param(["run", "trainer.epochz=3"], "Could not override 'trainer.epochz'", id="run-unknown-key"),
    pytest.param(["run", "model=[lstm"], "no viable alternative", id="run-override-syntax"),
    pytest.param(["run", "trainer.epochs=abc"], "trainer.epochs must be a whole number", id="run-epochs-not-a-number"),
    pytest.param(["run", "trainer.epochs=-1"], "trainer.epochs must be a whole number >= 1", id="run-negative-epochs"),
    pytest.param(["run", "trainer.seq_len=0"], "trainer.seq_len must be a whole number >= 1", id="run-seq-len-0"),
    pytest.param(["run", "tokenizer.kind=morse"], "tokenizer.kind must be one of bert, char, gpt2, subword, word",
                 id="run-unknown-tokenizer-kind"),
    pytest.param(["run", "dropout.rate=1.5"], "dropout.rate must be a number in [0.0, 1.0)", id="run-dropout-above-1"),
    pytest.param(["run", "optimizer.learning_rate=0"], "optimizer.learning_rate must be a number > 0",
                 id="run-learning-rate-0"),
    pytest.param(["run", "data=genius", "data.path={d}"], "is a directory", id="run-data-path-is-a-directory"),
    # lyricslab.sweep: sweep files, search spaces, arguments, data
    pytest.param(["sweep", "sweep=no_such_sweep"], "no sweep named 'no_such_sweep'", id="sweep-unknown-sweep"),
    pytest.param(["sweep", "sweep={d}/unknown-key.yaml"], "unknown keys ['bogus']", id="sweep-file-unknown-key"),
    pytest.param(["sweep", "sweep={d}/empty-choice.yaml"], "params.model", id="sweep-empty-choice"),
    pytest.param(["sweep", "sweep={d}/empty-interval.yaml"], "interval(5.0, 1.0) is empty", id="sweep-interval-5-1"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "n_trials=0"], "n_trials must be at least 1", id="sweep-n-trials-0"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "model=lstmm"], "Could not find 'model/lstmm'",
                 id="sweep-unknown-group-option"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "data=genius", "data.path={d}"], "is a directory",
                 id="sweep-data-path-is-a-directory"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "data=genius", "data.path={d}/empty.csv"], "is empty",
                 id="sweep-data-empty-file"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "data=genius", "data.path={d}/wrong-columns.csv"],
                 "is missing columns", id="sweep-data-wrong-columns"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "workers=abc"], "workers", id="sweep-workers-not-a-number"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "workers=0"], "workers must be a whole number of at least 1",
                 id="sweep-workers-0"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "workers=-2"], "workers must be a whole number of at least 1",
                 id="sweep-workers-negative"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "timeout=soon"], "timeout must be a number of seconds >= 0",
                 id="sweep-timeout-not-a-number"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "timeout=-5"], "timeout must be a number of seconds >= 0",
                 id="sweep-timeout-negative"),
    pytest.param(["sweep", "ok"], "is not key=value", id="sweep-argument-not-key-value"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "storage=mongodb://127.0.0.1/x"], "knows no database 'mongodb'",
                 id="sweep-bad-storage-scheme"),
    pytest.param(["sweep", "sweep={d}/interval.yaml", "sampler.name=annealing"], "sampler.name", id="sweep-unknown-sampler"),
    pytest.param(["sweep", "sweep={d}/yaml-syntax.yaml"], "yaml-syntax.yaml", id="sweep-file-yaml-syntax"),
    pytest.param(["sweep", "sweep={d}/yaml-list.yaml"], "yaml-list.yaml", id="sweep-file-is-a-list"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "max_failed_share=abc"], "max_failed_share",
                 id="sweep-max-failed-share-not-a-number"),
    pytest.param(["sweep", "sweep={d}/ok.yaml", "data=genius", "data.path={d}/binary.csv"], "binary.csv",
                 id="sweep-data-binary-file"),
    # lyricslab.generate
    pytest.param(["generate"], "pass exactly one of run_id=", id="generate-no-source"),
    pytest.param(["generate", "run_id=abc", "temperature=0"], "temperature must be > 0", id="generate-temperature-0"),
    pytest.param(["generate", "run_id=abc", "temperature=hot"], "temperature must be a number",
                 id="generate-temperature-not-a-number"),
    pytest.param(["generate", "run_id=abc", "top_p=2"], "top_p must be in (0, 1]", id="generate-top-p-2"),
    pytest.param(["generate", "run_id=0123456789abcdef", "tracking.uri=sqlite:///{d}/mlflow.db"],
                 "no MLflow run '0123456789abcdef'", id="generate-unknown-run-id"),
    pytest.param(["generate", "run_id=abc", "tracking.uri=http://127.0.0.1:{port}"],
                 "cannot reach the MLflow tracking server", id="generate-tracking-server-down"),
    # lyricslab.compare
    pytest.param(["compare", "sort=loudness", "tracking.uri=sqlite:///{d}/mlflow.db"], "sort must be one of",
                 id="compare-bad-sort-key"),
    pytest.param(["compare", "colour=red"], "compare has no key 'colour'", id="compare-unknown-argument"),
    pytest.param(["compare", "tracking.experiment=no-such-experiment", "tracking.uri=sqlite:///{d}/mlflow.db"],
                 "no-such-experiment", id="compare-unknown-experiment"),
    pytest.param(["compare", "top=abc", "tracking.uri=sqlite:///{d}/mlflow.db"],
                 "top must be a whole number, not 'abc'", id="compare-top-not-a-number"),
    pytest.param(["compare", "top=0", "tracking.uri=sqlite:///{d}/mlflow.db"], "top must be a whole number",
                 id="compare-top-0"),
    pytest.param(["compare", "tracking.uri=http://127.0.0.1:{port}"], "cannot reach the MLflow tracking server",
                 id="compare-tracking-server-down"),
    # lyricslab.evaluate
    pytest.param(["evaluate", "run_id=abc", "csv={d}/empty.csv", "tracking.uri=http://127.0.0.1:{port}"],
                 "cannot reach the MLflow tracking server", id="evaluate-tracking-server-down"),
    # Needs TensorFlow: the file is only read inside train()
    pytest.param(["run", "data=genius", "data.path={d}/empty.csv"], "is empty", id="run-data-empty-file",
                 marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("adversarial")
    for name, text in SWEEP_FILES.items():
        (d / name).write_text(text)
    (d / "empty.csv").write_bytes(b"")
    (d / "wrong-columns.csv").write_text("song,words\nOne,la la la\n")
    # The start of an executable: a NUL-ridden first line with a bare carriage return.
    (d / "binary.csv").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\r\x00\x03\x00>\x00\n" + bytes(range(256)) * 8)
    return d


def cli(args: list[str], d: Path) -> subprocess.CompletedProcess:
    command, *rest = args
    port = free_port()
    rest = [a.format(d=d, port=port) for a in rest]
    if command in ("run", "sweep"):
        rest += [a.format(d=d) for a in SANDBOX]
    if command == "sweep" and not any(a.startswith("storage=") for a in rest):
        rest.append(f"storage=journal:{d}/optuna.log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", f"lyricslab.{command}", *rest], cwd=d, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, needle", CASES)
def test_bad_input_is_one_error_line(args, needle, folder):
    out = cli(args, folder)
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), out.stderr[-2000:]
    assert needle in lines[-1], lines[-1]
