"""Bad or unusual input files: each either reads transparently or fails with one clear line."""

import bz2
import gzip
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import COLUMNS, ROOT, compose, song, write_csv

from lyricslab.data import DataError, load_splits


def genius_cfg(path: Path, tmp_path: Path, *extra: str):
    return compose(["data=genius", f"data.path={path}", f"data.cache_dir={tmp_path}/cache", "data.min_chars=10",
                    *extra]).data


def one_line_error(path: Path, tmp_path: Path) -> str:
    with pytest.raises(DataError) as err:
        load_splits(genius_cfg(path, tmp_path), None)
    message = str(err.value)
    assert "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing half-prepared is cached
    return message


def rows(n: int = 30) -> list[dict]:
    return [song(i) for i in range(n)]


def test_latin1_file_reads_with_replacement_and_counts_the_rows_touched(tmp_path):
    accented = [song(i, artist="Ren\u00e9e Fixture",
                     lyrics=f"[Verse]\nCaf\u00e9 lights at the corner {i}\nand more words here\n") for i in range(5)]
    path = tmp_path / "latin1.csv"
    write_csv(path, accented + rows(25))
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))  # the same rows, Latin-1 encoded
    splits = load_splits(genius_cfg(path, tmp_path), None)
    assert splits.report["rows_with_non_utf8_bytes"] == 5
    assert "5 rows had non-UTF-8 bytes" in splits.report["summary"]
    assert len(splits.frame) == 30
    touched = splits.frame[splits.frame["artist"].str.startswith("Ren")]
    assert (touched["artist"] == "Ren\ufffde Fixture").all()
    assert touched["lyrics"].str.contains("Caf\ufffd lights", regex=False).all()


def test_a_replacement_character_already_in_valid_utf8_is_not_counted(tmp_path):
    path = write_csv(tmp_path / "ok.csv", [song(1, artist="Odd \ufffd Band")] + rows(20))
    assert load_splits(genius_cfg(path, tmp_path), None).report["rows_with_non_utf8_bytes"] == 0


@pytest.mark.parametrize("packing", ["gzip", "bz2", "zip", "zip-in-folder", "gzip-named-csv"])
def test_compressed_files_read_like_the_plain_csv(packing, tmp_path):
    plain = write_csv(tmp_path / "song_lyrics.csv", rows())
    data = plain.read_bytes()
    if packing == "gzip":
        path = tmp_path / "song_lyrics.csv.gz"
        path.write_bytes(gzip.compress(data))
    elif packing == "gzip-named-csv":  # the packing is sniffed from the bytes, not the name
        path = tmp_path / "packed.csv"
        path.write_bytes(gzip.compress(data))
    elif packing == "bz2":
        path = tmp_path / "song_lyrics.csv.bz2"
        path.write_bytes(bz2.compress(data))
    else:  # Kaggle's archive.zip holds song_lyrics.csv
        path = tmp_path / "archive.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("README.txt", "not the data")
            archive.writestr("data/song_lyrics.csv" if packing == "zip-in-folder" else "song_lyrics.csv", data)
    expected = load_splits(genius_cfg(plain, tmp_path), None).frame
    frame = load_splits(genius_cfg(path, tmp_path), None).frame
    assert frame.equals(expected)


def test_truncated_or_ambiguous_archives_are_one_line_errors(tmp_path):
    data = write_csv(tmp_path / "s.csv", rows(200)).read_bytes()
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(data)[:-2000])
    assert "truncated or corrupt" in one_line_error(truncated, tmp_path)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", data)
        archive.writestr("b.csv", data)
    assert "a.csv, b.csv" in one_line_error(two, tmp_path)


def test_directory_as_data_path_is_one_line_error(tmp_path):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    write_csv(folder / "song_lyrics.csv", rows())
    message = one_line_error(folder, tmp_path)
    assert "is a directory (it holds song_lyrics.csv)" in message
    assert f"data.path={folder / 'song_lyrics.csv'}" in message


def test_header_only_and_empty_files_say_so(tmp_path):
    header_only = write_csv(tmp_path / "header.csv", [])
    assert one_line_error(header_only, tmp_path).endswith("has a header but no data rows; pass the full Genius CSV "
                                                          "(song_lyrics.csv) as data.path")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "is empty" in one_line_error(empty, tmp_path)


def test_gzip_header_is_read_through_the_decompressor(tmp_path):
    """check_columns used to read gzip bytes as text and report every column missing."""
    from lyricslab.data.genius import check_columns

    path = tmp_path / "s.csv.gz"
    path.write_bytes(gzip.compress(write_csv(tmp_path / "s.csv", rows(2)).read_bytes()))
    assert check_columns(path) == COLUMNS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lyricslab.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_bad_data_path_through_the_cli_writes_nothing(store, tmp_path):
    """A header-only file gets past the path check and reaches the reader: still one line, no run, no cache."""
    header_only = write_csv(tmp_path / "header.csv", [])
    folder = tmp_path / "folder"
    folder.mkdir()
    for bad in (header_only, folder):
        out = run_cli("data=genius", f"data.path={bad}", "trainer.epochs=1", *store)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
        assert errors == [out.stderr.strip().splitlines()[-1]]  # TensorFlow may log above it; one error line
        assert str(bad) in errors[0] and ("no data rows" in errors[0] or "is a directory" in errors[0])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "mlruns").exists()
