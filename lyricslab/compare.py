"""Leaderboard of training runs, like the original study's results table, extended.

    python -m lyricslab.compare [experiment=lyricslab] [sweep=demo] [top=20] [sort=val_bpc] [out=DIR]
    python -m lyricslab.compare experiment=all        # every experiment
    python -m lyricslab.compare sweep=demo tracking_uri=http://127.0.0.1:5000   # runs on a tracking server

Prints the table and writes leaderboard.md and leaderboard.csv (to `out`, default the current
folder). With sweep=, the table is also logged to the sweep's MLflow parent run.
tracking_uri is where the runs are (default sqlite:///mlruns/mlflow.db, as in conf/config.yaml).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

# column title -> MLflow field; lower is better unless listed in HIGHER_IS_BETTER
COLUMNS = {
    "run": "run_id", "model": "params.model.name", "tokenizer": "params.tokenizer.kind", "params": "metrics.params",
    "val_bpc": "metrics.best_val_bpc", "test_bpc": "metrics.test_bpc", "perplexity": "metrics.test_perplexity",
    "accuracy": "metrics.test_accuracy", "precision": "metrics.test_precision_macro",
    "recall": "metrics.test_recall_macro", "f1": "metrics.test_f1_macro", "rhyme": "metrics.rhyme_density",
    "distinct_2": "metrics.distinct_2", "copy_rate": "metrics.copy_rate", "tokens_per_s": "metrics.train_tokens_per_sec",
    "minutes": "metrics.wall_seconds",
}
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "rhyme", "distinct_2", "tokens_per_s"}


def leaderboard(experiment: str | None = "lyricslab", sweep: str | None = None, top: int = 20,
                sort: str = "val_bpc") -> pd.DataFrame:
    import mlflow

    if sort not in COLUMNS:
        raise ValueError(f"sort must be one of {sorted(set(COLUMNS) - {'run'})}, not {sort!r}")
    filters = [f"tags.sweep = '{sweep}'"] if sweep else []
    kwargs = {"search_all_experiments": True} if sweep or experiment in (None, "all") else \
        {"experiment_names": [experiment]}
    runs = mlflow.search_runs(filter_string=" and ".join(filters), **kwargs)
    if len(runs) and "tags.lyricslab.role" in runs:
        runs = runs[runs["tags.lyricslab.role"] != "sweep-parent"]
    if len(runs):
        runs = runs[runs["status"] == "FINISHED"]
    table = pd.DataFrame({title: runs[field] if field in runs else pd.Series(dtype=float)
                          for title, field in COLUMNS.items()})
    table["minutes"] = table["minutes"] / 60
    table["run"] = table["run"].str[:8]
    table = table.sort_values(sort, ascending=sort not in HIGHER_IS_BETTER, na_position="last").head(top)
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3f}"
        return str(v)

    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in table.itertuples(index=False))


def main(argv: list[str] | None = None) -> int:
    opts = {"experiment": "lyricslab", "sweep": None, "top": "20", "sort": "val_bpc", "out": ".",
            "tracking_uri": "sqlite:///mlruns/mlflow.db"}
    for arg in sys.argv[1:] if argv is None else argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        key, eq, value = arg.partition("=")
        if not eq or key not in opts:
            print(f"error: unknown argument {arg!r}; use key=value with key in {sorted(opts)}", file=sys.stderr)
            return 2
        opts[key] = value
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(opts["tracking_uri"])
    try:
        table = leaderboard(opts["experiment"], opts["sweep"], int(opts["top"]), opts["sort"])
    except (ValueError, mlflow.exceptions.MlflowException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print("no finished runs match; train one with `python -m lyricslab.run` or `make sweep`", file=sys.stderr)
        return 1
    markdown = to_markdown(table)
    print(markdown)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(markdown)
    table.to_csv(out / "leaderboard.csv", index=False)
    print(f"wrote {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}", file=sys.stderr)
    if opts["sweep"]:
        from lyricslab.bundle import BundleError, sweep_parent_id

        try:
            parent = sweep_parent_id(opts["sweep"])
        except BundleError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "leaderboard.md").write_text(markdown)
            table.to_csv(Path(tmp) / "leaderboard.csv", index=False)
            mlflow.MlflowClient().log_artifacts(parent, tmp)
        print(f"logged the leaderboard to the sweep's parent run {parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
