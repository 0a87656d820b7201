"""Score a trained model on any lyrics CSV in the Genius schema, every row, no split.

    python -m lyricslab.evaluate run_id=<id> csv=/data/other_songs.csv [name=other]
    python -m lyricslab.evaluate model_uri=models:/lyricslab-demo@best csv=songs.csv.gz
    python -m lyricslab.evaluate sweep=demo csv=songs.csv samples=false

The CSV goes through the run's own filters and normalisation (its data config), and each song
is scored with full context, exactly like the run's test split. Songs of the run's training split
(the same id, or the same lyrics once normalised) are left out, and one line says how many
(`eval_<name>_excluded_train_songs`); when that split cannot be recovered here, the line says so.
Reported: bits/char, loss, perplexity, accuracy, macro P/R/F1, bits/char per tag and per language (the run's `breakdown`), the Kneser-Ney n-gram baseline on the same songs (fitted on
the run's training split when that data is on this machine), and lyric metrics of fixed-seed
samples against this CSV's own songs. The results are printed and logged to the run as
`eval_<name>_*` metrics.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lyricslab.config.cli import exit_with, parse_model_command
from lyricslab.config.errors import ConfigError, UsageError
from lyricslab.tracking.runs import resolve_run_id, start_model_command
from lyricslab.tracking.server import TrackingServerError

TEXT_KEYS = ("run_id", "model_uri", "sweep", "csv", "name")


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    """The options as a dict (tracking.uri as tracking_uri); a missing source or CSV is a UsageError."""
    opts = parse_model_command("evaluate", argv, __doc__, TEXT_KEYS)
    if not opts.get("csv"):
        raise UsageError("pass csv=/path/to/lyrics.csv (the Genius schema; .csv.gz, .csv.bz2 and .zip work too)")
    name = opts["name"] or Path(opts["csv"]).name.split(".")[0]
    opts["name"] = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "eval"
    return opts


def read_csv_songs(data_cfg: Any, csv: str) -> Any:
    """Every song of `csv` that the run's filters keep, normalised as in training: a DataFrame with
    `lyrics` and the columns conditioning and the breakdown read (tag, artist, year, language, ...)."""

    from lyricslab.data import DataError
    from lyricslab.data.prepare import prepare_songs, resolve_path

    cfg = OmegaConf.merge(data_cfg, {"source": "genius", "path": str(Path(csv).expanduser().resolve()),
                                     "download": False})
    frame, _ = prepare_songs(cfg, resolve_path(cfg), songs=None)
    if frame.empty:
        raise DataError(f"no songs of {csv} pass the run's filters (data.language={cfg.get('language')}, ...)")
    return frame.reset_index(drop=True)


@dataclass
class TrainingOverlap:
    """The CSV's songs checked against the run's training split: how many were found (None: the split
    could not be recovered), out of how many, the split's lyrics (for the baseline), and the line to print."""

    excluded: int | None
    total: int
    train: list[str] | None
    line: str


def logged_data_summary(run_id: str | None) -> dict[str, Any] | None:
    """The run's data_summary.json (songs and characters per split, as training read them), if logged."""
    if not run_id:
        return None
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data_summary.json", dst_path=tmp)
            return json.loads(Path(path).read_text())
    except (mlflow.exceptions.MlflowException, OSError, ValueError):
        return None


def exclude_training_songs(cfg: Any, frame: Any, logged: dict[str, Any] | None = None) -> tuple[Any, TrainingOverlap]:
    """`frame` without the songs of the run's training split, matched by song id or by lyrics (the words
    dedupe compares: lyricslab.data.dedupe.seen_before), and what was found.

    The split is recovered from the run's logged config: its data config and data_size, read again and
    split by the same rule (a hash of the song id, lyricslab.data.prepare.assign_splits). `logged` (the
    run's data_summary.json) tells whether that is still the split it trained on. When the data is not
    on this machine nothing is excluded, and the line says so.
    """
    from omegaconf.errors import OmegaConfBaseException

    from lyricslab.data import DataError, load_splits
    from lyricslab.data.dedupe import seen_before

    total = len(frame)
    try:
        splits = load_splits(cfg.data, cfg.data_size.songs)
    except (DataError, OmegaConfBaseException, AttributeError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        return frame, TrainingOverlap(None, total, None, f"could not check the {total} songs against the run's "
                                      f"training split, none excluded: its data cannot be read here ({why})")
    train = splits.frame[splits.frame["split"] == "train"]
    found = seen_before(frame, train)
    excluded = int(found.sum())
    line = f"excluded {excluded} of {total} songs that were in the run's training split (by id or lyrics)"
    now, then = splits.summary()["train"], ((logged or {}).get("train") or {})
    if then and (then.get("songs"), then.get("chars")) != (now["songs"], now["chars"]):
        line += (f"; but its data has changed since the run (the split holds {now['songs']:,} songs now, "
                 f"{then.get('songs', 0):,} when it trained), so songs it trained on may remain")
    if excluded == total:
        raise DataError(f"all {total} songs of the CSV were in the run's training split (by id or lyrics); "
                        f"nothing is left to evaluate")
    kept = frame[~found].reset_index(drop=True)
    return kept, TrainingOverlap(excluded, total, splits.train, line)


def training_songs(cfg: Any) -> list[str] | None:
    """The run's training split, when its data is on this machine (for the baseline and copy rate)."""
    from lyricslab.data import DataError, load_splits

    try:
        return load_splits(cfg.data, cfg.data_size.songs).train
    except DataError:
        return None


def evaluate(bundle: Any, songs: list[str], with_samples: bool = True,
             rows: list[dict[str, Any]] | None = None, train: list[str] | None = None
             ) -> tuple[dict[str, float], list[str]]:
    """Metrics of `bundle` on `songs` (no prefix), and notes on what could not be computed.

    `rows` (one dict per song: tag, artist, year, language, ...) give a conditioned model its control
    tokens and the per-tag and per-language bits/char (`bpc_tag_rap`, ...). `train`: the run's training
    songs when the caller has them already (else they are read again, when the data is here).
    """
    from lyricslab.data.conditioning import conditioned_songs
    from lyricslab.scoring.breakdown import columns_of
    from lyricslab.scoring.held_out import char_count, score_songs
    from lyricslab.scoring.ngram import baseline_bpc
    from lyricslab.scoring.scorers import full_context_scorer

    notes: list[str] = []
    if bundle.cfg.model.family == "bert":  # a masked LM: masked-token accuracy and macro P/R/F1, no bits/char
        from lyricslab.training.masked_lm import evaluate_songs

        return evaluate_songs(bundle, songs), ["a masked LM (model=bert_mlm): masked-token metrics, no bits/char"]
    train = train if train is not None else training_songs(bundle.cfg)
    order = (bundle.cfg.get("baseline") or {}).get("order") or 8
    base = None if train is None else baseline_bpc(train, {"eval": songs}, int(order))["eval"]
    if train is None:
        notes.append("baseline skipped: the run's training data is not on this machine")
    texts = conditioned_songs(bundle.cfg, bundle.tokenizer, rows, songs) if rows is not None else songs
    unscored = getattr(bundle.tokenizer, "control_ids", list)()
    scorer = full_context_scorer(bundle.model, bundle.cfg.trainer, unscored)
    # The scoring tail of training's test split (the run's fitted song cache included), without a prefix.
    metrics, _ = score_songs(scorer, bundle.tokenizer, bundle.tokenizer.encode_songs(texts), texts, songs, rows=rows,
                             columns=columns_of(bundle.cfg) if rows is not None else (),
                             song_cache=bundle.song_cache, baseline=base)
    metrics["songs"], metrics["chars"] = float(len(songs)), float(char_count(songs))
    if with_samples:
        from lyricslab.sampling.generation import write_samples
        from lyricslab.scoring.lyric_metrics import sample_metrics

        with tempfile.TemporaryDirectory() as tmp:
            samples = write_samples(bundle.model, bundle.tokenizer, bundle.cfg, Path(tmp) / "samples.txt",
                                    allowed=bundle.allowed_tokens())
        metrics.update(sample_metrics(samples, train or [], songs))
    return metrics, notes


def run_id_of(opts: dict[str, Any]) -> str | None:
    """The MLflow run to log to: given, the sweep's best, or the registered version's source run."""
    import mlflow

    from lyricslab.tracking.bundle import sweep_best_run

    if opts.get("run_id"):
        return resolve_run_id(opts["run_id"])
    if opts.get("sweep"):
        return sweep_best_run(opts["sweep"])
    match = re.match(r"models:/([^@/]+)(?:@([^/]+)|/(\d+))?$", opts["model_uri"])
    if not match:
        return None
    client = mlflow.MlflowClient()
    name, alias, version = match.groups()
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException:
        return None
    return found.run_id


def table(metrics: dict[str, float], name: str) -> str:
    rows = ["bpc", "bpc_song_cache", "baseline_ngram_bpc", "bpc_vs_baseline", "bpc_song_cache_vs_baseline", "nll", "perplexity", "accuracy", "top5_accuracy",
            "precision_macro", "recall_macro", "f1_macro", "rhyme_density", "ref_rhyme_density", "distinct_2",
            "ref_distinct_2", "copy_rate", "ref_copy_rate", "songs", "chars", "excluded_train_songs"]
    lines = [f"| {name} | value |", "|---|---|"]
    rows += sorted(k for k in metrics if k.startswith(("bpc_tag_", "bpc_language_")))  # the breakdown
    for key in rows:
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {key} | {v:,.0f} |" if abs(v) >= 1000 else f"| {key} | {v:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        opts = start_model_command(lambda: parse_args(argv))
    except (UsageError, ConfigError, TrackingServerError) as err:
        return exit_with(err)
    import mlflow

    from lyricslab.data import DataError

    # Keras loads with the bundle module: only once the command line is good and the store answers.
    from lyricslab.tracking.bundle import BundleError, load_named

    try:
        bundle = load_named(opts)
        run_id = run_id_of(opts)
        print(f"reading {opts['csv']} with the run's filters ...", file=sys.stderr)
        frame = read_csv_songs(bundle.cfg.data, opts["csv"])
        # Songs the run trained on would flatter it: out, by id or by lyrics, and counted.
        frame, overlap = exclude_training_songs(bundle.cfg, frame, logged_data_summary(run_id))
        print(overlap.line, file=sys.stderr)
        print(f"scoring {len(frame):,} songs with {bundle.source} ...", file=sys.stderr)
        metrics, notes = evaluate(bundle, frame["lyrics"].tolist(), opts["samples"], frame.to_dict("records"),
                                  train=overlap.train)
        if overlap.excluded is not None:
            metrics["excluded_train_songs"] = float(overlap.excluded)
    except (BundleError, DataError) as err:
        return exit_with(err)
    print(table(metrics, opts["name"]))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if run_id:
        now = int(time.time() * 1000)
        mlflow.MlflowClient().log_batch(run_id, metrics=[
            mlflow.entities.Metric(f"eval_{opts['name']}_{k}", float(v), now, 0) for k, v in metrics.items()],
            tags=[mlflow.entities.RunTag(f"eval_{opts['name']}_training_overlap", overlap.line[:5000])])
        print(f"logged as eval_{opts['name']}_* metrics to run {run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
