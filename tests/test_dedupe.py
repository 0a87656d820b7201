"""Duplicate removal: copies of one song that differ only in scrape debris never reach two splits."""

import pyarrow as pa
import pytest
from conftest import DEV_CSV, compose, song, write_csv

from lyricslab.data import load_splits
from lyricslab.data.dedupe import dedupe_keys
from lyricslab.data.normalize import normalize_lyrics


def verse(i: int) -> str:
    return (f"[Verse 1]\nLanterns on the pier are counting boats {i}\nThe tide is slow, the ropes are wet\n\n"
            f"[Chorus: Test & Fixture]\nHold the harbour light {i}\nWe're not home yet\n")


def copies(i: int) -> list[str]:
    """One song as the Genius dump carries it several times: an exact copy, then near ones."""
    base = verse(i)
    return [
        base,
        base,  # exact copy
        base.rstrip("\n") + "12Embed",  # Genius' trailing embed counter, glued to the last line
        base.replace("\n\n[Chorus", "\nYou might also like\n\n[Chorus"),  # scrape debris line
        base.replace("[Chorus: Test & Fixture]", "[Chorus]"),  # header spelling
        base.replace("\n", "  \r\n"),  # trailing spaces, CRLF
        base.replace("We're not home yet", "WE'RE NOT HOME, YET!"),  # case and punctuation
        base.replace("We're", "We\u2019re").replace("wet\n", "wet\u2005\n"),  # curly quote, Genius' odd space
    ]


def genius_cfg(path, tmp_path, *extra):
    return compose(["data=genius", f"data.path={path}", f"data.cache_dir={tmp_path}/cache", "data.min_chars=10",
                    *extra]).data


def songs_in_two_splits(splits) -> int:
    """Counted here from the split texts, independently of the report's own count."""
    train, val, test = (set(getattr(splits, name)) for name in ("train", "val", "test"))
    return len((train & val) | (train & test) | (val & test))


def test_debris_copies_are_dropped_and_never_split_across_train_val_test(tmp_path):
    groups = 40
    rows = [song(100 * i + j, lyrics=text) for i in range(groups) for j, text in enumerate(copies(i))]
    path = write_csv(tmp_path / "copies.csv", rows)
    splits = load_splits(genius_cfg(path, tmp_path), None)
    assert songs_in_two_splits(splits) == 0
    assert len(splits.frame) == groups  # one song per group: the first copy
    assert sorted(splits.frame["id"].astype(int)) == [1000 + 100 * i for i in range(groups)]
    assert splits.report["duplicates_removed"] == {"exact": groups, "near": 6 * groups}
    assert splits.report["songs_in_two_splits"] == 0

    kept_all = load_splits(genius_cfg(path, tmp_path, "data.dedupe=false"), None)
    assert len(kept_all.frame) == 8 * groups
    # Without dedupe the same normalised song does land in two splits, and the report says so.
    assert kept_all.report["songs_in_two_splits"] == songs_in_two_splits(kept_all) > 0
    assert "two splits" in kept_all.report["summary"]


def test_dedupe_key_is_the_words_only():
    keys = dedupe_keys(pa.array(copies(1)))
    assert len(set(keys)) == 1
    different = dedupe_keys(pa.array([verse(1), verse(2), verse(1).replace("slow", "low")]))
    assert len(set(different)) == 3  # one changed word or number is another song


def test_a_song_and_its_normalised_text_share_a_key():
    """So any two songs that normalise to the same text are caught while streaming."""
    texts = [t for i in range(3) for t in copies(i)] + [
        "[Intro]\n\n[Verse 2: A & B]\nline one  \n\n\n[Outro]\n3Embed",
        "x\n[Outro]\n12Embed 3Embed",  # stacked counters
        "You might also like[Chorus]\nla la",  # debris glued to a header
    ]
    for structure in ("tags", "keep", "drop"):
        normalised = [normalize_lyrics(t, structure) for t in texts]
        assert dedupe_keys(pa.array(texts)) == dedupe_keys(pa.array(normalised)), structure


@pytest.mark.skipif(not DEV_CSV.exists(), reason="../shared/data/lyrics_dev.csv not present")
def test_real_songs_and_their_normalised_text_share_a_key():
    import pandas as pd

    lyrics = pd.read_csv(DEV_CSV, keep_default_na=False)["lyrics"].tolist()
    for structure in ("tags", "drop"):
        assert dedupe_keys(pa.array(lyrics)) == dedupe_keys(pa.array([normalize_lyrics(t, structure)
                                                                       for t in lyrics]))
