"""Sampling lyrics from a trained model: incremental decoding (default) and the naive re-feed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from keras import ops

from lyricslab.data.conditioning import strip_controls
from lyricslab.data.normalize import render_structure_tags
from lyricslab.models.compiled import compiled, host_call
from lyricslab.models.decoding import TransformerCache, make_cache, make_sampler
from lyricslab.sampling.rerank import best_song
from lyricslab.scoring.song_cache import SongCache
from lyricslab.text.tokenizers import EOS_ID, Tokenizer


def unescape_prompt(prompt: str) -> str:
    """Command lines can't easily carry a newline: read a typed backslash-n as one."""
    return prompt.replace("\\n", "\n")


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> np.ndarray:
    """<eos> first: training streams put it before every song, so the model starts a song after it."""
    return np.concatenate([[EOS_ID], tokenizer.encode(unescape_prompt(prompt))]).astype(np.int32)


def _texts(tokenizer: Tokenizer, rows: np.ndarray, start: int) -> list[str]:
    """Each row's song: the prompt and what follows, up to the first generated <eos>."""
    texts = []
    for row in rows:
        body = row[1:]
        ends = np.flatnonzero(body[start - 1:] == EOS_ID)
        if len(ends):
            body = body[: start - 1 + ends[0]]
        texts.append(render_structure_tags(strip_controls(tokenizer.decode(body))))
    return texts


def _stream_texts(tokenizer: Tokenizer, rows: np.ndarray) -> list[str]:
    """Each row whole, past any <eos> (decoded as a newline, as between songs in the token stream);
    control tokens (the prompt's conditions, or ones the model chose) are not shown."""
    return [render_structure_tags(strip_controls(tokenizer.decode(row[1:]))) for row in rows]


def song_cache_logits(song_cache: SongCache, prompt: np.ndarray, index: int, logits: np.ndarray) -> np.ndarray:
    """Log of the model's next-token distribution mixed with the song cache, for each row: the
    history is the row's current song (from its last <eos>, as in scoring) up to `index`."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = np.empty_like(probs)
    for row in range(len(probs)):
        history = prompt[row, :index]
        opens = np.flatnonzero(history == EOS_ID)
        song = history[opens[-1]:] if len(opens) else history
        out[row] = song_cache.next_token_probs(probs[row], song.tolist())
    return np.log(np.maximum(out, 1e-30)).astype(np.float32)


@dataclass
class LinePrefix:
    """Control tokens written after every line end, as a model trained with conditioning.repeat=line
    read them: given, not sampled (sampling could switch the song to another genre mid-way)."""

    ids: np.ndarray  # the prefix's tokens
    line_ends: np.ndarray  # (vocab,) bool: tokens after which the prefix comes

    @classmethod
    def of(cls, tokenizer: Tokenizer, prefix: str) -> "LinePrefix | None":
        if not prefix:
            return None
        line_ends = np.zeros(tokenizer.vocab_size, dtype=bool)
        line_ends[tokenizer.line_end_ids()] = True
        ids = tokenizer.encode(prefix).astype(np.int32)
        if line_ends[ids].any():
            raise ValueError(f"the line prefix {prefix!r} itself ends a line")
        return cls(ids, line_ends)

    def force(self, logits, prompt, index):
        """Logits that pick the prefix's next token where the row is inside a line's prefix; the rest
        unchanged. Row r is at prefix token j-1 when the token j back from `index` ended a line (prefix
        tokens never end one, so the nearest such j is the only one)."""
        line_ends = ops.convert_to_tensor(self.line_ends)
        forced = ops.full((ops.shape(prompt)[0],), -1, dtype="int32")
        for j in range(len(self.ids), 0, -1):  # the smallest j is written last and wins
            back = ops.take(prompt, ops.maximum(index - j, 0), axis=1)
            ended = ops.logical_and(index - j >= 0, ops.take(line_ends, back))
            forced = ops.where(ended, int(self.ids[j - 1]), forced)
        chosen = (ops.one_hot(ops.maximum(forced, 0), len(self.line_ends)) - 1.0) * 1e9  # 0 on the forced token
        return ops.where(ops.expand_dims(forced >= 0, 1), ops.cast(chosen, logits.dtype), logits)


def generate_ids(model: Any, start: np.ndarray, n: int, max_tokens: int, sampler: Any,
                 cache: Any = None, stop_at_eos: bool = True, row_temperatures: Sequence[float] | None = None,
                 song_cache: SongCache | None = None, line_prefix: LinePrefix | None = None,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    """n continuations of `start`, one token per step with a state/KV cache; stops at <eos>.

    Rows are `len(start) + max_tokens` long (padding after a row's <eos> when it stops early).
    A transformer slides its window when a song outgrows the context (see TransformerCache).
    `row_temperatures` (one per row, with a temperature-1 sampler) samples several temperatures
    in one batched call instead of one call each. With `song_cache` (the run's fitted weights),
    each step samples from the model (at its temperature) mixed with what the song already said,
    as it was scored, so a chorus can come back; it also feeds a loop once the model repeats itself.
    `line_prefix` writes a conditioned model's control tokens after every line end (see LinePrefix).
    `allowed` ((vocab,) bool, lyricslab.text.charset.allowed_tokens): the tokens that may be sampled.
    """
    cache = cache or make_cache(model)
    length = len(start)
    total = length + max_tokens
    if isinstance(cache, TransformerCache):
        if length >= cache.context:
            raise ValueError(f"the prompt is {length} tokens, the transformer's context is {cache.context}; "
                             f"shorten the prompt")
    ids = np.zeros((n, total), dtype=np.int32)
    ids[:, :length] = start
    mask = np.zeros((n, total), dtype=bool)
    mask[:, :length] = True

    scale = None if row_temperatures is None else np.asarray(row_temperatures, np.float32)[:, None]

    def step(prompt, state, index):
        logits, hidden, state = cache.next(prompt, state, index)
        if scale is not None:
            logits = logits / scale
        if song_cache is not None:
            # After the temperature: it shapes the network's guess, not the song's own evidence, which
            # a low temperature would otherwise sharpen into a loop. numpy on the host: a few list
            # scans per token, next to a model step.
            logits = host_call(lambda p, i, lg: song_cache_logits(song_cache, p, int(i), lg), logits,
                               prompt, index, logits)
        if allowed is not None:  # no character outside the training text's common set
            logits = ops.where(allowed[None, :], logits, -1e9)
        if line_prefix is not None:  # last: the prefix is given, whatever the model or the cache expect
            logits = line_prefix.force(logits, prompt, index)
        return logits, hidden, state

    def run(ids, mask):
        state = cache.prefill(ids, length)
        # model=: on JAX the sampler carries the model's weights through its loop statelessly.
        return sampler(step, ids, state, index=length, mask=mask, stop_token_ids=[EOS_ID] if stop_at_eos else None,
                       model=model)

    # One compiled graph for the prefill and the whole sampling loop; a new one per call (the
    # closure holds this call's options). The sampler's seed advances from call to call.
    run = compiled(run, model.variables, updated=sampler.variables)
    return ops.convert_to_numpy(run(ids, mask))


def generate(model: Any, tokenizer: Tokenizer, prompt: str, n: int = 1, max_tokens: int = 200,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             sampler: str = "random", seed: int = 0, cache: Any = None, stop_at_eos: bool = True,
             song_cache: SongCache | None = None, line_prefix: str = "", allowed: np.ndarray | None = None
             ) -> list[str]:
    """n songs for one prompt, rendered with readable [Verse]/[Chorus] headers.

    With stop_at_eos=False every row runs the full max_tokens, on past <eos> into a next song.
    `line_prefix`: control tokens to write after every line end (conditioning.repeat=line); the
    prompt should already carry them (lyricslab.data.conditioning.with_prefix).
    """
    start = prompt_ids(tokenizer, prompt)
    forced = LinePrefix.of(tokenizer, line_prefix)
    name = sampler if sampler in ("greedy", "beam") else "random"
    if song_cache is not None and name == "random":  # the temperature goes before the cache (see generate_ids)
        chosen = make_sampler(name, 1.0, top_k, top_p, seed)
        rows = generate_ids(model, start, n, max_tokens, chosen, cache=cache, stop_at_eos=stop_at_eos,
                            row_temperatures=[temperature] * n, song_cache=song_cache, line_prefix=forced,
                            allowed=allowed)
    else:
        chosen = make_sampler(name, temperature, top_k, top_p, seed)
        rows = generate_ids(model, start, n, max_tokens, chosen, cache=cache, stop_at_eos=stop_at_eos,
                            song_cache=song_cache, line_prefix=forced, allowed=allowed)
    return _texts(tokenizer, rows, len(start)) if stop_at_eos else _stream_texts(tokenizer, rows)


def _rows_at_temperatures(model: Any, start: np.ndarray, temperatures: Sequence[float], max_tokens: int,
                          seed: int, cache: Any, stop_at_eos: bool, song_cache: SongCache | None = None,
                          allowed: np.ndarray | None = None) -> np.ndarray:
    for t in temperatures:
        if t <= 0:
            raise ValueError(f"temperature must be > 0 (got {t}); for deterministic output use sampler=greedy")
    return generate_ids(model, start, len(temperatures), max_tokens, make_sampler("random", 1.0, seed=seed),
                        cache=cache, stop_at_eos=stop_at_eos, row_temperatures=temperatures, song_cache=song_cache,
                        allowed=allowed)


def generate_at_temperatures(model: Any, tokenizer: Tokenizer, prompt: str, temperatures: Sequence[float],
                             max_tokens: int, seed: int = 0, cache: Any = None) -> list[str]:
    """One song per temperature for the same prompt, in a single batched decoding call."""
    start = prompt_ids(tokenizer, prompt)
    rows = _rows_at_temperatures(model, start, temperatures, max_tokens, seed, cache, stop_at_eos=True)
    return _texts(tokenizer, rows, len(start))


def write_samples(model: Any, tokenizer: Tokenizer, cfg: Any, path: Path,
                  song_cache: SongCache | None = None, allowed: np.ndarray | None = None) -> list[str]:
    """One song per prompt and temperature (fixed prompts and seed), written to samples.txt; each the
    best of `samples.candidates` written at once (lyricslab.sampling.rerank), as `generate` picks.

    samples.txt shows each song up to its <eos>. The returned texts, for the lyric metrics, all
    run the full samples.max_tokens tokens, on past <eos> into the next song (as the human
    reference excerpts run on into the next song): a sample that ends early would otherwise
    be compared with longer human text.
    """
    cache = make_cache(model)
    blocks, streams = [], []
    temperatures = [float(t) for t in cfg.samples.temperatures]
    candidates = max(int(cfg.samples.get("candidates") or 1), 1)
    for i, prompt in enumerate(cfg.samples.prompts):
        start = prompt_ids(tokenizer, prompt)
        # The same tokens as stopping at <eos> (same seed, same steps), just not cut short.
        rows = _rows_at_temperatures(model, start, [t for t in temperatures for _ in range(candidates)],
                                     int(cfg.samples.max_tokens), int(cfg.trainer.seed) + i, cache, stop_at_eos=False,
                                     song_cache=song_cache, allowed=allowed)
        songs, full = _texts(tokenizer, rows, len(start)), _stream_texts(tokenizer, rows)
        for k, temperature in enumerate(temperatures):
            pick = k * candidates + best_song(songs[k * candidates:(k + 1) * candidates])
            streams.append(full[pick])
            blocks.append(f"=== prompt {unescape_prompt(prompt)!r}, temperature {temperature} ===\n{songs[pick]}\n")
    path.write_text("\n".join(blocks))
    return streams


def generate_naive(model: Any, tokenizer: Tokenizer, prompt: str, temperatures: Sequence[float], max_tokens: int,
                   seed: int = 0, context: int | None = None, stop_at_eos: bool = True) -> list[str]:
    """The keras.io approach, kept as the benchmark baseline: re-feed the whole window every step."""
    forward = compiled(lambda x: model(x, training=False)[:, -1, :], model.variables, shapes_vary=True)
    rng = np.random.default_rng(seed)
    temps = np.asarray(temperatures, dtype=np.float64)
    start = prompt_ids(tokenizer, prompt)
    tokens = np.tile(start, (len(temps), 1))
    done = np.zeros(len(temps), dtype=bool)
    for _ in range(max_tokens):
        window = tokens if context is None else tokens[:, -context:]
        logits = ops.convert_to_numpy(forward(window)).astype(np.float64) / temps[:, None]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        picks = np.minimum((probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1), probs.shape[1] - 1)
        nxt = np.where(done, EOS_ID, picks).astype(np.int32)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        done |= (nxt == EOS_ID) & stop_at_eos
        if done.all():
            break
    return _texts(tokenizer, tokens, len(start))
