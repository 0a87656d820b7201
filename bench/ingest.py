"""Ingest: read + filter + sample a >=1 GB Genius-schema CSV vs. pyarrow's plain parse of the same file.

The file is built from original fixture rows (each with a distinct id and a distinct line, so
dedupe keeps them). Each measurement runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from bench.common import Target, check, out_dir, quick, record

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
mode, path, songs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
if mode == "raw":
    import pyarrow.csv as pacsv
    reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                            read_options=pacsv.ReadOptions(block_size=16 << 20))
    rows = sum(b.num_rows for b in reader)
else:
    from lyricslab.data.genius import Filters, read_songs
    frame, report = read_songs(path, Filters(language="en", min_chars=100, max_chars=20000), songs=songs)
    rows = report.rows
secs = time.perf_counter() - start
print(json.dumps({"seconds": secs, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, path: Path, songs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(songs)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    megabytes, small_mb, songs = (16, 4, 1000) if quick() else (1024, 256, 10000)
    small = build_csv(out_dir() / f"genius_{small_mb}mb.csv", small_mb)
    big = build_csv(out_dir() / f"genius_{megabytes}mb.csv", megabytes)
    size_mb = big.stat().st_size / 2**20
    raw = measure("raw", big, songs)
    ingest = measure("ingest", big, songs)
    ingest_small = measure("ingest", small, songs)
    raw_mbs, ingest_mbs = size_mb / raw["seconds"], size_mb / ingest["seconds"]
    checks = [check("ingest MB/s ÷ pyarrow plain parse MB/s", ingest_mbs / raw_mbs, TARGET_RATIO),
              check(f"peak RSS, {size_mb:.0f} MB file", ingest["peak_rss_mb"], TARGET_PEAK_RSS)]
    figures = {"file MB": round(size_mb), "rows": raw["rows"], "pyarrow plain parse MB/s": raw_mbs,
               "lyricslab ingest MB/s (read+filter+sample)": ingest_mbs,
               f"peak RSS MB, lyricslab ingest, {size_mb:.0f} MB file": ingest["peak_rss_mb"],
               f"peak RSS MB, lyricslab ingest, {small_mb} MB file": ingest_small["peak_rss_mb"],
               f"peak RSS MB, pyarrow plain parse, {size_mb:.0f} MB file": raw["peak_rss_mb"]}
    budget = (f"a {size_mb:.0f} MB Genius-schema CSV of {raw['rows']:,} generated rows, sampled to {songs:,} songs; "
              "one run per side, each in a fresh subprocess")
    return record("ingest", "Ingest", budget, checks, figures)

if __name__ == "__main__":
    run()
