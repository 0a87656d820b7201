"""The leaderboard: finished runs (and their n-gram baselines) as one table, ranked by a validation column."""

from __future__ import annotations

import mlflow
import pandas as pd

# column title -> MLflow field; lower is better unless listed in HIGHER_IS_BETTER
COLUMNS = {
    "run": "run_id", "model": "params.model.name", "tokenizer": "params.tokenizer.kind", "params": "metrics.params",
    "best_val_bpc": "metrics.best_val_bpc", "test_bpc": "metrics.test_bpc",
    "test_perplexity": "metrics.test_perplexity", "test_accuracy": "metrics.test_accuracy",
    "test_precision": "metrics.test_precision_macro", "test_recall": "metrics.test_recall_macro",
    "test_f1": "metrics.test_f1_macro", "vs_ngram": "metrics.test_bpc_vs_baseline",
    "test_bpc_cache": "metrics.test_bpc_song_cache", "rhyme": "metrics.rhyme_density", "distinct_2": "metrics.distinct_2",
    "copy_rate": "metrics.copy_rate", "tokens_per_s": "metrics.train_tokens_per_sec", "minutes": "metrics.wall_seconds",
}
# Runs from before best_val_bpc existed: the per-epoch val_bpc series (MLflow gives its last value).
FALLBACK = {"best_val_bpc": "metrics.val_bpc"}
HIGHER_IS_BETTER = {"test_accuracy", "test_precision", "test_recall", "test_f1", "rhyme", "distinct_2", "tokens_per_s"}
# Earlier column names still work as sort keys.
ALIASES = {"val_bpc": "best_val_bpc", "perplexity": "test_perplexity", "accuracy": "test_accuracy",
           "precision": "test_precision", "recall": "test_recall", "f1": "test_f1"}
LEGEND = """\
- best_val_bpc: validation bits per character at the best epoch (older runs: the last epoch's val_bpc). Rank by it.
- test_*: the test split, to read for the model you picked, not to pick by.
- test_perplexity, test_accuracy and macro test_precision/recall/f1 are per token: their meaning changes with the
  tokenizer (a character, a word or a subword piece), so compare them only between runs with the same tokenizer;
  bits per character compare across tokenizers.
- vs_ngram: test_bpc over the Kneser-Ney character n-gram's on the same test songs (below 1 beats it). The n-gram
  itself is a row of its own (run `baseline`), one per data set in the table.
- test_bpc_cache: test_bpc with the song cache (lyricslab/song_cache.py: the model mixed with what the song already
  said, weights fitted on val). The n-gram's row shows the n-gram with the same cache there.
- "(masked LM)" rows (model=bert_mlm) have no bits/char: their test_accuracy and macro precision/recall/f1 are over
  masked tokens (BERT's objective), as in the original study's table; compare them with each other only.
- rhyme, distinct_2, copy_rate: lyric metrics of the run's samples (their ref_* twins, on human text, are in MLflow).
"""


def sort_column(sort: str) -> tuple[str, str | None]:
    """The column to sort by, and a warning when it is a test-split column."""
    column = ALIASES.get(sort, sort)
    if column not in COLUMNS or column == "run":
        raise ValueError(f"sort must be one of {sorted(set(COLUMNS) - {'run'})}, not {sort!r}")
    warning = None
    if column.startswith("test_"):
        warning = (f"sort={sort} ranks runs by the test split ({column}): picking a model that way is model selection "
                   f"on the test set, and its test figures stop being an honest estimate; rank by best_val_bpc")
    return column, warning


def leaderboard(experiment: str | None = "lyricslab", sweep: str | None = None, top: int = 20,
                sort: str = "best_val_bpc") -> pd.DataFrame:
    column, _ = sort_column(sort)
    filters = [f"tags.sweep = '{sweep}'"] if sweep else []
    kwargs = {"search_all_experiments": True} if sweep or experiment in (None, "all") else \
        {"experiment_names": [experiment]}
    if "experiment_names" in kwargs and mlflow.get_experiment_by_name(experiment) is None:
        known = ", ".join(e.name for e in mlflow.search_experiments()) or "none yet"
        raise ValueError(f"no experiment named {experiment!r} in {mlflow.get_tracking_uri()} (known: {known}); "
                         f"pass experiment=<name> or experiment=all")
    runs = mlflow.search_runs(filter_string=" and ".join(filters), **kwargs)
    if runs.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    if len(runs) and "tags.lyricslab.role" in runs:
        runs = runs[runs["tags.lyricslab.role"] != "sweep-parent"]
    if len(runs):
        runs = runs[runs["status"] == "FINISHED"]

    def values(title: str) -> pd.Series:
        field, fallback = COLUMNS[title], FALLBACK.get(title)
        out = runs[field] if field in runs else pd.Series(float("nan"), index=runs.index)
        return out.fillna(runs[fallback]) if fallback in runs else out

    table = pd.DataFrame({title: values(title) for title in COLUMNS})
    if "tags.objective" in runs:  # a masked LM's numbers are not a causal LM's: say so in its row
        masked = (runs["tags.objective"] == "masked_lm").to_numpy()
        table.loc[masked, "model"] = table.loc[masked, "model"].astype(str) + " (masked LM)"
    table = pd.concat([table, baseline_rows(runs)], ignore_index=True) if len(runs) else table
    table["minutes"] = table["minutes"] / 60
    table["run"] = table["run"].str[:8]
    table = table.sort_values(column, ascending=column not in HIGHER_IS_BETTER, na_position="last").head(top)
    return table.reset_index(drop=True)


def baseline_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct n-gram baseline among the runs (each data set has its own)."""
    val, test = "metrics.baseline_ngram_val_bpc", "metrics.baseline_ngram_test_bpc"
    if val not in runs or test not in runs:
        return pd.DataFrame(columns=list(COLUMNS))
    order = runs["params.baseline.order"] if "params.baseline.order" in runs else pd.Series("?", index=runs.index)
    cached = "metrics.baseline_ngram_test_song_cache_bpc"  # the n-gram with the song cache (newer runs)
    found = pd.DataFrame({"val": runs[val], "test": runs[test], "order": order}).dropna()
    found["cache"] = runs[cached] if cached in runs else float("nan")
    found = found.drop_duplicates(subset=["val", "test", "order"])
    return pd.DataFrame([{"run": "baseline", "model": f"kneser-ney {row.order}-gram", "tokenizer": "char",
                          "best_val_bpc": row.val, "test_bpc": row.test, "vs_ngram": 1.0, "test_bpc_cache": row.cache}
                         for row in found.itertuples()], columns=list(COLUMNS))


def to_markdown(table: pd.DataFrame, legend: bool = True) -> str:
    """The table in Markdown, with the legend that says what the columns are under it."""
    def fmt(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3f}"
        return str(v)

    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    rows = "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in table.itertuples(index=False))
    return head + rows + (f"\n{LEGEND}" if legend else "")
