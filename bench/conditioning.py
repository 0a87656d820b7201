"""Does conditioning work? The real-data LSTM recipe (`experiment=lyrics_lstm`), trained for its
30-minute budget with a `<tag:...>` control token before every song and after every line break
(`conditioning.fields=[tag]`, `repeat: line`), which the LSTM also reads at every step
(`every_step: true`), on the dev corpus (784 real Genius songs, English ones kept); then each
tag's test songs are scored with full context, prompted once with their own tag and once with
each wrong tag. Conditioning works when a song's own tag gives it the lowest bits/char: the check
for each tag is the share of wrong tags that score that tag's songs worse than its own tag does
(target: all of them).

The control token is given, not predicted, so it is neither scored nor counted as a character
(as in every lyricslab bits/char): the numbers compare the same lyrics under different prompts.
Songs of a tag are scored as one stream, so a song's context is the songs of its own tag before
it, each behind the prompted tag; the figures list every tag's own, mean-wrong and best-wrong
bits/char and its test song count. A tag with few test songs (country has one) gives a noisy
figure. `--quick` trains a tiny model on the demo corpus for a few steps: it checks the code
path, not the effect.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import Target, check, compose, out_dir, quick, record

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = Path(os.environ.get("LYRICSLAB_DEV_CSV", ROOT.parent / "shared" / "data" / "lyrics_dev.csv"))
TARGET_SHARE = Target(">=", 1.0, "%")  # share of wrong tags under which a tag's songs score worse than under their own
BUDGET_MINUTES = 30  # the recipe's own budget: at 10 minutes (2.66 bits/char) own and wrong tags differed by < 0.005
QUICK = ["trainer.epochs=1", "trainer.seq_len=32", "trainer.batch_size=16", "trainer.steps_per_epoch=4",
         "model.layers=1", "model.units=32", "embedding=small", "samples.max_tokens=12",
         'samples.prompts=["[verse]\\n"]', "samples.temperatures=[0.8]", "baseline.order=null"]


def overrides() -> list[str]:
    folder = out_dir() / "conditioning"
    common = ["model=lstm", "tokenizer=char", "conditioning.fields=[tag]", "trainer.verbose=0",
              f"tracking.uri=sqlite:///{folder}/mlflow.db", f"tracking.artifact_root={folder}/artifacts",
              "tracking.experiment=bench-conditioning", f"data.cache_dir={out_dir() / 'cache'}"]
    if quick():
        return [*common, *QUICK]
    if not DEV_CSV.exists():
        raise SystemExit(f"error: the dev corpus is not at {DEV_CSV}; set LYRICSLAB_DEV_CSV=/path/to/lyrics_dev.csv "
                         f"(or run with --quick, which uses the demo corpus)")
    # The real-data recipe (a carried-state 2x256 LSTM) with its budget and validation rounds.
    return [*common, "experiment=lyrics_lstm", f"data.path={DEV_CSV}", f"trainer.budget_minutes={BUDGET_MINUTES}"]


def tag_matrix(bundle, rows: list[dict]) -> dict[str, dict[str, float]]:
    """bpc[song tag][prompted tag]: each tag's test songs, full context, behind every known tag."""
    from lyricslab.data.conditioning import (
        bundle_conditions,
        control,
        repeat_of,
        with_prefix,
    )
    from lyricslab.scoring.scorers import full_context_scorer

    known = bundle_conditions(bundle.cfg, bundle.tokenizer).known["tag"]
    repeat = repeat_of(bundle.cfg)  # the prompted tag goes where training put the song's own
    scorer = full_context_scorer(bundle.model, bundle.cfg.trainer, bundle.tokenizer.control_ids())
    out: dict[str, dict[str, float]] = {}
    for tag in sorted({r["tag"] for r in rows} & set(known)):
        lyrics = [r["lyrics"] for r in rows if r["tag"] == tag]
        chars = sum(len(s) + 1 for s in lyrics)
        out[tag] = {prompt: scorer(bundle.tokenizer.encode_songs([with_prefix(control("tag", prompt), s, repeat)
                                                                   for s in lyrics]))
                    .metrics(chars, "")["bpc"] for prompt in known}
    return out


def run() -> dict:
    import keras
    import mlflow

    from lyricslab.data import load_splits
    from lyricslab.tracking.bundle import load_run
    from lyricslab.training.train import train

    cfg = compose([*overrides(), f"backend={keras.backend.backend()}"])  # trained in this process, on its backend
    metrics = train(cfg)
    bundle = load_run(mlflow.last_active_run().info.run_id)
    splits = load_splits(cfg.data, cfg.data_size.songs)
    rows = splits.frame[splits.frame["split"] == "test"].to_dict("records")
    matrix = tag_matrix(bundle, rows)
    checks, figures = [], {"test_bpc (own tags)": metrics["test_bpc"], "best_val_bpc": metrics["best_val_bpc"],
                           "training rounds": metrics["rounds_run"]}
    for tag, scores in matrix.items():
        own = scores[tag]
        wrong = {p: v for p, v in scores.items() if p != tag}
        if not wrong:
            continue
        worse = sum(v > own for v in wrong.values()) / len(wrong)
        checks.append(check(f"{tag} test songs: share of wrong tags scoring worse than `<tag:{tag}>`", worse,
                            TARGET_SHARE))
        figures[f"{tag}: test songs"] = sum(r["tag"] == tag for r in rows)
        figures[f"{tag}: bits/char, own tag"] = own
        figures[f"{tag}: bits/char, wrong tags (mean)"] = sum(wrong.values()) / len(wrong)
        figures[f"{tag}: bits/char, best wrong tag ({min(wrong, key=wrong.get)})"] = min(wrong.values())
    data = "the demo corpus" if quick() else f"the dev corpus ({DEV_CSV.name}, data_size=full, data.language=en)"
    training = ("1 round of 4 steps, tiny LSTM" if quick() else
                f"{BUDGET_MINUTES}-minute training budget, experiment=lyrics_lstm (2x256 LSTM, state carried, "
                f"char tokenizer)")
    budget = f"{training}; {data}; conditioning.fields=[tag]; test split scored once per (song tag, prompted tag)"
    return record("conditioning", "Conditioning on tags", budget, checks, figures)


if __name__ == "__main__":
    run()
