"""The characters a model may write: those that make up all but the rarest 0.1% of its training text.

A few hundred training songs carry stray scripts and symbols (a Korean word, an emoji); the
tokenizer spells them with byte tokens, so a sample at temperature 0.8 can open with "I 위ant".
Sampling leaves out every token whose text has a character outside the common set
(`allowed_tokens`); <eos>, section headers and control tokens always stay. The set is computed
once from the train split and saved beside the run's model (ARTIFACT), so `generate` filters the
same way.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from lyricslab.data.normalize import STRUCTURE_TAGS
from lyricslab.text.tokenizers import EOS_ID, Tokenizer

ARTIFACT = "charset.json"


def common_characters(texts: Iterable[str], coverage: float = 0.999) -> str:
    """The fewest most frequent characters that together make up `coverage` of the text (ties by code point)."""
    if not 0 < coverage <= 1:
        raise ValueError(f"samples.charset_coverage must be in (0, 1] or null, not {coverage}")
    counts = Counter()
    for text in texts:
        counts.update(text)
    total = sum(counts.values())
    kept, covered = [], 0
    for char, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if covered >= coverage * total:
            break
        kept.append(char)
        covered += count
    return "".join(sorted(kept))


def allowed_tokens(tokenizer: Tokenizer, chars: str) -> np.ndarray:
    """(vocab,) bool: tokens whose text is made of `chars` only, plus <eos>, section headers and controls.
    A byte token of a character outside ASCII decodes alone to U+FFFD, which is never in the set."""
    chars_set = set(chars) | {"\n"}
    tags = set(STRUCTURE_TAGS)
    allowed = np.array([set(text) <= chars_set or text.strip() in tags
                        for text in (tokenizer.decode([i]) for i in range(tokenizer.vocab_size))])
    allowed[[EOS_ID, *tokenizer.control_ids()]] = True
    return allowed


def save_charset(path: Path, chars: str, coverage: float) -> None:
    path.write_text(json.dumps({"coverage": coverage, "chars": chars}, ensure_ascii=False, indent=1))


def load_charset(path: Path) -> str | None:
    return json.loads(path.read_text(encoding="utf-8"))["chars"] if path.exists() else None
