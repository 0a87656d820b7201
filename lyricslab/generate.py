"""Generate lyrics from a trained run, a registered model, or a sweep's best trial.

    python -m lyricslab.generate run_id=<id> [prompt="I remember"] [structure=chorus] [n=3]
    python -m lyricslab.generate model_uri=models:/lyricslab-demo@best temperature=0.7 top_p=0.9
    python -m lyricslab.generate sweep=demo max_tokens=400 seed=1 --out songs.txt

Conditioned models (conditioning.fields) also take genre=, year= or decade=, artist= and lang=;
an unknown value is an error that lists the ones the model knows (the run's conditioning.json).

"""

from __future__ import annotations

import sys
from pathlib import Path

from lyricslab.config.cli import exit_with, parse_model_command
from lyricslab.config.errors import ConfigError, UsageError
from lyricslab.tracking.runs import start_model_command
from lyricslab.tracking.server import TrackingServerError

CONDITIONS = ("genre", "year", "decade", "artist", "lang")  # see lyricslab.data.conditioning
TEXT_KEYS = ("run_id", "model_uri", "sweep", "prompt", "structure", "out", "artist")


def parse_args(argv: list[str] | None) -> dict:
    """The options as a dict (tracking.uri as tracking_uri); a value no generation can use is a UsageError."""
    opts = parse_model_command("generate", argv, __doc__, TEXT_KEYS)
    if opts["sampler"] not in ("random", "greedy", "beam"):
        raise UsageError(f"sampler must be random, greedy or beam, not {opts['sampler']!r}")
    if opts["sampler"] == "random" and opts["temperature"] <= 0:
        raise UsageError(f"temperature must be > 0 (got {opts['temperature']}); for deterministic output use "
                         f"sampler=greedy")
    if opts["n"] < 1 or opts["max_tokens"] < 1 or opts["candidates"] < 1:
        raise UsageError("n, max_tokens and candidates must be at least 1 (candidates=1: plain sampling)")
    if opts["top_k"] is not None and opts["top_k"] < 1:
        raise UsageError(f"top_k must be at least 1 (got {opts['top_k']})")
    if opts["top_p"] is not None and not 0 < opts["top_p"] <= 1:
        raise UsageError(f"top_p must be in (0, 1] (got {opts['top_p']})")
    return opts


def start_text(structure: str, prompt: str) -> str:
    """'[chorus]\\n' + the prompt: the model was trained on structure-tagged songs."""
    tag = structure.strip().strip("[]").lower()
    head = f"[{tag}]\n" if tag else ""
    return head + prompt


def main(argv: list[str] | None = None) -> int:
    try:
        opts = start_model_command(lambda: parse_args(argv))
    except (UsageError, ConfigError, TrackingServerError) as err:
        return exit_with(err)
    return write_songs(opts)


def write_songs(opts: dict) -> int:
    """The songs `opts` asks for, printed or written to opts["out"]; a bad source or condition is an error line."""
    # Keras loads with the bundle module: only once the command line is good and the store answers.
    from lyricslab.tracking.bundle import BundleError, load_named

    try:
        bundle = load_named(opts)
    except BundleError as err:
        return exit_with(err)
    from tqdm.auto import tqdm

    from lyricslab.data.conditioning import (
        ConditionError,
        bundle_conditions,
        repeat_of,
        with_prefix,
    )

    request = {key: str(opts[key]) for key in CONDITIONS if opts.get(key) is not None}
    try:  # control tokens for genre=/year=/artist=...; an unknown value lists the known ones
        controls = bundle_conditions(bundle.cfg, bundle.tokenizer).request_prefix(request)
    except ConditionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from lyricslab.models.decoding import (
        make_cache,  # Keras: imported once there is a model, so a wrong id fails fast
    )
    from lyricslab.sampling.generation import generate, unescape_prompt
    from lyricslab.sampling.rerank import best_song

    masked = bundle.cfg.model.family == "bert"
    if masked:  # a masked LM writes by filling [MASK]s left to right: a full pass per token, much slower
        from lyricslab.training.masked_lm import generate
    cache = None if masked else make_cache(bundle.model)
    # repeat=line: the controls also follow each line break of the prompt, and of the song as it is written.
    repeat = repeat_of(bundle.cfg)
    prompt = with_prefix(controls, unescape_prompt(start_text(opts["structure"], opts["prompt"])), repeat)
    line_prefix = controls if repeat == "line" and not masked else ""
    label = "".join(f", {key}={value}" for key, value in request.items())
    allowed = bundle.allowed_tokens() if opts.get("charset", True) else None
    # Several candidates only differ when sampled (greedy and beam give one answer), and a masked LM
    # writes one token per full pass: too slow to write several.
    candidates = opts["candidates"] if opts["sampler"] == "random" and not masked else 1
    songs = []
    # One bar per song: a long song on a big model takes a while on CPU.
    for i in tqdm(range(opts["n"]), desc="generating", unit="song", disable=opts["n"] < 2, file=sys.stderr):
        written = generate(bundle.model, bundle.tokenizer, prompt, n=candidates, max_tokens=opts["max_tokens"],
                          temperature=opts["temperature"], top_k=opts["top_k"], top_p=opts["top_p"],
                          sampler=opts["sampler"], seed=opts["seed"] + i, cache=cache,
                          **({"line_prefix": line_prefix} if line_prefix else {}),
                          **({"song_cache": bundle.song_cache} if opts["song_cache"] and not masked else {}),
                          **({"allowed": allowed} if allowed is not None and not masked else {}))
        songs.append(written[best_song(written)])  # the best-rhyming candidate, never a loop (sampling.rerank)
    if opts["song_cache"] and bundle.song_cache is None and not masked:
        print("note: this run has no song cache (trained before it, or with song_cache.max_context=null); "
              "sampled from the model alone", file=sys.stderr)
    text = "\n\n".join(f"=== song {i + 1} ({bundle.source}{label}) ===\n{song}" for i, song in enumerate(songs)) + "\n"
    if opts["out"]:
        Path(opts["out"]).write_text(text)
        print(f"wrote {len(songs)} song(s) to {opts['out']}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
