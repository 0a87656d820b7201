"""Train one model: `python -m lyricslab.run model=lstm [any Hydra override]`.

A thin Hydra main around `lyricslab.training.train.train`. TensorFlow is imported only once training
really starts, so `--help` and `--cfg job` answer instantly.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from lyricslab.config import paths
from lyricslab.config.runtime import start_keras

CONF_DIR = str(paths.CONF_DIR)
# The names MLflow logs them under; best_val_bpc is the restored epoch's (full-context) val bits/char.
KEY_METRICS = ["best_val_bpc", "test_bpc", "baseline_ngram_test_bpc", "test_bpc_vs_baseline", "test_bpc_windowed",
               "test_bpc_song_cache", "baseline_ngram_test_song_cache_bpc", "test_bpc_song_cache_vs_baseline",
               "test_bpc_mixture", "test_perplexity", "test_accuracy", "test_f1_macro",
               "params", "train_tokens_per_sec", "mfu", "train_seconds", "budget_used_minutes"]


def print_summary(metrics: dict[str, float], cfg: DictConfig) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    run = mlflow.last_active_run()
    print("\n" + "=" * 72)
    if run is not None:
        print(f"MLflow run {run.info.run_id} ({cfg.tracking.experiment}): {run.info.status}")
    for key in KEY_METRICS:
        if key in metrics:
            value = metrics[key]
            print(f"  {key:<24} {value:,.0f}" if value >= 1000 else f"  {key:<24} {value:.4f}")
    if run is not None:
        try:
            sample = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/samples.txt")
            print("\nA sample (all of them: samples.txt in the run's artifacts):\n")
            print(sample.split("\n=== ")[0][:800])
        except Exception:  # the summary must never fail a finished training
            pass
    from lyricslab.tracking.runs import ui_hint

    print("\n" + ui_hint(str(cfg.tracking.uri), run.info.experiment_id if run is not None else None))


def compose_error(overrides: list[str]) -> str | None:
    """Why these overrides do not compose, in one line; None when they do.

    Hydra reports an unknown option or key over several lines that end in a HYDRA_FULL_ERROR
    hint. Composing once up front turns that into one `error:` line. Anything with a flag
    (--help, --cfg, -cp/-cn, --multirun) is left to Hydra as it is.
    """
    if any(arg.startswith("-") for arg in overrides):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err).split("Config search path:")[0].replace(":\n\t", ": ").replace("\n\t", ", ")
        return "; ".join(line.strip().rstrip(".") for line in text.splitlines() if line.strip())
    return None


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from lyricslab.config.errors import ConfigError
    from lyricslab.data import DataError
    from lyricslab.data.prepare import load_splits, resolve_path
    from lyricslab.training.budget import TrainerConfigError, check_trainer

    try:
        # Before anything imports keras: the backend is fixed at import, and TensorFlow's start-up
        # lines stay off the console.
        start_keras(cfg.get("backend"))
        from lyricslab.training.checks import check_config

        check_config(cfg)  # a value no training can use (epochs=-1, seq_len=0) fails before TensorFlow loads
        check_trainer(cfg.trainer)  # so does an impossible budget or evaluation cadence
        resolve_path(cfg.data)  # and a wrong data.path
        # And an unreadable or empty data file: prepared (and cached for train) before TensorFlow loads,
        # so the error is quick and the process never has to shut TensorFlow down after it.
        load_splits(cfg.data, cfg.data_size.songs)
        from lyricslab.training.train import train

        metrics = train(cfg)
    except (ConfigError, TrainerConfigError, DataError) as err:  # bad input: one line that says how to fix it
        print(f"error: {err}", file=sys.stderr, flush=True)
        # Nothing was started that needs closing, and after a failed read pyarrow's reader threads can
        # abort the interpreter's shutdown now and then ("terminate called without an active exception").
        os._exit(2)
    print_summary(metrics, cfg)
    return metrics.get("best_val_bpc", float("nan"))  # a masked LM (model=bert_mlm) has no bits/char


if __name__ == "__main__":
    problem = compose_error(sys.argv[1:])
    if problem:
        print(f"error: {problem} (python -m lyricslab.run --help lists the groups and options)", file=sys.stderr)
        sys.exit(2)
    main()
