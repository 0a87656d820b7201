"""Lyric-quality metrics for generated (or human) songs.

rhyme_density    share of lines whose last word rhymes with the last word of the next or
                 the one after (same section); CMU dictionary via `pronouncing`, with a
                 spelling fallback for words it does not know
distinct_1/2     unique word uni/bigrams over all uni/bigrams (all samples together)
repetition       share of a sample's word 4-grams that repeat an earlier 4-gram in it (mean)
copy_rate        share of generated word 8-grams found anywhere in the training text
words_per_line, lines_per_section, structure_validity (share of samples made of
well-formed sections: a header line followed by at least one lyric line, every time)
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

HEADER = re.compile(r"^\s*\[[^\]\n]+\]\s*$")
WORD = re.compile(r"[a-z0-9']+")
VOWELS = re.compile(r"[aeiouy]+[^aeiouy]*$")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def sections(text: str) -> list[list[str]]:
    """Lyric lines grouped by section (a header or a blank line starts a new one)."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if HEADER.match(line) or not line.strip():
            if out[-1]:
                out.append([])
            continue
        out[-1].append(line)
    return [s for s in out if s]


@lru_cache(maxsize=200_000)
def rhyme_keys(word: str) -> frozenset[str]:
    """Rhyming parts of a word's pronunciations; unknown words fall back to their last vowel group."""
    import pronouncing

    phones = pronouncing.phones_for_word(word)
    if phones:
        return frozenset(pronouncing.rhyming_part(p) for p in phones)
    tail = VOWELS.search(word)
    return frozenset({"~" + (tail.group(0) if tail else word)})


def rhymes(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a != b and bool(rhyme_keys(a) & rhyme_keys(b))


def rhyme_density(texts: Iterable[str]) -> float:
    hits = candidates = 0
    for text in texts:
        for section in sections(text):
            ends = [(words(line) or [""])[-1] for line in section]
            for i in range(len(ends) - 1):
                candidates += 1
                hits += rhymes(ends[i], ends[i + 1]) or (i + 2 < len(ends) and rhymes(ends[i], ends[i + 2]))
    return hits / candidates if candidates else 0.0


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct(texts: Iterable[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(texts: Iterable[str], n: int = 4) -> float:
    shares = []
    for t in texts:
        grams = ngrams(words(t), n)
        if grams:
            shares.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(shares)) if shares else 0.0


def _gram_hashes(tokens: Sequence[str], n: int) -> np.ndarray:
    import pandas as pd

    grams = [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return pd.util.hash_array(np.asarray(grams, dtype=object)) if grams else np.empty(0, dtype=np.uint64)


class CopyIndex:
    """Every word 8-gram of the training text, as sorted 64-bit hashes (8 bytes each)."""

    def __init__(self, train_texts: Iterable[str], n: int = 8):
        self.n = n
        parts = [_gram_hashes(words(t), n) for t in train_texts]
        self.hashes = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)

    def copy_rate(self, texts: Iterable[str]) -> float:
        found = total = 0
        for t in texts:
            h = _gram_hashes(words(t), self.n)
            if len(h) and len(self.hashes):
                pos = np.searchsorted(self.hashes, h).clip(max=len(self.hashes) - 1)
                found += int((self.hashes[pos] == h).sum())
            total += len(h)
        return found / total if total else 0.0


def structure_validity(texts: Iterable[str]) -> float:
    texts = list(texts)
    valid = 0
    for t in texts:
        lines = [line for line in t.splitlines() if line.strip()]
        heads = [i for i, line in enumerate(lines) if HEADER.match(line)]
        ok = bool(heads) and all(i + 1 < len(lines) and not HEADER.match(lines[i + 1]) for i in heads)
        valid += ok
    return valid / len(texts) if texts else 0.0


def line_stats(texts: Iterable[str]) -> tuple[float, float]:
    line_words, section_lines = [], []
    for t in texts:
        for section in sections(t):
            section_lines.append(len(section))
            line_words += [len(words(line)) for line in section]
    return (float(np.mean(line_words)) if line_words else 0.0, float(np.mean(section_lines)) if section_lines else 0.0)


def lyric_metrics(texts: Sequence[str], copy_index: CopyIndex | None = None) -> dict[str, float]:
    per_line, per_section = line_stats(texts)
    out = {"rhyme_density": rhyme_density(texts), "distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2),
           "repetition": repetition(texts), "words_per_line": per_line, "lines_per_section": per_section,
           "structure_validity": structure_validity(texts)}
    if copy_index is not None:
        out["copy_rate"] = copy_index.copy_rate(texts)
    return out


_REFERENCE: dict[int, dict[str, float]] = {}


def reference_metrics(train_texts: Sequence[str], human_texts: Sequence[str]) -> dict[str, float]:
    """The same metrics on human songs (the validation split), as ref_*; computed once per dataset."""
    key = hash((len(train_texts), tuple(human_texts)))
    if key not in _REFERENCE:
        values = lyric_metrics(list(human_texts), CopyIndex(train_texts))
        _REFERENCE[key] = {f"ref_{k}": v for k, v in values.items()}
    return _REFERENCE[key]
