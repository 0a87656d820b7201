"""A trained model as one folder: model.keras + tokenizer/ + config.yaml.

It is logged as a run's `model/` artifact, so a run id or a registry version
(`models:/lyricslab-<study>@best`) is all generation needs: nothing from training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import lyricslab.models  # noqa: F401 - registers lyricslab's own Keras classes (the GPT-2 adapter) for load_model
from lyricslab.scoring.song_cache import ARTIFACT as SONG_CACHE_ARTIFACT
from lyricslab.scoring.song_cache import SongCache
from lyricslab.text.charset import ARTIFACT as CHARSET_ARTIFACT
from lyricslab.text.charset import allowed_tokens, load_charset
from lyricslab.text.factory import load_tokenizer
from lyricslab.text.tokenizers import Tokenizer
from lyricslab.tracking.runs import UnknownRunError, resolve_run_id

MODEL_DIR = "model"


class BundleError(Exception):
    """A run or model URI that cannot be generated from; the message says which to pick instead."""


@dataclass
class Bundle:
    model: Any
    tokenizer: Tokenizer
    cfg: Any
    source: str
    song_cache: SongCache | None = None  # the run's fitted song-cache weights, when it has them
    charset: str | None = None  # the characters its samples may use (lyricslab.text.charset), when saved

    def allowed_tokens(self) -> np.ndarray | None:
        """The tokens sampling may pick (None: every token, for runs saved before the charset)."""
        return None if self.charset is None else allowed_tokens(self.tokenizer, self.charset)


def save_bundle(folder: Path, model: Any, tokenizer: Tokenizer, cfg: Any) -> Path:
    from omegaconf import OmegaConf

    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    if hasattr(model, "save_adapters"):  # LoRA models: the small adapters file beside the merged model
        model.save_adapters(folder)
    tokenizer.save(folder / "tokenizer")
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return folder


def load_folder(folder: Path, source: str, extras: Path | None = None) -> Bundle:
    """Load a bundle; `extras` is where tokenizer/ and config.yaml are when the folder lacks them."""
    import keras
    from omegaconf import OmegaConf

    if not (folder / "model.keras").exists():
        raise BundleError(f"{source} has no model.keras; pick a FINISHED training run")
    home = folder if (folder / "tokenizer").exists() else extras
    if home is None or not (home / "tokenizer").exists() or not (home / "config.yaml").exists():
        raise BundleError(f"{source} has no tokenizer/ or config.yaml beside its model; pick a FINISHED training run")

    # compile=False: generation and scoring only call the model; the training optimizer's state (for LoRA,
    # the adapters', which the merged model no longer has) is not needed. keras_hub tasks (BertMaskedLM)
    # compile themselves when built, so Keras would warn that it skips that state: expected, not shown.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
    song_cache = SongCache.load(folder / SONG_CACHE_ARTIFACT) if (folder / SONG_CACHE_ARTIFACT).exists() else None
    return Bundle(model, load_tokenizer(home / "tokenizer"), OmegaConf.load(home / "config.yaml"), source, song_cache,
                  load_charset(folder / CHARSET_ARTIFACT))


def load_run(run_id: str) -> Bundle:
    import mlflow

    try:
        run_id = resolve_run_id(run_id)
        run = mlflow.get_run(run_id)
    except UnknownRunError as err:
        raise BundleError(str(err)) from None
    except mlflow.exceptions.MlflowException:
        raise BundleError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}; copy a run id from "
                          f"`make ui` or the end of a training") from None
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, MODEL_DIR)}
    if f"{MODEL_DIR}/model.keras" not in names:
        raise BundleError(f"run {run_id} ({run.info.status}) has no model artifact; it failed or was pruned before "
                          f"saving one. Pick a FINISHED run")
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_DIR))
    extras = None
    if not (folder / "tokenizer").exists():  # runs from before the bundle kept these at the run's root only
        root = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
        if {"tokenizer", "config.yaml"} <= root:
            extras = folder.parent / "run-root"
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="tokenizer", dst_path=str(extras))
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml", dst_path=str(extras))
    return load_folder(folder, f"run {run_id}", extras)


def load_model_uri(uri: str) -> Bundle:
    import mlflow

    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except mlflow.exceptions.MlflowException as err:
        raise BundleError(f"cannot resolve {uri} ({str(err).splitlines()[0]}); registered models are named "
                          f"lyricslab-<study>, e.g. models:/lyricslab-demo@best") from None
    return load_folder(Path(folder), uri)


def _sweep_parent(study: str):
    import mlflow

    parents = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string=f"tags.sweep = '{study}' and tags.`lyricslab.role` = 'sweep-parent'")
    if not parents:
        raise BundleError(f"no sweep named {study!r} in {mlflow.get_tracking_uri()}; run `make sweep` first")
    return parents[0]


def sweep_parent_id(study: str) -> str:
    return _sweep_parent(study).info.run_id


def sweep_best_run(study: str) -> str:
    """The run id of a sweep's best trial, from its MLflow parent run."""
    best = _sweep_parent(study).data.tags.get("best_run_id")
    if not best:
        raise BundleError(f"sweep {study!r} has no finished trial yet")
    return best


def load_source(run_id: str | None = None, model_uri: str | None = None, sweep: str | None = None) -> Bundle:
    """The bundle a CLI names: a registered model URI, a run id, or a sweep's best trial."""
    if model_uri:
        return load_model_uri(model_uri)
    return load_run(run_id or sweep_best_run(sweep))


def load_named(opts: dict[str, Any]) -> Bundle:
    """The bundle a command's options name: run_id, model_uri or sweep (config.cli.parse_model_command)."""
    return load_source(opts.get("run_id"), opts.get("model_uri"), opts.get("sweep"))
