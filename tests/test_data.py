"""The Genius CSV reader, filters, sampling, splits, normalisation and cache, on fixture files."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import DEV_CSV, compose, song, write_csv

from lyricslab.data import DataError, load_splits
from lyricslab.data.files import open_csv_stream
from lyricslab.data.genius import (
    READ,
    Filters,
    ReadReport,
    iter_blocks,
    parse_features,
    read_songs,
)
from lyricslab.data.normalize import (
    normalize_lyrics,
    render_structure_tags,
    section_tag,
)

FIXTURE = Path(__file__).parent / "fixtures" / "genius_sample.csv"


def genius_cfg(path: Path, tmp_path: Path, *extra: str):
    return compose(["data=genius", f"data.path={path}", f"data.cache_dir={tmp_path}/cache", "data.min_chars=10",
                    *extra]).data


def test_multiline_quoted_lyrics_and_escaped_features_survive(tmp_path):
    tricky = 'She said, "hold on"\nand the line, with commas, kept going\n\n[Bridge]\n"quoted" last line'
    rows = [song(1, lyrics=tricky, features='{"Ja\\"Nay O\'Neil","B, the Second"}'), song(2)]
    frame, report = read_songs(write_csv(tmp_path / "s.csv", rows), Filters(min_chars=10), songs=None)
    assert report.malformed == 0 and len(frame) == 2
    assert tricky in frame["lyrics"].tolist()
    assert parse_features('{"Ja\\"Nay O\'Neil","B, the Second"}') == ['Ja"Nay O\'Neil', "B, the Second"]
    assert parse_features("{}") == [] and parse_features('{"Solo"}') == ["Solo"]


@pytest.mark.parametrize("value,names", [
    (r'{"Ka\'mari","Juno Fixture"}', ["Ka'mari", "Juno Fixture"]),  # the Kaggle file escapes apostrophes
    (r'{Ka\'mari,"Juno Fixture"}', ["Ka'mari", "Juno Fixture"]),  # quoted only where a space needs it
    (r'{Zed,"Ka\'mari"}', ["Zed", "Ka'mari"]),
    ("{Zed}", ["Zed"]),  # one bare name
    ('{Zed,"Ada, the Second"}', ["Zed", "Ada, the Second"]),  # a comma inside quotes is part of the name
    (r'{"Back\\slash"}', ["Back\\slash"]),  # an escaped backslash stays, once
    ("{}", []), ("", []), (None, []),
])
def test_features_parse_to_clean_names(value, names):
    assert parse_features(value) == names


def test_malformed_rows_are_counted_skipped_and_limited(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [song(i) for i in range(40)])
    with path.open("a") as f:
        f.write("a,row,with,too,few,columns\n")
    frame, report = read_songs(path, Filters(min_chars=10), songs=None, max_bad_share=0.05)
    assert report.malformed == 1 and len(frame) == 40
    assert report.malformed_examples == ["a row: expected 11 columns, got 6"]
    with pytest.raises(DataError, match="malformed.*max_bad_row_share"):
        read_songs(path, Filters(min_chars=10), songs=None, max_bad_share=0.01)


def test_missing_file_and_missing_columns_say_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="data.path="):
        read_songs(tmp_path / "nope.csv", Filters(), songs=None)
    cols = ["title", "artist", "year", "views", "features", "id", "language"]
    path = write_csv(tmp_path / "cols.csv", [song(1)], columns=cols)
    with pytest.raises(DataError, match="missing columns: tag, lyrics"):
        read_songs(path, Filters(), songs=None)
    with pytest.raises(DataError, match="data.path=/path/to/song_lyrics.csv"):
        load_splits(genius_cfg(tmp_path / "absent.csv", tmp_path), None)


def test_empty_result_names_the_filter_that_removed_most(tmp_path):
    rows = [song(i, language="fr") for i in range(10)] + [song(20, tag="misc")]
    path = write_csv(tmp_path / "fr.csv", rows)
    with pytest.raises(DataError, match=r"data.language=en removed most \(10\)"):
        read_songs(path, Filters(language="en", min_chars=10), songs=None)


def test_each_filter_removes_what_it_should(tmp_path):
    rows = [song(1), song(2, language="es"), song(3, tag="misc"), song(4, tag="rock"), song(5, year=1950),
            song(6, views=3), song(7, lyrics="too short"), song(8, lyrics=song(1)["lyrics"]), song(9, tag="rock")]
    path = write_csv(tmp_path / "f.csv", rows)
    filters = Filters(language="en", tags=["pop", "rock"], year_min=2000, year_max=2030, min_views=50,
                      min_chars=20, dedupe=True)
    frame, report = read_songs(path, filters, songs=None)
    assert sorted(frame["id"].astype(int)) == [1001, 1004, 1009]
    assert report.removed["data.dedupe (exact duplicate lyrics)"] == 1
    everything, _ = read_songs(path, Filters(language=None, drop_misc=False, dedupe=False, min_chars=None), None)
    assert len(everything) == 9


def test_every_song_keeps_its_split_at_every_data_size(tmp_path):
    """Load one CSV at several data_size values: smaller samples nest in larger ones, splits never change."""
    rows = [song(i) for i in range(400)]
    for i in range(0, 400, 25):  # copies with scrape debris further down the file: dedupe must not break nesting
        rows.append(song(1000 + i, lyrics=rows[i]["lyrics"].rstrip("\n") + "12Embed"))
    path = write_csv(tmp_path / "many.csv", rows)

    def load(*size: str) -> dict[str, tuple[str, str]]:
        cfg = compose(["data=genius", f"data.path={path}", f"data.cache_dir={tmp_path}/cache", "data.min_chars=10",
                       *size])
        frame = load_splits(cfg.data, cfg.data_size.songs).frame
        return {song_id: (split, lyrics) for song_id, split, lyrics in zip(frame["id"], frame["split"], frame["lyrics"])}

    tiny, medium, full = load("data_size=tiny"), load("data_size=small", "data_size.songs=200"), load("data_size=full")
    assert (len(tiny), len(medium), len(full)) == (50, 200, 400)  # the 16 debris copies are gone
    assert set(tiny) < set(medium) < set(full)
    assert all(medium[i] == full[i] for i in medium) and all(tiny[i] == full[i] for i in tiny)
    # Another filter keeps another subset; a song's split still depends on the song alone.
    recent = load("data_size=full", "data.year_min=2015")
    assert len(recent) == 200 and all(recent[i] == full[i] for i in recent)
    counts = {s: [split for split, _ in full.values()].count(s) for s in ("train", "val", "test")}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def test_genius_csv_environment_variable_sets_the_default_path(tmp_path, monkeypatch):
    """conf/data/genius.yaml: path: ${oc.env:GENIUS_CSV,data/song_lyrics.csv}; data.path still wins."""
    monkeypatch.chdir(tmp_path)  # the fallback is relative to the working directory
    path = write_csv(tmp_path / "from_env.csv", [song(i) for i in range(30)])
    monkeypatch.setenv("GENIUS_CSV", str(path))
    cfg = compose(["data=genius", f"data.cache_dir={tmp_path}/cache", "data.min_chars=10"]).data
    assert cfg.path == str(path)
    assert load_splits(cfg, None).report["file"] == str(path)
    other = write_csv(tmp_path / "explicit.csv", [song(i) for i in range(30)])
    explicit = compose(["data=genius", f"data.path={other}", f"data.cache_dir={tmp_path}/cache"]).data
    assert explicit.path == str(other)

    monkeypatch.delenv("GENIUS_CSV")
    unset = compose(["data=genius", f"data.cache_dir={tmp_path}/cache"]).data
    assert unset.path == "data/song_lyrics.csv"
    with pytest.raises(DataError, match=r"data file not found: data/song_lyrics.csv; .*set GENIUS_CSV"):
        load_splits(unset, None)


def test_load_splits_caches_by_config_and_file(tmp_path):
    path = write_csv(tmp_path / "c.csv", [song(i) for i in range(60)])
    first = load_splits(genius_cfg(path, tmp_path), None)
    again = load_splits(genius_cfg(path, tmp_path), None)
    assert first.report["cache"] == "miss" and again.report["cache"] == "hit"
    assert first.train == again.train and first.val == again.val
    other = load_splits(genius_cfg(path, tmp_path, "data.structure=keep"), None)
    assert other.report["cache"] == "miss" and "[Verse 1]" in other.train[0]
    write_csv(path, [song(i) for i in range(61)])  # the file changed: read it again
    assert load_splits(genius_cfg(path, tmp_path), None).report["cache"] == "miss"


def test_section_headers_become_structure_tags():
    text = "[Intro]\nhey\n\n[Verse 2: A & B]\nline one  \n\n\n\n[Chorus: Someone]\nla la\n[Coro]\nle le\n[Pre-Chorus]\nx"
    out = normalize_lyrics(text + "\nYou might also like\n12Embed")
    assert out.splitlines() == ["[intro]", "hey", "", "[verse]", "line one", "", "[chorus]", "la la", "[chorus]",
                                "le le", "[pre-chorus]", "x"]
    assert section_tag("Hook") == "[chorus]" and section_tag("Skit 3") == "[interlude]"
    assert section_tag("Spoken Word") == "[section]"
    assert "[Verse" not in normalize_lyrics(text, "drop") and "[Verse 2: A & B]" in normalize_lyrics(text, "keep")
    assert render_structure_tags("[verse]\nhi\n[pre-chorus]") == "[Verse]\nhi\n[Pre-Chorus]"


def test_demo_corpus_is_shipped_and_usable(tmp_path):
    splits = load_splits(compose([f"data.cache_dir={tmp_path}"]).data, None)
    frame = splits.frame
    assert len(frame) >= 40 and frame["tag"].nunique() >= 5
    assert all("[verse]" in s and "[chorus]" in s for s in splits.train)
    assert splits.report["removed_by"]["data.language=en"] == 7  # the Spanish demo songs
    assert splits.report["removed_by"]["data.drop_misc"] == 1  # the poem


def streamed_rows(path: Path, block_size: int) -> tuple[pd.DataFrame, ReadReport]:
    """Every row as the streaming reader yields it, block by block; empty fields as ''."""
    report = ReadReport()
    with open_csv_stream(path) as source:
        table = pa.concat_tables(iter_blocks(source.stream, report, block_size=block_size))
    return table.to_pandas().fillna(""), report


def assert_streaming_matches_pandas(path: Path, block_size: int) -> pd.DataFrame:
    streamed, report = streamed_rows(path, block_size)
    expected = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert report.malformed == 0 and report.undecodable == 0
    pd.testing.assert_frame_equal(streamed, expected[READ], check_dtype=False)
    return expected


def test_real_format_fixture_streams_exactly_like_pandas():
    """tests/fixtures/genius_sample.csv: original rows in the Kaggle file's exact format, read in CI.

    Multi-line quoted lyrics with commas and doubled quotes, `[Chorus: A & B]` headers, escaped
    features, an empty `views`, a `misc` row, a Spanish row, a trailing `12Embed`, and one row
    with CRLF line endings. Small blocks make rows straddle block boundaries.
    """
    assert FIXTURE.read_bytes().count(b"\r\n") > 5  # the CRLF row survived git
    expected = assert_streaming_matches_pandas(FIXTURE, block_size=1 << 10)
    assert len(expected) == 10 and (expected["views"] == "").sum() == 1
    assert expected["lyrics"].str.contains("\r\n", regex=False).sum() == 1
    features = [name for value in expected["features"] for name in parse_features(value)]
    assert "Ja'Quan Reed" in features and "Ty'Rell Banks" in features and 'Ana "Bee" Cole' in features
    assert "Kezzo" in features and "Quarry" in features
    assert not any("\\" in name or '"' in name.replace('"Bee"', "") for name in features)


def test_real_format_fixture_prepares_clean_splits(tmp_path):
    splits = load_splits(genius_cfg(FIXTURE, tmp_path, "data.val_fraction=0.3", "data.test_fraction=0.3"), None)
    removed = splits.report["removed_by"]
    assert removed["data.language=en"] == 1 and removed["data.drop_misc"] == 1
    assert splits.report["duplicates_removed"] == {"exact": 0, "near": 1}  # the live copy of Harbour Lights
    assert len(splits.frame) == 7 and splits.report["songs_in_two_splits"] == 0
    texts = splits.train + splits.val + splits.test
    assert not any("Embed" in t or "\r" in t or "You might also like" in t for t in texts)
    assert all(t.startswith("[") and "[chorus]" in t for t in texts)  # [Hook: ...] included


@pytest.mark.skipif(not DEV_CSV.exists(), reason="../shared/data/lyrics_dev.csv not present")
def test_dev_csv_streams_exactly_like_pandas():
    assert len(assert_streaming_matches_pandas(DEV_CSV, block_size=1 << 16)) == 784


@pytest.mark.skipif(not DEV_CSV.exists(), reason="../shared/data/lyrics_dev.csv not present")
def test_dev_csv_reads_clean(tmp_path):
    splits = load_splits(genius_cfg(DEV_CSV, tmp_path, "data.min_chars=200"), 300)
    assert splits.report["malformed_rows"] == 0
    assert len(splits.frame) == 300 and splits.val and splits.test
    assert sum("[chorus]" in s for s in splits.train) > 0.5 * len(splits.train)


def test_seen_hashes_marks_first_occurrences_across_blocks_and_merges():
    import numpy as np

    from lyricslab.data.dedupe import SeenHashes

    seen = SeenHashes(merge_every=2)
    blocks = [[5, 3, 5], [3, 7], [1, 9], [9, 5, 2], [2, 8]]
    expected = [[True, True, False], [False, True], [True, True], [False, False, True], [False, True]]
    for keys, fresh in zip(blocks, expected):
        assert seen.add_new(np.array(keys, dtype=np.uint64)).tolist() == fresh
    assert len(seen.chunks) <= 3


def listed_cfg(paths: list[Path], tmp_path: Path, *extra: str):
    """data.path as a list, the way the command line writes it: data.path=[a.csv,b.csv]."""
    return genius_cfg(f"[{','.join(str(p) for p in paths)}]", tmp_path, "data_size=full", *extra)


def test_data_path_lists_several_files_read_as_one_corpus(tmp_path):
    from lyricslab.data.prepare import assign_splits

    first = write_csv(tmp_path / "a.csv", [song(i) for i in range(40)] + [song(90, language="fr")])
    # Songs 30-39 again (new ids, same words: dedupe across files), new songs 40-69, one misc row.
    second = write_csv(tmp_path / "b.csv", [song(i, id=5000 + i) for i in range(30, 40)]
                       + [song(i) for i in range(40, 70)] + [song(91, tag="misc")])
    cfg = listed_cfg([first, second], tmp_path)
    assert list(cfg.path) == [str(first), str(second)]
    splits = load_splits(cfg, None)
    ids = sorted(splits.frame["id"].astype(int))
    assert ids == [1000 + i for i in range(70)]  # each song once, its first copy (file a); filters on both
    removed = splits.report["removed_by"]
    assert removed["data.language=en"] == 1 and removed["data.drop_misc"] == 1
    assert splits.report["duplicates_removed"]["exact"] == 10 and splits.report["songs_in_two_splits"] == 0
    assert splits.report["file"] == f"{first}, {second}"
    # Each song's split is its id's alone: the same as when its own file is read by itself.
    alone = pd.concat([load_splits(genius_cfg(p, tmp_path, "data_size=full"), None).frame for p in (first, second)])
    split_alone = dict(zip(alone["id"], alone["split"]))
    assert all(split_alone[i] == s for i, s in zip(splits.frame["id"], splits.frame["split"]))
    assert (splits.frame["split"] == assign_splits(splits.frame["id"], 0.1, 0.1)).all()
    # A sample of the combined corpus is the songs with the smallest id hash across both files.
    sample = load_splits(listed_cfg([first, second], tmp_path), 20).frame
    assert len(sample) == 20 and set(sample["id"]) < set(splits.frame["id"])


def test_every_listed_file_is_in_the_cache_key(tmp_path):
    first = write_csv(tmp_path / "a.csv", [song(i) for i in range(30)])
    second = write_csv(tmp_path / "b.csv", [song(i) for i in range(30, 60)])
    both = load_splits(listed_cfg([first, second], tmp_path), None)
    assert both.report["cache"] == "miss"
    assert load_splits(listed_cfg([first, second], tmp_path), None).report["cache"] == "hit"
    alone = load_splits(genius_cfg(first, tmp_path, "data_size=full"), None)
    assert alone.cache_path != both.cache_path
    write_csv(second, [song(i) for i in range(30, 61)])  # only the second file changed
    again = load_splits(listed_cfg([first, second], tmp_path), None)
    # A new key, so the token streams and the n-gram cached beside the splits (<cache_path>-tok-..., -ngram8)
    # are computed anew too.
    assert again.report["cache"] == "miss" and again.cache_path != both.cache_path and len(again.frame) == 61


def test_a_missing_file_in_the_list_is_a_one_line_error(tmp_path):
    from lyricslab.data.prepare import resolve_path

    first = write_csv(tmp_path / "a.csv", [song(i) for i in range(30)])
    missing = tmp_path / "nope.csv"
    for cfg in (listed_cfg([first, missing], tmp_path), genius_cfg(missing, tmp_path)):
        with pytest.raises(DataError) as err:
            load_splits(cfg, None)
        message = str(err.value)
        assert message.startswith(f"data file not found: {missing}") and "data.path=" in message
        assert "\n" not in message
    with pytest.raises(DataError, match="data file not found: .*nope.csv"):
        resolve_path(listed_cfg([first, missing], tmp_path))  # run.py's early check, before TensorFlow
    assert resolve_path(listed_cfg([first], tmp_path)) == [first]
    with pytest.raises(DataError, match="lists .*a.csv twice"):
        load_splits(listed_cfg([first, first], tmp_path), None)
