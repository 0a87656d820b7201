"""Leaderboard of training runs, like the original study's results table, extended.

    python -m lyricslab.compare [sweep=demo] [top=20] [sort=best_val_bpc] [out=DIR]
    python -m lyricslab.compare tracking.experiment=lyricslab   # one experiment (default: all of them)
    python -m lyricslab.compare sweep=demo tracking.uri=http://127.0.0.1:5000   # runs on a tracking server

Prints the table and writes leaderboard.md and leaderboard.csv (to `out`, default the current
folder). With sweep=, the table is also logged to the sweep's MLflow parent run. Rank by a
validation column (the default): sorting by a test_* column is model selection on the test
split, and it is allowed with a warning only.
tracking.uri is where the runs are (MLFLOW_TRACKING_URI when set, else sqlite:///mlruns/mlflow.db).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from lyricslab.config.cli import exit_with, parse
from lyricslab.config.errors import UsageError
from lyricslab.config.runtime import start_keras
from lyricslab.tracking.leaderboard import leaderboard, sort_column, to_markdown

TEXT_KEYS = ("sweep", "sort", "out")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse("compare", argv, __doc__, TEXT_KEYS)
    except UsageError as err:
        return exit_with(err)
    experiment = None if cfg.tracking.experiment in (None, "all") else str(cfg.tracking.experiment)
    opts = {"experiment": experiment, "sweep": cfg.sweep, "top": str(cfg.top), "sort": cfg.sort, "out": str(cfg.out),
            "tracking_uri": cfg.tracking.uri}
    from lyricslab.tracking.server import TrackingServerError, check_reachable

    top = int(opts["top"]) if opts["top"].strip().isdigit() else 0
    try:
        if top < 1:
            raise ValueError(f"top must be a whole number of at least 1, not {opts['top']!r}; e.g. top=20")
        _, warning = sort_column(opts["sort"])
        check_reachable(opts["tracking_uri"])  # in a second, not after MLflow's minutes of retries
    except (ValueError, TrackingServerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(opts["tracking_uri"])
    try:
        table = leaderboard(opts["experiment"], opts["sweep"], top, opts["sort"])
    except (ValueError, mlflow.exceptions.MlflowException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
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
        start_keras()  # the bundle module registers lyricslab's Keras classes: keras loads with it
        from lyricslab.tracking.bundle import BundleError, sweep_parent_id

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
