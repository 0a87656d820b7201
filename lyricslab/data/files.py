"""Open the lyrics CSV as one byte stream, whatever it is packed in: plain, gzip, bzip2 or zip.

Kaggle hands out `archive.zip` (holding song_lyrics.csv), people keep `.csv.gz` copies; all of
them stream without unpacking to disk. The packing is sniffed from the first bytes, not the
file name, so a renamed file still reads. pyarrow decompresses gzip and bzip2 in C++; zip
members stream through Python's zipfile, which pyarrow reads like any file object.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from lyricslab.data.errors import DataError

# First bytes of each packing; anything else is read as plain CSV.
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"PK\x03\x04": "zip"}
ZIP_MEMBER = "song_lyrics.csv"  # the CSV inside Kaggle's archive.zip
# What a truncated or corrupt file raises while it is read (pyarrow, zlib, zipfile).
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, pa.ArrowInvalid)


@dataclass
class CsvStream:
    """A readable byte stream of CSV text, and how far through the file reading has got."""

    stream: Any  # a pyarrow NativeFile or a binary file object
    total: int  # bytes in `position`'s units, for a progress bar
    position: Callable[[], int]
    packing: str  # plain | gzip | bz2 | zip


def packing_of(path: Path) -> str:
    """plain, gzip, bz2 or zip; a one-line DataError when `path` can't be read at all."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.csv*")) + sorted(p.name for p in path.glob("*.zip"))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise DataError(f"data.path {path} is a directory{hint}; pass the CSV file itself, "
                        f"e.g. data.path={path / ZIP_MEMBER}")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}; pass data.path=/path/to/song_lyrics.csv") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}; check the path and its permissions") from err
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), "plain")


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    csvs = [i for i in archive.infolist() if i.filename.lower().endswith(".csv") and not i.is_dir()]
    named = [i for i in csvs if Path(i.filename).name == ZIP_MEMBER]
    if named or len(csvs) == 1:
        return (named or csvs)[0]
    listed = ", ".join(i.filename for i in csvs[:5]) or "no .csv file"
    raise DataError(f"{path} is a zip holding {listed}; expected one CSV (Kaggle's archive.zip holds "
                    f"{ZIP_MEMBER}); unzip it and pass data.path=/path/to/the.csv")


@contextmanager
def open_csv_stream(path: Path) -> Iterator[CsvStream]:
    """Yield the decompressed CSV bytes of `path`, streaming; closes everything it opened."""
    packing = packing_of(path)
    if packing == "zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise DataError(f"{path} looks like a zip but cannot be opened ({err}); download it again") from err
        with archive:
            info = _zip_member(archive, path)
            with archive.open(info) as member:
                yield CsvStream(member, info.file_size, member.tell, packing)
        return
    raw = pa.OSFile(str(path))
    try:
        stream = raw if packing == "plain" else pa.CompressedInputStream(raw, packing)
        # Progress counts bytes of the file on disk, so compressed files finish at 100% too.
        yield CsvStream(stream, path.stat().st_size, raw.tell, packing)
    finally:
        raw.close()


def unreadable(path: Path, packing: str, err: BaseException) -> DataError:
    """The one-line error for a file that breaks off or is corrupt part-way through."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
    packed = "" if packing == "plain" else f" ({packing})"
    return DataError(f"cannot read {path}{packed}: {detail}; the file may be truncated or corrupt, "
                     f"download it again")


def read_header(path: Path) -> list[str]:
    """The column names on the first line of the (decompressed) CSV; [] for an empty file."""
    with open_csv_stream(path) as source:
        try:
            head = source.stream.read(1 << 16)
        except READ_ERRORS as err:
            raise unreadable(path, source.packing, err) from err
    line = bytes(head).split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    try:
        return next(csv.reader([line]), []) if line else []
    except csv.Error as err:  # e.g. a binary file whose first "line" holds a bare carriage return
        raise DataError(f"{path} does not start with a CSV header ({err}); expected the Genius schema "
                        f"(title,tag,artist,...)") from None
