"""MLflow bookkeeping: where runs go, one run per training, and a status that is never left RUNNING."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

import lyricslab

PRUNED_EXCEPTIONS = ("TrialPruned",)  # optuna's; matched by name so training never imports optuna


def flatten(cfg: Any, prefix: str = "") -> dict[str, str]:
    """{'model': {'units': 256}} -> {'model.units': '256'} for mlflow.log_params."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, str] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]  # MLflow's param value limit
    return out


def setup(tracking: Any) -> str:
    """Point MLflow at the configured store and return the experiment id (created on first use).

    With a sqlite store MLflow would put artifacts in ./mlartifacts; we pin them under mlruns/.
    """
    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    root = Path(str(tracking.artifact_root)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.create_experiment(tracking.experiment, artifact_location=root.as_uri())
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return mlflow.get_experiment_by_name(tracking.experiment).experiment_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(lyricslab.__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_tags_base() -> dict[str, str]:
    """Tags every lyricslab run carries: the version and, in a checkout, the git commit."""
    tags = {"lyricslab_version": lyricslab.__version__}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_tags(cfg: Any) -> dict[str, str]:
    return {"model_family": str(cfg.model.family), "model": str(cfg.model.name),
            "tokenizer": str(cfg.tokenizer.kind), **run_tags_base()}


@contextlib.contextmanager
def training_run(cfg: Any, parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Start one MLflow run for one training; end it FINISHED, FAILED (error tagged) or KILLED.

    A KeyboardInterrupt or a pruned Optuna trial ends KILLED; any other exception FAILED.
    """
    experiment_id = setup(cfg.tracking)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=cfg.tracking.get("run_name"),
                           parent_run_id=parent_run_id, nested=parent_run_id is not None,
                           tags={**run_tags(cfg), **(tags or {})})
    try:
        mlflow.log_params(flatten(cfg))
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag("error", "interrupted (KeyboardInterrupt)")
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as err:
        if type(err).__name__ in PRUNED_EXCEPTIONS:
            mlflow.set_tags({"pruned": "true", "error": f"pruned: {err}"[:5000]})
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        else:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
