"""Where runs and artifacts go: local stores pin a folder, tracking servers decide, URIs pass through."""

from __future__ import annotations

import mlflow
from omegaconf import OmegaConf

from lyricslab.tracking import runs as tracking


def test_artifact_location_by_store(tmp_path):
    local = tracking.artifact_location("sqlite:///x/mlflow.db", tmp_path / "art")
    assert local == (tmp_path / "art").resolve().as_uri() and (tmp_path / "art").is_dir()
    # A server decides where artifacts go; a local default must not leak into it.
    assert tracking.artifact_location("http://127.0.0.1:5000", "mlruns/artifacts") is None
    for uri in ("mlflow-artifacts:/team", "s3://bucket/lyrics", "file:///srv/art"):
        assert tracking.artifact_location("http://127.0.0.1:5000", uri) == uri
        assert tracking.artifact_location("sqlite:///x.db", uri) == uri  # never a folder named "s3:"
    assert not (tmp_path / "s3:").exists()


def test_setup_creates_the_experiment_where_configured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db", "experiment": "where",
                            "artifact_root": "s3://bucket/lyrics"})
    experiment = mlflow.get_experiment(tracking.setup(cfg))
    assert experiment.artifact_location == "s3://bucket/lyrics"
    assert not (tmp_path / "s3:").exists()


def test_ui_hint_names_the_runs_page():
    assert "make ui" in tracking.ui_hint("sqlite:///mlruns/mlflow.db", "3")
    hint = tracking.ui_hint("http://127.0.0.1:5055/", "3")
    assert "make ui" not in hint and "http://127.0.0.1:5055/#/experiments/3?workflowType=machine_learning" in hint
