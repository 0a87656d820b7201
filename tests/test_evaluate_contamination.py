"""evaluate leaves out the songs of the run's training split (same id, or same lyrics once normalised),
says how many, and says so when that split cannot be recovered."""

import shutil

import pandas as pd
import pytest
from conftest import compose, song, tiny, write_csv

from lyricslab.data import DataError, load_splits
from lyricslab.data.dedupe import seen_before


def fresh(i: int) -> str:
    """Original lyrics unlike the training songs' (conftest.song's)."""
    return (f"[Verse]\nThe kettle hums a tune number {i} across the quiet kitchen\n"
            f"Snow is settling on the postbox by the gate\n\n[Chorus]\nSlow down, slow down {i}\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny LSTM trained on 60 fixture songs of a CSV (data=genius), logged to a temporary store."""
    import mlflow

    from lyricslab.training.train import train

    root = tmp_path_factory.mktemp("contamination")
    data = write_csv(root / "train_songs.csv", [song(i) for i in range(60)])
    cfg = compose([*tiny("lstm"), "data=genius", f"data.path={data}", "data.min_chars=10", "data_size=full",
                   "baseline.order=3", f"tracking.uri=sqlite:///{root}/mlruns/mlflow.db",
                   f"tracking.artifact_root={root}/mlruns/art", f"data.cache_dir={root}/cache"])
    train(cfg)
    return mlflow.last_active_run().info.run_id, f"sqlite:///{root}/mlruns/mlflow.db", cfg, data


def eval_rows(cfg) -> tuple[list[dict], int]:
    """A CSV's rows: 8 of the run's training songs (6 as they are, 1 under a new id with its lyrics
    re-cased and re-punctuated, 1 under its own id with new lyrics), 2 of its test songs, 3 new songs."""
    frame = load_splits(cfg.data, None).frame
    train_ids = sorted(frame.loc[frame["split"] == "train", "id"].astype(int))
    test_ids = sorted(frame.loc[frame["split"] == "test", "id"].astype(int))
    assert len(train_ids) >= 8 and len(test_ids) >= 2
    rows = [song(i - 1000) for i in train_ids[:6]]
    copied = song(train_ids[6] - 1000)
    rows.append(song(0, id=9001, lyrics=copied["lyrics"].upper().replace("\n", ",\n")))  # caught by its words
    rows.append(song(0, id=train_ids[7], lyrics=fresh(1)))  # caught by its id
    rows += [song(i - 1000) for i in test_ids[:2]]
    rows += [song(0, id=9100 + i, lyrics=fresh(10 + i)) for i in range(3)]
    return rows, 8


def run_evaluate(run_id, uri, csv, name, capsys):
    import mlflow

    from lyricslab import evaluate

    assert evaluate.main([f"run_id={run_id}", f"tracking.uri={uri}", f"csv={csv}", f"name={name}",
                          "samples=false"]) == 0
    err = capsys.readouterr().err
    run = mlflow.MlflowClient(uri).get_run(run_id)
    return err, run.data.metrics, run.data.tags


@pytest.mark.training  # uses the run tiny_run trains
def test_training_songs_are_excluded_by_id_and_by_lyrics_and_counted(tiny_run, tmp_path, capsys):
    run_id, uri, cfg, _ = tiny_run
    rows, in_train = eval_rows(cfg)
    csv = write_csv(tmp_path / "mixed.csv", rows)
    err, metrics, tags = run_evaluate(run_id, uri, csv, "mixed", capsys)
    line = f"excluded {in_train} of {len(rows)} songs that were in the run's training split (by id or lyrics)"
    assert line in err.splitlines()
    assert metrics["eval_mixed_excluded_train_songs"] == in_train
    assert metrics["eval_mixed_songs"] == len(rows) - in_train
    assert tags["eval_mixed_training_overlap"] == line

    # Only songs the run did not train on: nothing to exclude.
    clean = write_csv(tmp_path / "clean.csv", rows[in_train:])
    err, metrics, _ = run_evaluate(run_id, uri, clean, "clean", capsys)
    assert f"excluded 0 of {len(rows) - in_train} songs" in err
    assert metrics["eval_clean_excluded_train_songs"] == 0 and metrics["eval_clean_songs"] == len(rows) - in_train


@pytest.mark.training  # uses the run tiny_run trains
def test_an_unrecoverable_training_split_is_said_not_skipped(tiny_run, tmp_path, capsys):
    run_id, uri, cfg, data = tiny_run
    rows, _ = eval_rows(cfg)
    csv = write_csv(tmp_path / "mixed.csv", rows)
    hidden = data.with_name("moved_away.csv")
    shutil.move(data, hidden)  # the run's data is no longer on this machine
    try:
        err, metrics, tags = run_evaluate(run_id, uri, csv, "nodata", capsys)
    finally:
        shutil.move(hidden, data)
    line = next(x for x in err.splitlines() if "training split" in x)
    assert line.startswith(f"could not check the {len(rows)} songs against the run's training split, none excluded")
    assert "data file not found" in line
    assert "eval_nodata_excluded_train_songs" not in metrics and metrics["eval_nodata_songs"] == len(rows)
    assert tags["eval_nodata_training_overlap"] == line


@pytest.mark.training  # uses the run tiny_run trains
def test_changed_data_and_an_all_training_csv_are_reported(tiny_run):
    import mlflow

    from lyricslab.evaluate import exclude_training_songs, logged_data_summary

    run_id, uri, cfg, _ = tiny_run
    frame = load_splits(cfg.data, None).frame
    train = frame[frame["split"] == "train"]
    mlflow.set_tracking_uri(uri)
    logged = logged_data_summary(run_id)  # what the run logged of its splits (data_summary.json)
    assert logged["train"] == {**logged["train"], "songs": len(train), "chars": sum(len(s) for s in train["lyrics"])}
    kept, overlap = exclude_training_songs(cfg, frame, logged)
    assert overlap.excluded == len(train) and len(kept) == len(frame) - len(train)
    assert "changed" not in overlap.line  # the split is the one the run logged
    _, changed = exclude_training_songs(cfg, frame, {"train": {"songs": len(train) + 5, "chars": 1}})
    assert changed.excluded == len(train) and "its data has changed since the run" in changed.line
    with pytest.raises(DataError, match="all .* songs of the CSV were in the run's training split"):
        exclude_training_songs(cfg, train)


def test_seen_before_matches_ids_and_near_copies_only():
    seen = pd.DataFrame({"id": ["1", "2"], "lyrics": [fresh(1), "Hold the line\nhold it\n"]})
    frame = pd.DataFrame({"id": ["1", "7", "8", "9"],
                          "lyrics": [fresh(50), "HOLD the line,\n[Chorus]\nhold it!\n", fresh(2), fresh(11)]})
    assert seen_before(frame, seen).tolist() == [True, True, False, False]
    assert seen_before(frame, seen.iloc[:0]).tolist() == [False] * 4
