"""Lyric-quality metrics for generated (or human) songs.

rhyme_density    share of lines whose last word rhymes with the last word of the next or
                 the one after (same section); CMU dictionary via `pronouncing`, with a
                 spelling fallback for words it does not know
distinct_1/2     unique word uni/bigrams over all uni/bigrams (all samples together)
repetition       share of a sample's word 4-grams that repeat an earlier 4-gram in it (mean)
repeated_lines   share of a sample's lyric characters in lines it has more than once (its
                 chorus, hooks and refrains; about a third in human songs): a sample that never
                 repeats scores 0, one that loops a line scores near 1 (mean)
copy_rate        share of generated word 8-grams found anywhere in the training text
words_per_line, lines_per_section, structure_validity (share of samples made of
well-formed sections: a header line followed by at least one lyric line, every time)

`sample_metrics` compares samples with human text of the same count and length (ref_*).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

HEADER = re.compile(r"^\s*\[[^\]\n]+\]\s*$")
WORD = re.compile(r"[a-z0-9']+")
TRAILING_WORD = re.compile(r"[a-z0-9']+\Z", re.IGNORECASE)
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


def line_key(line: str) -> str:
    """A lyric line as repeats are counted: its words, case and punctuation ignored."""
    return " ".join(words(line))


def repeated_line_share(text: str) -> float:
    """The share of the text's lyric characters (headers and blank lines left out) in lines it has twice or more."""
    lines = [line for line in text.splitlines() if line.strip() and not HEADER.match(line) and line_key(line)]
    counts: dict[str, int] = {}
    for line in lines:
        counts[line_key(line)] = counts.get(line_key(line), 0) + 1
    total = sum(len(line) for line in lines)
    return sum(len(line) for line in lines if counts[line_key(line)] > 1) / total if total else 0.0


def repeated_lines(texts: Iterable[str]) -> float:
    shares = [repeated_line_share(t) for t in texts]
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
        # A header on the last line is where the text was cut (samples and human excerpts stop at a
        # length), not a section without lyrics.
        ok = bool(heads) and all(i + 1 == len(lines) or not HEADER.match(lines[i + 1]) for i in heads)
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
           "repetition": repetition(texts), "repeated_lines": repeated_lines(texts), "words_per_line": per_line, "lines_per_section": per_section,
           "structure_validity": structure_validity(texts)}
    if copy_index is not None:
        out["copy_rate"] = copy_index.copy_rate(texts)
    return out


def cut(text: str, chars: int) -> str:
    """The first `chars` characters, less a final word that may be cut short.

    A half word is a fake word (new in distinct-n, a rhyme word, an uncopied 8-gram). A sample
    ends after max_tokens tokens, maybe mid-word, so a final word is kept only when a non-word
    character is known to follow it; samples and references are cut by the same rule.
    """
    head = text[:chars]
    if head and WORD.match(head[-1].lower()) and (len(text) <= chars or WORD.match(text[chars].lower())):
        head = TRAILING_WORD.sub("", head)
    return head


def cut_to_shortest(texts: Sequence[str]) -> tuple[list[str], int]:
    """Every text cut (see `cut`) to the shortest one's length in characters; returns the length too.

    Characters, not tokens: a token is a character, a word or a subword piece depending on the
    tokenizer, so only characters put every run's samples and the human text on one scale.
    """
    chars = min((len(t) for t in texts), default=0)
    return [cut(t, chars) for t in texts], chars


REFERENCE_SEED = 0  # fixed: every run on the same data is compared with the same human songs


def reference_excerpts(songs: Sequence[str], count: int, chars: int, seed: int = REFERENCE_SEED) -> list[str]:
    """`count` human excerpts of `chars` characters (see `cut`; when the songs hold that many).

    Each starts at the start of a song chosen at random (fixed seed) and runs on into the
    following songs, joined by a newline: the same text a sample reads like when it runs past
    <eos> (decoded as a newline) into a next song. Songs repeat only when there are fewer songs
    than excerpts (then every song is used before any repeats).
    """
    if not songs or count <= 0:
        return []
    picks = np.resize(np.random.default_rng(seed).permutation(len(songs)), count)
    excerpts = []
    for first in picks:
        parts, length = [], 0
        for j in range(len(songs)):
            if length >= chars:
                break
            song = songs[(first + j) % len(songs)]
            parts.append(song)
            length += len(song) + 1
        excerpts.append(cut("\n".join(parts), chars))
    return excerpts


_COPY_INDEX: dict[int, CopyIndex] = {}


def copy_index(train_texts: Sequence[str]) -> CopyIndex:
    """The training text's 8-gram index, built once per training split (sweep trials share it)."""
    key = hash(tuple(train_texts))
    if key not in _COPY_INDEX:
        _COPY_INDEX.clear()  # one dataset at a time: keep memory flat over a long sweep
        _COPY_INDEX[key] = CopyIndex(train_texts)
    return _COPY_INDEX[key]


def sample_metrics(samples: Sequence[str], train_texts: Sequence[str], human_texts: Sequence[str],
                   seed: int = REFERENCE_SEED) -> dict[str, float]:
    """Lyric metrics of the samples and, as ref_*, of as many human excerpts of the same length.

    The samples are cut to the shortest one; the references are as many excerpts of
    `human_texts` (the validation songs) with that many characters. Most metrics depend on
    length (distinct-n falls, repetition and lines per section rise with it), so only equal
    lengths and counts compare like with like. `lyric_metric_chars` records the length used.
    """
    texts, chars = cut_to_shortest(samples)
    index = copy_index(train_texts)
    out = lyric_metrics(texts, index)
    refs = reference_excerpts(human_texts, len(texts), chars, seed)
    out.update({f"ref_{k}": v for k, v in lyric_metrics(refs, index).items()})
    out["lyric_metric_chars"] = float(chars)
    return out
