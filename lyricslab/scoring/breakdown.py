"""Bits/char per tag and per language (`breakdown: [tag, language]`), so a user sees where a model is weak.

Each value's songs are scored as one stream of their own, with full context inside it, by the same
scorer as the whole split (control tokens unscored, characters counted the same way). A column with a
single value in the split adds nothing beyond the overall figure and is skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

COLUMNS = ("tag", "language")
MAX_VALUES = 20  # per column, the most common first: a null data.language keeps dozens of rare languages


def columns_of(cfg: Any) -> list[str]:
    """The configured breakdown columns; ValueError for an unknown one."""
    columns = [str(c) for c in (cfg.get("breakdown") or [])]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"breakdown: unknown column(s) {unknown}; choose from {list(COLUMNS)} or [] for none")
    return columns


def metric_key(prefix: str, column: str, value: Any) -> str:
    """`test_bpc_tag_rap`: MLflow allows letters, digits and _ - . / in names; anything else becomes _."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_") or "none"
    return f"{prefix}bpc_{column}_{safe}"


def bpc_by_group(score: Callable[[Sequence[str]], Any], texts: Sequence[str], lyrics: Sequence[str],
                 rows: Sequence[Mapping[str, Any]], columns: Sequence[str], prefix: str) -> dict[str, float]:
    """`{prefix}bpc_<column>_<value>` and `{prefix}songs_<column>_<value>` for each value with songs.

    `score(texts)` returns lyricslab.scoring.scorers.Scores for those songs (the model's texts, control
    prefixes included); `lyrics` are the same songs without prefixes, for the character count.
    """
    out: dict[str, float] = {}
    for column in columns:
        values = [str(row.get(column)) for row in rows]
        counts = Counter(values)
        if len(counts) < 2:
            continue
        for value, n in counts.most_common(MAX_VALUES):
            picked = [i for i, v in enumerate(values) if v == value]
            chars = sum(len(lyrics[i]) + 1 for i in picked)  # +1: the end-of-song mark, as for the split
            key = metric_key(prefix, column, value)
            out[key] = score([texts[i] for i in picked]).metrics(chars, "")["bpc"]
            out[key.replace(f"{prefix}bpc_", f"{prefix}songs_", 1)] = float(n)
    return out


def scorer_for(scorer: Any, tokenizer: Any) -> Callable[[Sequence[str]], Any]:
    """`score(texts)` from a full-context scorer and the tokenizer that encodes for it."""
    return lambda texts: scorer(tokenizer.encode_songs(list(texts)))
