"""The scoring tail: what a trained causal model reports on held-out songs, shared by training (the test
split, `test_*`) and lyricslab.evaluate (any CSV, no prefix).

One pass of the full-context scorer gives bits/char, NLL, perplexity, accuracy and macro P/R/F1; its
per-token NLL, mixed with the song cache, gives `bpc_song_cache`; the breakdown scores each tag's and
language's songs on their own (`bpc_tag_rap`, ...); and the Kneser-Ney n-gram on the same songs is the
baseline the model is compared with (`bpc_vs_baseline`, below 1: the model beats it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lyricslab.scoring.breakdown import bpc_by_group, scorer_for
from lyricslab.scoring.mixture import Mixture, char_lengths, unit_probs, units_of
from lyricslab.scoring.ngram import KneserNey, baseline_bpc
from lyricslab.scoring.song_cache import SongCache, cache_features, fit_and_score
from lyricslab.text.tokenizers import EOS_ID, Tokenizer
from lyricslab.text.windows import with_start


def char_count(lyrics: Sequence[str]) -> int:
    """Characters of the songs plus one end-of-song mark each: what bits/char divides by. Lyrics only:
    control tokens are not characters."""
    return sum(len(s) + 1 for s in lyrics)


def song_cache_max_context(cfg: Any) -> int | None:
    """`song_cache.max_context`, or None when the song cache is off."""
    value = (cfg.get("song_cache") or {}).get("max_context")
    return int(value) if value else None


def fit_song_cache(cfg: Any, stream: np.ndarray, token_nll: np.ndarray | None, chars: int
                   ) -> tuple[SongCache | None, dict[str, float]]:
    """The song cache's weights fitted on the val split's per-token NLL (the restored round's), and
    `val_bpc_song_cache` (fitted on itself, so a little optimistic); (None, {}) when the cache is off."""
    max_context = song_cache_max_context(cfg)
    if max_context is None or token_nll is None:
        return None, {}
    cache, bits = fit_and_score({"val": (with_start(stream), np.exp(-token_nll))}, EOS_ID, max_context)
    return cache, {"val_bpc_song_cache": bits["val"] / max(chars, 1)}


def ngram_baseline(cfg: Any, texts: dict[str, list[str]], cache_path: Path | None) -> dict[str, float]:
    """The Kneser-Ney character n-gram's val/test bits/char on these splits (`baseline.order`; null: off).

    Fitted on the train split once per data config (cached beside the prepared splits), so every
    run and sweep trial on the same data carries the same reference numbers.
    """
    order = (cfg.get("baseline") or {}).get("order")
    if not order:
        return {}
    cache = Path(f"{cache_path}-ngram{int(order)}.json") if cache_path is not None else None
    bpc = baseline_bpc(texts["train"], {"val": texts["val"], "test": texts["test"]}, int(order), cache,
                       song_cache=song_cache_max_context(cfg))
    # baseline_ngram_test_bpc, and with the song cache baseline_ngram_test_song_cache_bpc
    return {f"baseline_ngram_{name}_bpc": value for name, value in bpc.items()}


def fit_mixture(cfg: Any, tokenizer: Tokenizer, lyrics: dict[str, Sequence[str]], streams: dict[str, np.ndarray],
                token_nll: dict[str, np.ndarray | None]) -> tuple[Mixture | None, dict[str, float]]:
    """The network mixed with the n-gram and the song cache (lyricslab.scoring.mixture), weights fitted on
    val: `{split}_bpc_mixture` for val (fitted on itself) and test. (None, {}) when `baseline.mix` is off,
    the n-gram is off, the tokenizer's tokens split characters (subword), or a split has no NLL.

    `lyrics` holds the train, val and test songs without control prefixes (the n-gram's text);
    `streams` and `token_nll` the model's val and test tokens and their NLL."""
    base = cfg.get("baseline") or {}
    lengths = char_lengths(tokenizer)
    if not (base.get("mix") and base.get("order")) or lengths is None or any(
            token_nll.get(name) is None for name in ("val", "test")):
        return None, {}
    ngram = KneserNey(int(base["order"])).fit(lyrics["train"])
    max_context = song_cache_max_context(cfg) or 0  # 0: no cache features, the cache weight stays 0
    probs = {}
    for name in ("val", "test"):
        nll = token_nll[name]
        units = units_of(streams[name], nll, lengths, char_count(lyrics[name]))
        if units is None:  # the model's scored text is not the n-gram's (a spelled-out control token)
            return None, {}
        probs[name] = unit_probs(units, nll, ngram.log2_probs(lyrics[name]),
                                 cache_features(with_start(streams[name]), EOS_ID, max_context))
    mixture = Mixture().fit(*probs["val"])
    return mixture, {f"{name}_bpc_mixture": mixture.bits(*probs[name]) / max(char_count(lyrics[name]), 1)
                     for name in ("val", "test")}


def score_songs(scorer: Any, tokenizer: Any, stream: np.ndarray, texts: Sequence[str], lyrics: Sequence[str], *,
                rows: Sequence[Mapping[str, Any]] | None = None, columns: Sequence[str] = (), prefix: str = "",
                song_cache: SongCache | None = None, baseline: float | None = None
                ) -> tuple[dict[str, float], np.ndarray | None]:
    """Full-context metrics of held-out songs, named `{prefix}bpc`, ...; and the per-token NLL.

    `stream` is `texts` (the model's songs, control prefixes included) encoded by `tokenizer`; `lyrics`
    are the same songs without prefixes, for the character count. With a fitted `song_cache`,
    `{prefix}bpc_song_cache`; with `rows` (one per song: tag, language, ...), the breakdown over
    `columns`; with the n-gram's bits/char on the same songs, `baseline_ngram_{prefix}bpc` and the
    model's ratios to it.
    """
    chars = char_count(lyrics)
    scores = scorer(stream, keep_predictions=True)
    metrics = scores.metrics(chars, prefix)
    if song_cache is not None and scores.token_nll is not None:  # the fitted weights, unchanged
        features = cache_features(with_start(stream), EOS_ID, song_cache.max_context)
        metrics[f"{prefix}bpc_song_cache"] = song_cache.bits(np.exp(-scores.token_nll), features) / max(chars, 1)
    if rows is not None:
        metrics.update(bpc_by_group(scorer_for(scorer, tokenizer), texts, lyrics, rows, columns, prefix))
    if baseline is not None:  # below 1: the model beats the n-gram on the same songs
        metrics[f"baseline_ngram_{prefix}bpc"] = baseline
        for key in (f"{prefix}bpc", f"{prefix}bpc_song_cache"):  # with the cache: against the plain n-gram
            if key in metrics:
                metrics[f"{key}_vs_baseline"] = metrics[key] / baseline
    return metrics, scores.token_nll
