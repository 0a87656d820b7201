"""Duplicate songs in a multi-GB file: one key per song, and a compact set of keys seen so far.

A song is kept the first time its *words* appear: copies that differ only in scrape debris
(`12Embed`, `You might also like`), section headers, case, punctuation or spacing are
dropped, so two copies of one song can never land in different splits. Each block also gets
a hash of its raw lyrics, only to tell exact copies from near ones in the data summary.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Bytes a key drops after lower(): every ASCII byte but a-z and 0-9.
_ASCII_NOISE = bytes(b for b in range(128) if not (48 <= b <= 57 or 97 <= b <= 122))
# Non-ASCII punctuation and spaces Genius uses (’ — and U+2005/U+205F spaces; ¿ « NBSP):
# U+2000-U+206F and U+0080-U+00BF, matched on their UTF-8 bytes.
_WIDE_NOISE = re.compile(rb"\xe2[\x80\x81][\x80-\xbf]|\xc2[\x80-\xbf]")


def stable_hash(values: pa.Array | pa.ChunkedArray | list[bytes]) -> np.ndarray:
    """A 64-bit hash that is the same on every run and machine (pandas uses a fixed SipHash key).

    Strings are hashed as their UTF-8 bytes (cast to binary: no Python str objects to build).
    """
    if not isinstance(values, list):
        values = pc.cast(values, pa.binary()).to_pylist()
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


def dedupe_keys(lyrics: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """Each song's words only: what two copies of one song share.

    Drops scrape debris (`You might also like`, a trailing `12Embed`), every bracketed
    header or note (`[Chorus: A & B]`), case, punctuation and spacing, so copies that differ
    only there get one key. The patterns are broader than normalize_lyrics' (no line anchors,
    every trailing Embed) so that a song and its normalised text always get the same key.
    Debris goes in vectorised RE2 passes; the rest is bytes.lower/translate per song, which
    runs at ~500 MB/s, where a regex replacing every space and comma manages ~20.
    """
    text = pc.fill_null(lyrics, "")
    text = pc.replace_substring_regex(text, "You might also like[^\n]*", "")
    text = pc.replace_substring_regex(text, r"\[[^\]\n]*\]", "")
    text = pc.replace_substring_regex(text, r"(?:\d*Embed[\s\pZ]*)+\z", "")
    keys = []
    for raw in pc.cast(text, pa.binary()).to_pylist():
        key = raw.lower().translate(None, _ASCII_NOISE)
        if b"\xe2" in key or b"\xc2" in key:
            key = _WIDE_NOISE.sub(b"", key)
        keys.append(key)
    return keys


class SeenHashes:
    """Hashes seen so far, for duplicate removal across a multi-GB file.

    8 bytes a song in sorted numpy chunks (a Python set costs ~70), merged now and then so a
    lookup is a few binary searches. 5M songs take ~40 MB.
    """

    def __init__(self, merge_every: int = 16):
        self.chunks: list[np.ndarray] = []
        self.merge_every = merge_every

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Mark which keys are new (first occurrence, also within `keys`) and remember them."""
        _, first = np.unique(keys, return_index=True)
        fresh = np.zeros(len(keys), dtype=bool)
        fresh[first] = True
        for chunk in self.chunks:
            pos = np.searchsorted(chunk, keys).clip(max=len(chunk) - 1)
            fresh &= chunk[pos] != keys
        self.chunks.append(np.sort(keys[fresh]))
        if len(self.chunks) > self.merge_every:
            self.chunks = [np.sort(np.concatenate(self.chunks))]
        return fresh


class Deduper:
    """Keeps the first copy of each song, counting exact copies and near ones apart.

    Two hash sets (16 bytes a song, ~80 MB for all 5M rows of the Kaggle file): one of the
    words-only key, which decides what is dropped, and one of the raw lyrics, which only
    tells an exact copy (identical text) from a near one in the counts.
    """

    def __init__(self) -> None:
        self.words, self.raw = SeenHashes(), SeenHashes()

    def first_copies(self, lyrics: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int, int]:
        """(mask of rows to keep, exact copies dropped, near copies dropped) for one block."""
        keep = self.words.add_new(stable_hash(dedupe_keys(lyrics)))
        new_text = self.raw.add_new(stable_hash(lyrics))
        exact = int((~keep & ~new_text).sum())
        return keep, exact, int((~keep).sum()) - exact


def seen_before(frame: pd.DataFrame, seen: pd.DataFrame) -> np.ndarray:
    """Which songs of `frame` are in `seen` (both with `id` and `lyrics` columns): the same id, or the
    same words (dedupe_keys: what dedupe calls one song, so near copies count too).

    lyricslab.evaluate uses it to keep a run's training songs out of what it scores.
    """
    if frame.empty or seen.empty:
        return np.zeros(len(frame), dtype=bool)

    def ids(songs: pd.DataFrame) -> pd.Series:
        return songs["id"].astype(str).str.strip()

    def words(songs: pd.DataFrame) -> np.ndarray:
        return stable_hash(dedupe_keys(pa.array(songs["lyrics"].astype(str).tolist(), pa.string())))

    same_id = ids(frame).isin(set(ids(seen))).to_numpy()
    return same_id | np.isin(words(frame), words(seen))
