"""MLflow bookkeeping: where runs go, one run per training, and a status that is never left RUNNING."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

import lyricslab
from lyricslab.config.runtime import start_keras
from lyricslab.tracking.server import check_reachable

PRUNED_EXCEPTIONS = ("TrialPruned",)
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # s3:, mlflow-artifacts:, file: (not a drive letter)  # optuna's; matched by name so training never imports optuna


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


def is_local_store(uri: str) -> bool:
    """A store on this machine (sqlite file, file:// or a plain folder), as opposed to a tracking server."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def artifact_location(uri: str, artifact_root: Any) -> str | None:
    """Where a new experiment keeps its artifacts.

    A URI (`mlflow-artifacts:/...`, `s3://...`) is passed on unchanged. A plain folder is pinned
    only for a local store (MLflow would otherwise use ./mlartifacts); with a tracking server
    the server decides (`--artifacts-destination`), so a second host can read what was logged.
    """
    root = str(artifact_root) if artifact_root else ""
    if URI_SCHEME.match(root):
        return root
    if not root or not is_local_store(uri):
        return None
    folder = Path(root).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def setup(tracking: Any) -> str:
    """Point MLflow at the configured store and return the experiment id (created on first use)."""
    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # MLflow announces creating and migrating its sqlite tables at INFO; users need none of that.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(tracking.experiment,
                                        artifact_location=artifact_location(uri, tracking.get("artifact_root")))
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return mlflow.get_experiment_by_name(tracking.experiment).experiment_id


def ui_hint(uri: str, experiment_id: str | None = None) -> str:
    """How to look at the runs: `make ui` for a local store, the server's page otherwise.

    The page opens on the runs table: MLflow 3's experiment page defaults to its GenAI
    overview unless `workflowType=machine_learning` is asked for.
    """
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning" if experiment_id else ""
    if is_local_store(uri):
        return f"Open the MLflow UI: make ui, then http://127.0.0.1:5000/{page}   (serves {uri})"
    return f"Open the MLflow UI: {uri.rstrip('/')}/{page}"


def git_commit() -> str | None:
    """The checkout's commit; None for an installed package (a venv inside some other repository must not
    tag runs with that repository's commit)."""
    checkout = Path(lyricslab.__file__).resolve().parent.parent
    if not (checkout / ".git").exists() or not (checkout / "pyproject.toml").exists():
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=checkout)
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


def connect(uri: str) -> None:
    """Point MLflow at `uri` once the store answers (a second, not MLflow's minutes of retries)."""
    check_reachable(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)


def start_model_command(parse: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """generate and evaluate: the options `parse()` gives, the store checked and set, Keras started on
    the chosen backend, TensorFlow quiet (the bundle they load next imports Keras)."""
    opts = parse()
    connect(opts["tracking_uri"])
    start_keras(opts.get("backend"))
    return opts


class UnknownRunError(LookupError):
    """No run, or several runs, match the id a user gave."""


def resolve_run_id(given: str) -> str:
    """The full run id of `given`, which may be a unique prefix (the leaderboard prints 8 characters).

    MLflow's search filters take run ids by equality only, so a prefix is matched over the store's run
    ids; a full 32-character id is returned as it is.
    """
    given = str(given).strip()
    if re.fullmatch(r"[0-9a-f]{32}", given):
        return given
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=mlflow.entities.ViewType.ALL)]
    matches, token = [], None
    while experiments:
        page = client.search_runs(experiments, run_view_type=mlflow.entities.ViewType.ALL, max_results=5000,
                                  page_token=token)
        matches += [run.info.run_id for run in page if run.info.run_id.startswith(given)]
        token = page.token
        if not token:
            break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownRunError(f"no MLflow run {given!r} in {mlflow.get_tracking_uri()}; copy a run id (or its first 8 "
                              f"characters) from `python -m lyricslab.compare`, `make ui` or the end of a training")
    raise UnknownRunError(f"run id prefix {given!r} matches {len(matches)} runs ({', '.join(m[:12] for m in matches[:4])}"
                          f"{', ...' if len(matches) > 4 else ''}); give more characters")
