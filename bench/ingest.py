"""Ingest: lyricslab's `read_songs` (stream, filter to English non-misc songs of 100–20000
characters, dedupe, deterministic sample) against pyarrow's plain streaming parse of the same
file, on Genius-schema CSVs of 256 MB and 1 GB built from original fixture rows (multi-line
quoted lyrics, escaped `features`, six tags, three languages; each row has a distinct id and a
distinct line, so dedupe keeps them).

The plain parse reads what lyricslab's reader reads: the same columns (`include_columns`), all
as strings, with the same block size, so the ratio is the cost of filtering, deduping and
sampling, not of reading fewer columns. Each run is a fresh subprocess, so its peak RSS is its
own, and the two sides alternate, swapping which goes first each round.

The memory lyricslab itself holds is bounded (the sample is cut back to `data_size` songs after
every block; dedupe keeps 8 bytes a song in sorted numpy chunks), but peak RSS still grows with
the file, and pyarrow's plain parse grows the same way, so most of it is the reader's. Switching
Arrow's memory pool (`ARROW_DEFAULT_MEMORY_POOL=system|mimalloc|jemalloc`) did not flatten it
when tried by hand. Flat RSS on the 9 GB Kaggle file is not demonstrated here.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from bench.common import Target, check, interleaved, out_dir, quick, record

TARGET_RATIO = Target(">=", 0.3, "x")  # lyricslab ingest MB/s / pyarrow plain parse MB/s
TARGET_PEAK_RSS = Target("<=", 1024, "MB")  # peak RSS of the ingest process on the big file

VERSES = ["Paper boats are sailing down the gutter after rain",
          "The diner sign is humming out a name I cannot say",
          "Every bus that passes has a window full of you",
          "I kept the ticket stub inside a pocket of my coat"]


def build_csv(path: Path, megabytes: int) -> Path:
    if path.exists() and path.stat().st_size >= megabytes << 20:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["title", "tag", "artist", "year", "views", "features", "lyrics", "id", "language_cld3", "language_ft",
            "language"]
    tags, langs = ["pop", "rap", "rock", "rb", "country", "misc"], ["en", "en", "en", "en", "es", "fr"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        i = 0
        while f.tell() < megabytes << 20:
            buf = io.StringIO()
            w = csv.writer(buf)
            for _ in range(5000):
                i += 1
                lyrics = "[Verse 1]\n" + "\n".join(VERSES) + f"\nline number {i} of the ledger\n\n[Chorus: A & B]\n" \
                    + "\n".join(VERSES[::-1]) * 3
                w.writerow([f"Song {i}", tags[i % 6], f"Artist {i % 997}", 1990 + i % 35, i % 100000,
                            '{"Guest \\"One\\"","Two"}', lyrics, i, langs[i % 6], langs[i % 6], langs[i % 6]])
            f.write(buf.getvalue())
    return path


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path, songs, columns = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
# Imports before the clock starts: the ratio is about reading the file, not loading pandas.
if mode == "raw":
    import pyarrow as pa
    import pyarrow.csv as pacsv
else:
    from lyricslab.data.genius import Filters, read_songs
start = time.perf_counter()
if mode == "raw":  # the options lyricslab.data.genius.iter_blocks reads with, minus its filters
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                             strings_can_be_null=True))
    rows = sum(b.num_rows for b in reader)
else:
    frame, report = read_songs(path, Filters(language="en", min_chars=100, max_chars=20000), songs=songs)
    rows = report.rows
secs = time.perf_counter() - start
print(json.dumps({"seconds": secs, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, path: Path, songs: int) -> dict:
    # The columns come from lyricslab's reader (imported here, not in the child, so the plain
    # parse's RSS doesn't carry pandas).
    from lyricslab.data.genius import REQUIRED

    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(songs), json.dumps(REQUIRED)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    megabytes, small_mb, songs, rounds = (16, 4, 1000, 2) if quick() else (1024, 256, 10000, 3)
    small = build_csv(out_dir() / f"genius_{small_mb}mb.csv", small_mb)
    big = build_csv(out_dir() / f"genius_{megabytes}mb.csv", megabytes)
    size_mb = big.stat().st_size / 2**20
    runs: dict[str, list[dict]] = {"raw": [], "ingest": []}

    def side(mode: str):
        def once() -> float:
            runs[mode].append(measure(mode, big, songs))
            return runs[mode][-1]["seconds"]
        return once

    t_raw, t_ingest = interleaved(side("raw"), side("ingest"), rounds=rounds)
    ingest_small = measure("ingest", small, songs)
    raw_mbs, ingest_mbs = size_mb / t_raw, size_mb / t_ingest
    rss = {mode: max(r["peak_rss_mb"] for r in results) for mode, results in runs.items()}
    checks = [check("ingest MB/s ÷ pyarrow plain parse MB/s", ingest_mbs / raw_mbs, TARGET_RATIO),
              check(f"peak RSS, {size_mb:.0f} MB file", rss["ingest"], TARGET_PEAK_RSS)]
    figures = {"file MB": round(size_mb), "rows": runs["raw"][0]["rows"],
               "pyarrow plain parse MB/s (same columns, all strings)": raw_mbs,
               "lyricslab ingest MB/s (read+filter+sample)": ingest_mbs,
               f"peak RSS MB, lyricslab ingest, {size_mb:.0f} MB file": rss["ingest"],
               f"peak RSS MB, lyricslab ingest, {small_mb} MB file": ingest_small["peak_rss_mb"],
               f"peak RSS MB, pyarrow plain parse, {size_mb:.0f} MB file": rss["raw"]}
    budget = (f"a {size_mb:.0f} MB Genius-schema CSV of {runs['raw'][0]['rows']:,} generated rows, sampled to "
              f"{songs:,} songs; best time of {rounds} alternating runs per side, each in a fresh subprocess; peak "
              "RSS is the largest of those runs")
    return record("ingest", "Ingest", budget, checks, figures, overrides=[
        f"read_songs(Filters(language=en, min_chars=100, max_chars=20000), songs={songs}); no Hydra config"])


if __name__ == "__main__":
    run()
