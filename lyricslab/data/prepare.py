"""From a data config to train/val/test song lists: locate, read, normalise, split, cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lyricslab.data.errors import DataError
from lyricslab.data.files import packing_of
from lyricslab.data.genius import EXACT_DUPLICATES, NEAR_DUPLICATES, Filters, read_songs
from lyricslab.data.normalize import normalize_lyrics

SPLITS = ("train", "val", "test")
KAGGLE_DATASET = "carlosgdcj/genius-song-lyrics-with-language-information"
CACHE_VERSION = 3  # bump when the prepared format or the normalisation changes
SAME_ONCE_NORMALISED = "data.dedupe (identical once normalised)"


@dataclass
class Splits:
    train: list[str]
    val: list[str]
    test: list[str]
    frame: pd.DataFrame = field(repr=False)  # one row per kept song, with its split
    report: dict[str, Any] = field(default_factory=dict)
    cache_path: Path | None = None  # <cache_dir>/<key>: prefix for anything derived from these splits

    def summary(self) -> dict[str, Any]:
        """Songs and characters per split (tokens are added once a tokenizer exists)."""
        out: dict[str, Any] = {"source": self.report}
        for name in SPLITS:
            songs = getattr(self, name)
            out[name] = {"songs": len(songs), "chars": sum(len(s) for s in songs)}
        return out


def demo_path() -> Path:
    return Path(str(resources.files("lyricslab.data") / "demo_songs.csv"))


def listed(cfg: Any) -> bool:
    """Whether data.path lists several files ([a.csv, b.csv]) rather than naming one."""
    value = cfg.get("path") if cfg.source != "demo" else None
    return value is not None and not isinstance(value, (str, Path))


def resolve_paths(cfg: Any) -> list[Path]:
    """The CSVs this data config reads: data.path's one file, or every file of its list, each checked.

    A missing file (one, or any of a list) is a one-line DataError; only a single data.path downloads
    from Kaggle, and only when asked to (data.download=true).
    """
    if not listed(cfg):
        return [_resolve_one(cfg)]
    paths = [Path(str(item)).expanduser() for item in cfg.path]
    if not paths:
        raise DataError("data.path is an empty list; pass one CSV (data.path=/path/to/song_lyrics.csv) "
                        "or several (data.path=[a.csv,b.csv])")
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise DataError(f"data file not found: {path} (one of the {len(paths)} files in data.path); pass "
                            f"data.path=/path/to/song_lyrics.csv or a list of files that exist, data.path=[a.csv,b.csv]")
        packing_of(path)  # a directory or an unreadable file fails here, in one line
        if path.resolve() in seen:
            raise DataError(f"data.path lists {path} twice; list each file once")
        seen.add(path.resolve())
    return paths


def resolve_path(cfg: Any) -> Path | list[Path]:
    """The CSV this data config reads (downloads from Kaggle only when asked to); when data.path lists
    several files, all of them (see resolve_paths)."""
    paths = resolve_paths(cfg)
    return paths if listed(cfg) else paths[0]


def _resolve_one(cfg: Any) -> Path:
    if cfg.source == "demo":
        return demo_path()
    path = Path(str(cfg.path)).expanduser()
    if path.exists():
        packing_of(path)  # a directory or an unreadable file fails here, in one line
        return path
    if not cfg.get("download", False):
        raise DataError(f"data file not found: {path}; pass data.path=/path/to/song_lyrics.csv, set GENIUS_CSV, "
                        f"or add data.download=true to fetch it from Kaggle (needs network and Kaggle credentials)")
    return download_genius()


def download_genius() -> Path:
    """Fetch song_lyrics.csv with kagglehub (optional extra: pip install 'lyricslab[kaggle]')."""
    try:
        import kagglehub
    except ImportError as err:
        raise DataError("data.download=true needs kagglehub: pip install 'lyricslab[kaggle]', or download "
                        f"{KAGGLE_DATASET} by hand and pass data.path=.../song_lyrics.csv") from err
    try:
        folder = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as err:  # offline, no credentials, dataset moved: say what to do instead
        raise DataError(f"could not download {KAGGLE_DATASET} from Kaggle ({type(err).__name__}: {err}); "
                        "download song_lyrics.csv by hand and pass data.path=/path/to/song_lyrics.csv") from err
    found = sorted(folder.rglob("*.csv"))
    if not found:
        raise DataError(f"Kaggle download in {folder} holds no CSV; pass data.path=/path/to/song_lyrics.csv")
    return found[0]


def assign_splits(ids: pd.Series, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split by a stable hash of the song id: a song lands in the same split at every size."""
    u = pd.util.hash_array(ids.astype(str).to_numpy(dtype=object), hash_key="lyricslab-split!") / 2.0**64
    return np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))


def songs_in_two_splits(frame: pd.DataFrame) -> int:
    """How many distinct (normalised) lyrics occur in more than one split: leakage, 0 when deduped."""
    return int((frame.groupby("lyrics")["split"].nunique() > 1).sum())


def _file_key(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}


def cache_key(cfg: Any, songs: int | None, path: Path | Sequence[Path]) -> str:
    """The prepared splits' key: the data config, the sample size, and every file read (its absolute path,
    size and modification time). Everything derived from the splits (token streams, conditioned texts,
    the n-gram) is cached under this key too (Splits.cache_path), so it covers every file of a list."""
    from omegaconf import OmegaConf

    paths = [path] if isinstance(path, Path) else list(path)
    data = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    # One file keeps the key it always had (prepared caches stay valid); several list each file.
    files = _file_key(paths[0]) if len(paths) == 1 else {"files": [_file_key(p) for p in paths]}
    blob = json.dumps({"v": CACHE_VERSION, "data": data, "songs": songs, **files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_songs(cfg: Any, path: Path | Sequence[Path], songs: int | None) -> tuple[pd.DataFrame, Any]:
    """Read, filter, sample, normalise and dedupe: the songs a data config selects, before splitting
    (from one CSV, or from several read as one corpus).

    `python -m lyricslab.evaluate` reads any CSV through this too, so it scores songs exactly as
    training saw them.
    """
    frame, read_report = read_songs(path, Filters.from_config(cfg), songs,
                                    max_bad_share=float(cfg.get("max_bad_row_share", 0.01)))
    structure = cfg.get("structure", "tags")
    frame["lyrics"] = [normalize_lyrics(t, structure) for t in frame["lyrics"]]
    frame = frame[frame["lyrics"].str.len() > 0]
    if cfg.get("dedupe", True):
        # Reading dropped copies by their words (lyricslab.data.dedupe); this catches any
        # pair that normalisation made identical in a way that key missed. The frame is in
        # sample order, so the copy kept is the one every larger sample keeps too.
        copies = frame["lyrics"].duplicated(keep="first")
        if copies.any():
            read_report.removed[SAME_ONCE_NORMALISED] += int(copies.sum())
            frame = frame[~copies]
    return frame, read_report


def load_splits(cfg: Any, songs: int | None, cache_dir: str | Path | None = None) -> Splits:
    """Read the configured data once; later calls with the same config hit the on-disk cache."""
    paths = resolve_paths(cfg)
    cache_dir = Path(cache_dir or cfg.get("cache_dir") or ".cache/lyricslab")
    key = cache_key(cfg, songs, paths)
    parquet, meta = cache_dir / f"{key}.parquet", cache_dir / f"{key}.json"
    if parquet.exists() and meta.exists():
        frame = pd.read_parquet(parquet)
        report = json.loads(meta.read_text())
        report["cache"] = "hit"
    else:
        frame, read_report = prepare_songs(cfg, paths, songs)
        frame["split"] = assign_splits(frame["id"], float(cfg.val_fraction), float(cfg.test_fraction))
        frame = frame[["id", "title", "tag", "artist", "year", "features", "language", "lyrics", "split"]
                      ].reset_index(drop=True)
        read_report.kept = len(frame)
        removed = read_report.removed
        report = {"file": ", ".join(str(p) for p in paths), "rows": read_report.rows,
                  "malformed_rows": read_report.malformed,
                  "malformed_examples": read_report.malformed_examples,
                  "rows_with_non_utf8_bytes": read_report.undecodable, "kept": len(frame),
                  "duplicates_removed": {
                      "exact": removed[EXACT_DUPLICATES] + removed[SAME_ONCE_NORMALISED],
                      "near": removed[NEAR_DUPLICATES]},
                  "songs_in_two_splits": songs_in_two_splits(frame),
                  "removed_by": dict(removed), "summary": read_report.summary()}
        if report["songs_in_two_splits"]:  # only possible with data.dedupe=false
            report["summary"] += f", {report['songs_in_two_splits']:,} songs are in two splits (leak)"
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = parquet.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(parquet)  # atomic: parallel sweep workers never read half a file
        meta.write_text(json.dumps(report, indent=2))
        report["cache"] = "miss"
    by_split = {name: frame.loc[frame["split"] == name, "lyrics"].tolist() for name in SPLITS}
    empty = [name for name in SPLITS if not by_split[name]]
    if empty:
        raise DataError(f"the {', '.join(empty)} split is empty with {len(frame)} songs; use a larger data_size "
                        f"(data_size.songs=...) or raise data.val_fraction/data.test_fraction")
    return Splits(frame=frame, report=report, cache_path=cache_dir / key, **by_split)
