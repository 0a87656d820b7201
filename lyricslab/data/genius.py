"""Stream the Genius Song Lyrics CSV (Kaggle `song_lyrics.csv`, ~9 GB) with pyarrow.

The file is never loaded whole: pyarrow's streaming reader parses it block by block
(quoted, multi-line lyrics included; plain, gzip, bzip2 or zip, see lyricslab.data.files),
each block is filtered with pyarrow compute, and only the rows that can still be sampled are
kept. Malformed rows are counted and skipped; bytes that are not UTF-8 are replaced (U+FFFD)
and the rows they touch counted.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from lyricslab.data.dedupe import Deduper, stable_hash
from lyricslab.data.errors import DataError
from lyricslab.data.files import READ_ERRORS, open_csv_stream, read_header, unreadable

COLUMNS = ["title", "tag", "artist", "year", "views", "features", "lyrics", "id",
           "language_cld3", "language_ft", "language"]
# Columns the filters and the models need; the cld3/ft guesses are not read.
REQUIRED = ["title", "tag", "artist", "year", "views", "lyrics", "id", "language"]
# Read when the file has it (conditioning on featured artists), null when it does not.
OPTIONAL = ["features"]
READ = REQUIRED + OPTIONAL
NON_SONG_TAG = "misc"  # Genius files books, poems and transcripts under "misc"
EXACT_DUPLICATES = "data.dedupe (exact duplicate lyrics)"
NEAR_DUPLICATES = "data.dedupe (near-duplicate lyrics)"


def languages(value: Any) -> list[str] | None:
    """data.language as a list of codes: one code, a list, or null (None: every language)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        codes = [str(v) for v in value]
    except TypeError:
        codes = []
    if not codes or not all(isinstance(v, str) and v for v in value):
        raise DataError(f"data.language must be a language code (en), a list of codes ([en, es]) or null for all, "
                        f"not {value!r}")
    return codes


@dataclass
class Filters:
    language: str | list[str] | None = "en"
    tags: list[str] | None = None
    year_min: int | None = None
    year_max: int | None = None
    min_views: int | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    drop_misc: bool = True
    dedupe: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> "Filters":
        tags = cfg.get("tags")
        codes = languages(cfg.get("language"))
        return cls(language=codes[0] if codes and len(codes) == 1 else codes, tags=list(tags) if tags else None,
                   year_min=cfg.get("year_min"), year_max=cfg.get("year_max"),
                   min_views=cfg.get("min_views"), min_chars=cfg.get("min_chars"),
                   max_chars=cfg.get("max_chars"), drop_misc=cfg.get("drop_misc", True),
                   dedupe=cfg.get("dedupe", True))


@dataclass
class ReadReport:
    """What happened to every row of the file, for the error messages and the data summary."""

    rows: int = 0
    malformed: int = 0
    undecodable: int = 0  # rows with bytes that are not UTF-8 (replaced by U+FFFD)
    malformed_examples: list[str] = field(default_factory=list)
    removed: Counter = field(default_factory=Counter)  # filter name -> rows it removed
    kept: int = 0

    @property
    def bad_share(self) -> float:
        total = self.rows + self.malformed
        return self.malformed / total if total else 0.0

    def summary(self) -> str:
        parts = [f"{self.rows + self.malformed:,} rows read", f"{self.kept:,} songs kept"]
        if self.malformed:
            parts.append(f"{self.malformed:,} malformed rows skipped ({self.bad_share:.2%})")
        if self.undecodable:
            parts.append(f"{self.undecodable:,} rows had non-UTF-8 bytes (replaced by U+FFFD)")
        parts += [f"{name}: -{n:,}" for name, n in self.removed.most_common() if n]
        return ", ".join(parts)


def parse_features(value: str | None) -> list[str]:
    """Parse the `features` column: '{"Ka\\'mari","B, Jr."}' or '{Zed}' -> ["Ka'mari", "B, Jr."] / ["Zed"].

    The column is written like a Postgres array literal: elements are double-quoted only
    when they need to be, and a backslash escapes the next character. That is CSV with a
    backslash escape character, so the csv module parses it (Python literal syntax would
    choke on bare names).
    """
    if value is None:
        return []
    inner = value.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    if not inner.strip():
        return []
    fields = next(csv.reader([inner], escapechar="\\", doublequote=False, skipinitialspace=True), [])
    return [name.strip() for name in fields if name.strip()]


def check_columns(path: Path) -> list[str]:
    """Return the header (read through the same decompression as the rows); raise a one-line
    DataError for an empty file or missing columns."""
    names = [h.strip() for h in read_header(path)]
    if not names:
        raise DataError(f"{path} is empty; expected the Genius CSV with the header {','.join(COLUMNS)}")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DataError(f"{path} is missing columns: {', '.join(missing)}; expected the Genius "
                        f"schema ({','.join(COLUMNS)})")
    return names


def _numbers(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Strings to float64; anything non-numeric becomes null instead of failing the block."""
    text = pc.utf8_trim_whitespace(column)
    numeric = pc.match_substring_regex(text, r"^-?\d+(\.\d+)?$")
    return pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.float64())


def _apply(table: pa.Table, name: str, mask: pa.Array, report: ReadReport) -> pa.Table:
    mask = pc.fill_null(mask, False)
    removed = len(table) - pc.sum(mask).as_py() if len(table) else 0
    report.removed[name] += removed or 0
    return table.filter(mask) if removed else table


def filter_block(table: pa.Table, filters: Filters, report: ReadReport, deduper: Deduper) -> pa.Table:
    """Apply every configured filter to one parsed block, counting what each removes."""
    table = _apply(table, "bad rows (no lyrics or id)",
                   pc.and_(pc.is_valid(table["lyrics"]), pc.is_valid(table["id"])), report)
    codes = languages(filters.language)
    if codes:
        name = f"data.language={codes[0]}" if len(codes) == 1 else f"data.language=[{', '.join(codes)}]"
        table = _apply(table, name, pc.is_in(table["language"], pa.array(codes, pa.string())), report)
    if filters.drop_misc:
        table = _apply(table, "data.drop_misc", pc.not_equal(table["tag"], NON_SONG_TAG), report)
    if filters.tags:
        table = _apply(table, f"data.tags={filters.tags}", pc.is_in(table["tag"], pa.array(filters.tags)), report)
    if filters.year_min is not None or filters.year_max is not None:
        year = _numbers(table["year"])
        lo = filters.year_min if filters.year_min is not None else -1e9
        hi = filters.year_max if filters.year_max is not None else 1e9
        table = _apply(table, "data.year_min/year_max",
                       pc.and_(pc.greater_equal(year, lo), pc.less_equal(year, hi)), report)
    if filters.min_views:
        table = _apply(table, f"data.min_views={filters.min_views}",
                       pc.greater_equal(_numbers(table["views"]), filters.min_views), report)
    if filters.min_chars or filters.max_chars:
        length = pc.utf8_length(table["lyrics"])
        mask = pa.array(np.ones(len(table), dtype=bool))
        if filters.min_chars:
            mask = pc.and_(mask, pc.greater_equal(length, filters.min_chars))
        if filters.max_chars:
            mask = pc.and_(mask, pc.less_equal(length, filters.max_chars))
        table = _apply(table, "data.min_chars/max_chars", mask, report)
    if filters.dedupe and len(table):
        keep, exact, near = deduper.first_copies(table["lyrics"])
        report.removed[EXACT_DUPLICATES] += exact
        report.removed[NEAR_DUPLICATES] += near
        table = table.filter(pa.array(keep)) if exact or near else table
    return table


def iter_blocks(source: Any, report: ReadReport, block_size: int = 16 << 20) -> Iterator[pa.Table]:
    """Yield the CSV as pyarrow tables of whole rows, skipping (and counting) malformed ones.

    `source` is a byte stream (see lyricslab.data.files.open_csv_stream) or a path.
    """

    def on_invalid(row: pacsv.InvalidRow) -> str:
        report.malformed += 1
        if len(report.malformed_examples) < 3:
            where = f"line {row.number}" if row.number is not None and row.number >= 0 else "a row"
            report.malformed_examples.append(
                f"{where}: expected {row.expected_columns} columns, got {row.actual_columns}")
        return "skip"

    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=READ,
            include_missing_columns=True,  # an optional column the file lacks reads as nulls
            # Bytes, not strings: no type guessing on a 9 GB file, and a stray non-UTF-8 byte
            # is replaced in as_text instead of failing the whole read.
            column_types={c: pa.binary() for c in READ},
            strings_can_be_null=True,
        ),
    )
    try:
        for batch in reader:
            report.rows += batch.num_rows
            yield as_text(batch, report)
    finally:  # stop the reader's threads now, not at interpreter exit (where they abort the process)
        reader.close()


def as_text(batch: pa.RecordBatch, report: ReadReport) -> pa.Table:
    """Binary columns to UTF-8 strings; bytes that aren't UTF-8 become U+FFFD, rows touched are counted.

    A valid column costs one C++ validation (the cast); only a column that fails it is decoded
    in Python, so a clean file pays nothing and the count is exact (a U+FFFD already in the
    text is not counted).
    """
    touched = np.zeros(batch.num_rows, dtype=bool)
    columns = []
    for column in batch.columns:
        try:
            columns.append(column.cast(pa.string()))
        except pa.ArrowInvalid:
            text, bad = _decode_replacing(column)
            columns.append(text)
            touched |= bad
    report.undecodable += int(touched.sum())
    return pa.Table.from_arrays(columns, names=batch.schema.names)


def _decode_replacing(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    values: list[str | None] = []
    bad = np.zeros(len(column), dtype=bool)
    for i, raw in enumerate(column.to_pylist()):
        if raw is None:
            values.append(None)
            continue
        try:
            values.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(raw.decode("utf-8", errors="replace"))
            bad[i] = True
    return pa.array(values, pa.string()), bad


def read_songs(path: Path | Sequence[Path], filters: Filters, songs: int | None,
               max_bad_share: float = 0.01) -> tuple[pd.DataFrame, ReadReport]:
    """Stream `path` (one CSV, or several read one after another as one corpus), filter, and keep a
    deterministic sample of `songs` songs (all if None).

    The sample is the `songs` rows with the smallest stable hash of their id, so a song chosen
    at one size is chosen at every larger size, and reading more of the file never reshuffles.
    Several files share one duplicate filter (a song in two files is kept once: its first copy,
    in the order the files are listed) and one sample; each file must pass the malformed-row limit.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    for one in paths:
        if not one.exists():
            raise DataError(f"data file not found: {one}; pass data.path=/path/to/song_lyrics.csv "
                            f"(or data=demo for the built-in corpus)")
        check_columns(one)
    report = ReadReport()
    deduper = Deduper()
    sample = _Sample(songs)
    for one in paths:
        _read_file(one, filters, report, deduper, sample, max_bad_share, named=len(paths) > 1)
    kept, keys = sample.kept, sample.keys
    if kept is None or not len(kept):
        worst, n = report.removed.most_common(1)[0] if report.removed else ("(none)", 0)
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files ({', '.join(p.name for p in paths)})"
        raise DataError(f"no songs left after filtering {report.rows:,} rows of {where}: {worst} removed most "
                        f"({n:,}); relax that filter")
    frame = kept.to_pandas()
    frame["sample_key"] = keys
    frame = frame.sort_values("sample_key", kind="stable").reset_index(drop=True)
    report.kept = len(frame)
    return frame, report


@dataclass
class _Sample:
    """The rows kept so far across every file read, and their sampling keys (bounded by `songs`)."""

    songs: int | None
    kept: pa.Table | None = None
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))

    def add(self, block: pa.Table) -> None:
        block_keys = stable_hash(block["id"])
        self.kept = block if self.kept is None else pa.concat_tables([self.kept, block])
        self.keys = np.concatenate([self.keys, block_keys])
        if self.songs is not None and len(self.keys) > self.songs:
            # argpartition keeps memory bounded by `songs`, however big the file is.
            top = np.sort(np.argpartition(self.keys, self.songs - 1)[:self.songs])
            self.kept, self.keys = self.kept.take(pa.array(top)), self.keys[top]


def _read_file(path: Path, filters: Filters, report: ReadReport, deduper: Deduper, sample: _Sample,
               max_bad_share: float, named: bool = False) -> None:
    """Stream one CSV into `sample`, counting into `report`; the malformed-row limit and the empty-file
    check apply to this file alone. `named`: one of several files, so its examples name it."""
    rows, malformed, examples = report.rows, report.malformed, len(report.malformed_examples)
    with open_csv_stream(path) as source:
        # A progress bar only where reading takes long enough to wonder (the real file, not the demo).
        bar = tqdm(total=source.total, unit="B", unit_scale=True, desc=f"reading {path.name}",
                   disable=source.total < 64 << 20)
        blocks = iter_blocks(source.stream, report)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except READ_ERRORS as err:  # a truncated download or a corrupt archive
                raise unreadable(path, source.packing, err) from err
            block = filter_block(block, filters, report, deduper)
            bar.update(source.position() - bar.n)
            bar.set_postfix(rows=f"{report.rows:,}", kept=f"{len(sample.keys) + len(block):,}", refresh=False)
            if len(block):
                sample.add(block)
        bar.close()
    if named:
        report.malformed_examples[examples:] = [f"{path.name} {e}" for e in report.malformed_examples[examples:]]
    file_rows, file_malformed = report.rows - rows, report.malformed - malformed
    share = file_malformed / (file_rows + file_malformed) if file_rows + file_malformed else 0.0
    if share > max_bad_share:
        shown = "; ".join(report.malformed_examples[examples:])
        raise DataError(f"{file_malformed:,} of {file_rows + file_malformed:,} rows in {path} are malformed "
                        f"({share:.1%} > data.max_bad_row_share={max_bad_share}){'; e.g. ' + shown if shown else ''}. "
                        f"Check the file is the Genius CSV, or raise data.max_bad_row_share")
    if file_rows + file_malformed == 0:
        raise DataError(f"{path} has a header but no data rows; pass the full Genius CSV "
                        f"(song_lyrics.csv) as data.path")
