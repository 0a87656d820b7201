"""`train(cfg) -> metrics`: one training run, recorded as one MLflow run.

Plain function, no Hydra main here (see run.py), so sweeps and tests call it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the console


import keras
import mlflow
import numpy as np
from omegaconf import OmegaConf

from lyricslab.data.conditioning import ARTIFACT as CONDITIONING_ARTIFACT
from lyricslab.data.conditioning import Conditioned, condition_splits, control_fields
from lyricslab.data.prepare import SPLITS, Splits
from lyricslab.models import build_model
from lyricslab.models.rnn import build_rnn, copy_weights
from lyricslab.sampling.generation import write_samples
from lyricslab.scoring.breakdown import columns_of
from lyricslab.scoring.held_out import (
    char_count,
    fit_mixture,
    fit_song_cache,
    ngram_baseline,
    score_songs,
)
from lyricslab.scoring.lyric_metrics import sample_metrics
from lyricslab.scoring.mixture import ARTIFACT as MIXTURE_ARTIFACT
from lyricslab.scoring.scorers import full_context_scorer, score_windows
from lyricslab.scoring.song_cache import ARTIFACT as SONG_CACHE_ARTIFACT
from lyricslab.text import tokenizers
from lyricslab.text.charset import ARTIFACT as CHARSET_ARTIFACT
from lyricslab.text.charset import allowed_tokens, common_characters, save_charset
from lyricslab.text.factory import load_tokenizer, train_tokenizer
from lyricslab.text.tokenizers import Tokenizer
from lyricslab.text.windows import Windows, carried_batches, make_windows
from lyricslab.tracking.plots import learning_curves
from lyricslab.training.batches import to_dataset
from lyricslab.training.budget import Budget
from lyricslab.training.callbacks import (
    DerivedMetrics,
    FullContextValidation,
    ResetStatesEachPass,
)
from lyricslab.training.fitting import (  # noqa: F401  NonFiniteLoss, steps_per_round: re-exported
    NonFiniteLoss,
    prepare_run,
    steps_per_round,
)
from lyricslab.training.flops import (
    matmul_peak,
    mfu,
    training_flops_per_token,
)
from lyricslab.training.loop import (
    Rounds,
    begin_rounds,
    probe_steps_per_second,
    repeats,
    round_callbacks,
    run_artifacts,
    training_run,
)
from lyricslab.training.masked_lm import train_masked_lm

# The round's full-context val metrics whose restored (best) round the run reports as best_*.
BEST_OF = ("val_bpc", "val_nll", "val_perplexity", "val_accuracy", "val_top5_accuracy")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """The loss alone: no compiled metrics.

    Validation and test are scored outside Keras (lyricslab.scoring.scorers, exact and full-context), so
    compiled metrics would only run on training batches, where a masked NLL duplicates the loss
    (training windows have no padding) and accuracy / top-5 over the vocabulary cost up to half a
    transformer step at vocab 8000 (bench/mfu.py). DerivedMetrics logs the loss as `nll`.
    """
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def build_training_model(cfg: Any, vocab_size: int, controls: Sequence[tuple[int, str]] = ()) -> keras.Model:
    """The model that `fit` trains: with `trainer.carry_state` a stateful RNN of fixed batch size,
    otherwise the plain model. `plain_model` turns the first kind into the second after training.
    `controls`: (id, field) of the tokenizer's control tokens (`control_fields`)."""
    if cfg.trainer.get("carry_state"):
        return build_rnn(cfg, vocab_size, stateful_batch=int(cfg.trainer.batch_size), controls=controls)
    return build_model(cfg, vocab_size, controls)


def plain_model(cfg: Any, model: keras.Model, vocab_size: int, controls: Sequence[tuple[int, str]] = ()
                ) -> keras.Model:
    """The trained weights in a model of any batch size, for scoring, sampling and saving."""
    if not cfg.trainer.get("carry_state"):
        return model
    plain = build_model(cfg, vocab_size, controls)
    copy_weights(model, plain)  # the same layers: only the batch size differs
    return plain


def training_windows(tr: Any, stream: np.ndarray) -> Windows:
    """Shuffled independent windows; or, with `trainer.carry_state`, batches of parallel rows in order."""
    if tr.get("carry_state"):
        return carried_batches(stream, int(tr.batch_size), int(tr.seq_len))
    return make_windows(stream, tr.seq_len, pad_last=False)


def measure_steps_per_second(cfg: Any, vocab_size: int, train_ds: Any,
                             controls: Sequence[tuple[int, str]] = ()) -> float:
    """Training steps per second of a throwaway copy of the model (lyricslab.training.loop.probe_steps_per_second)."""
    return probe_steps_per_second(build_training_model(cfg, vocab_size, controls), compile_model, cfg, train_ds)


def fit_callbacks(cfg: Any, derived: DerivedMetrics, validation: FullContextValidation,
                  extra: Sequence[keras.callbacks.Callback] = (), budget: Budget | None = None
                  ) -> list[keras.callbacks.Callback]:
    """The shared round callbacks (lyricslab.training.loop.round_callbacks), early stopping on the
    full-context val_bpc: the derived train metrics, then the validation round that adds val_bpc."""
    return round_callbacks(cfg, "val_bpc", [derived, validation], extra, budget)


def tokenize_splits(tok_cfg: Any, texts: dict[str, list[str]], cache_path: Path | None
                    ) -> tuple[Tokenizer, dict[str, np.ndarray]]:
    """Train the tokenizer on the train split and encode every split, once per data + tokenizer config
    and tokenizer code version (TOKENIZER_CACHE_VERSION), so changed tokenizer code never reuses old streams.

    Sweep trials that share both reuse the saved tokenizer and token streams instead of
    retraining BPE and re-encoding every song per trial.
    """
    blob = {"v": tokenizers.TOKENIZER_CACHE_VERSION, "tokenizer": OmegaConf.to_container(tok_cfg, resolve=True)}
    key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
    folder = Path(f"{cache_path}-tok-{key.hexdigest()[:12]}") if cache_path is not None else None
    if folder is not None and (folder / "streams.npz").exists():
        with np.load(folder / "streams.npz") as saved:
            return load_tokenizer(folder / "tokenizer"), {name: saved[name] for name in SPLITS}
    tokenizer = train_tokenizer(tok_cfg, texts["train"])
    streams = {name: tokenizer.encode_songs(texts[name]) for name in SPLITS}
    if folder is not None:
        tmp = Path(f"{folder}.{os.getpid()}.tmp")  # parallel workers: build aside, rename into place
        tokenizer.save(tmp / "tokenizer")
        np.savez(tmp / "streams.npz", **streams)
        try:
            tmp.rename(folder)
        except OSError:  # another worker got there first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer, streams


@dataclass
class Corpus:
    """A causal run's data: the splits' lyrics, the songs as the model reads them (control prefixes),
    their token streams and character counts, and the training batches."""

    splits: Splits
    texts: dict[str, list[str]]  # lyrics only, by split
    conditioned: Conditioned  # the model's songs, control prefixes included
    tokenizer: Tokenizer
    streams: dict[str, np.ndarray]
    chars: dict[str, int]
    batches: int  # training batches in one pass
    train_ds: Any

    @property
    def unscored(self) -> list[int]:
        """Control tokens: given to the model, never scored."""
        return getattr(self.tokenizer, "control_ids", list)()

    def summary(self) -> dict[str, Any]:
        summary = self.splits.summary()
        for name in SPLITS:
            summary[name]["tokens"] = int(len(self.streams[name]))
        summary["vocab_size"] = self.tokenizer.vocab_size
        return summary


def load_corpus(cfg: Any) -> Corpus:
    """Check the trainer settings, read the splits, condition, tokenize and batch them."""
    tr = cfg.trainer
    splits, texts = prepare_run(cfg)
    conditioned = condition_splits(cfg, splits)  # control tokens before each song; the same texts when off
    tokenizer, streams = tokenize_splits(cfg.tokenizer, conditioned.texts, conditioned.cache_path)
    windows = training_windows(tr, streams["train"])
    carried = bool(tr.get("carry_state"))
    train_ds = to_dataset(windows, tr.batch_size, shuffle=not carried, seed=tr.seed, repeat=repeats(tr) or carried)
    return Corpus(splits, texts, conditioned, tokenizer, streams, {name: char_count(texts[name]) for name in SPLITS},
                  max(len(windows.x) // tr.batch_size, 1), train_ds)


def score_test_split(cfg: Any, data: Corpus, model: keras.Model, scorer: Any, song_cache: Any,
                 baseline: dict[str, float]) -> tuple[dict[str, float], np.ndarray | None]:
    """The scoring tail on the test split (lyricslab.scoring.held_out.score_songs: test_bpc, ..., with
    the song cache, the breakdown and the n-gram), plus `test_bpc_windowed` (non-overlapping windows,
    no carried context) to show what the cheap measure would have reported for the same weights; and the
    test split's per-token NLL."""
    tr, frame = cfg.trainer, data.splits.frame
    metrics, token_nll = score_songs(scorer, data.tokenizer, data.streams["test"], data.conditioned.texts["test"],
                             data.texts["test"], rows=frame[frame["split"] == "test"].to_dict("records"),
                             columns=columns_of(cfg), prefix="test_", song_cache=song_cache,
                             baseline=baseline.get("baseline_ngram_test_bpc"))
    windowed = score_windows(model, make_windows(data.streams["test"], tr.seq_len, pad_last=True), tr.batch_size,
                             unscored_ids=data.unscored)
    metrics["test_bpc_windowed"] = windowed.metrics(data.chars["test"], "")["bpc"]
    return metrics, token_nll


def throughput_metrics(cfg: Any, vocab_size: int, derived: DerivedMetrics, rounds: Rounds) -> dict[str, float]:
    """Rounds, tokens and speed; MFU (lyricslab.training.flops.mfu: the model's training FLOP/s over this
    machine's measured and cached matmul peak)."""
    tokens_per_sec = derived.tokens_seen / max(derived.train_seconds, 1e-9)
    peak = matmul_peak(cfg.trainer.precision)
    flops_per_token = training_flops_per_token(cfg, vocab_size)
    metrics = {"probe_seconds": rounds.probe_seconds} if cfg.trainer.get("eval_every_minutes") else {}
    return {**metrics, "steps_per_round": float(rounds.steps), "train_tokens": float(derived.tokens_seen),
            "train_tokens_per_sec": tokens_per_sec, "train_flops_per_token": flops_per_token,
            "matmul_peak_gflops": peak / 1e9, "mfu": mfu(cfg, vocab_size, tokens_per_sec, peak)}


def sample_charset(cfg: Any, data: Corpus) -> str | None:
    """The characters samples may use (lyricslab.text.charset), from the train split; None when off."""
    coverage = cfg.samples.get("charset_coverage")
    return None if coverage is None else common_characters(data.texts["train"], float(coverage))


def samples_and_lyric_metrics(cfg: Any, data: Corpus, model: keras.Model, path: Path,
                              charset: str | None = None) -> dict[str, float]:
    """The network's own samples, written to `path` (the song cache feeds loops in them: see README,
    "The song cache"), and their lyric metrics against as many human excerpts (ref_*)."""
    start = time.perf_counter()
    allowed = None if charset is None else allowed_tokens(data.tokenizer, charset)
    samples = write_samples(model, data.tokenizer, cfg, path, allowed=allowed)
    metrics = {"sample_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    metrics.update(sample_metrics(samples, data.texts["train"], data.texts["val"]))  # ref_*: same count and length
    metrics["lyric_metric_seconds"] = time.perf_counter() - start
    return metrics


def train(cfg: Any, callbacks: Sequence[keras.callbacks.Callback] = (), parent_run_id: str | None = None,
          tags: dict[str, str] | None = None, on_run_start: Callable[[str], None] | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Train one model as configured; log everything to one MLflow run; return the final metrics.

    `callbacks` run after the metric and logging callbacks (e.g. an Optuna pruning callback sees
    each round's full-context val_bpc); `parent_run_id` nests the run under a sweep's parent run; `on_run_start(run_id)` is
    called as soon as the MLflow run exists (a sweep records it on the trial); `clock` is what
    `trainer.budget_minutes` is measured with (tests pass a fake one).
    """
    if cfg.model.family == "bert":  # a masked LM: no causal bits/char, so its own scoring
        return train_masked_lm(cfg, callbacks, parent_run_id, tags, on_run_start, clock)
    started = time.perf_counter()
    tr = cfg.trainer
    data = load_corpus(cfg)
    baseline = ngram_baseline(cfg, data.texts, data.splits.cache_path)
    vocab_size, controls = data.tokenizer.vocab_size, control_fields(data.tokenizer)

    with training_run(cfg, parent_run_id, tags, on_run_start):
        model = build_training_model(cfg, vocab_size, controls)
        rounds = begin_rounds(cfg, model, data.batches, compile_model, clock=clock, vocab_size=vocab_size,
                              probe=lambda: measure_steps_per_second(cfg, vocab_size, data.train_ds, controls))
        derived = DerivedMetrics(tokens_per_step=tr.batch_size * tr.seq_len)
        scorer = full_context_scorer(model, tr, data.unscored)
        # No validation_data: FullContextValidation scores the val split each round instead.
        validation = FullContextValidation(scorer, data.streams["val"], data.chars["val"])
        mlflow.log_metrics(baseline)
        extra = [ResetStatesEachPass(data.batches), *callbacks] if tr.get("carry_state") else callbacks
        history = rounds.fit(data.train_ds, fit_callbacks(cfg, derived, validation, extra, rounds.budget))
        model = plain_model(cfg, model, vocab_size, controls)

        eval_start = time.perf_counter()
        song_cache, metrics = fit_song_cache(cfg, data.streams["val"], validation.best_token_nll, data.chars["val"])
        test_metrics, test_nll = score_test_split(cfg, data, model, scorer, song_cache, baseline)
        metrics.update(test_metrics)
        mixture, mixed = fit_mixture(cfg, data.tokenizer, data.texts, data.streams,
                                     {"val": validation.best_token_nll, "test": test_nll})
        metrics.update(mixed)
        metrics["eval_seconds"] = time.perf_counter() - eval_start
        metrics.update(rounds.summary(model, BEST_OF))
        metrics.update(throughput_metrics(cfg, vocab_size, derived, rounds))
        with run_artifacts(cfg, data.tokenizer, model, data.summary()) as out:
            if song_cache is not None:  # beside the model: generate and evaluate mix with the same weights
                song_cache.save(out / "model" / SONG_CACHE_ARTIFACT)
            if mixture is not None:  # the fitted weights, to read which component each bucket trusts
                mixture.save(out / MIXTURE_ARTIFACT)
            charset = sample_charset(cfg, data)
            if charset is not None:  # beside the model too: generate filters with the same characters
                save_charset(out / "model" / CHARSET_ARTIFACT, charset, float(cfg.samples.charset_coverage))
            learning_curves(history, out / "learning_curves.png", title=f"{cfg.model.name} / {cfg.tokenizer.kind}")
            if data.conditioned.conditions is not None:  # the values the model knows, for `generate genre=...`
                (out / CONDITIONING_ARTIFACT).write_text(json.dumps(data.conditioned.conditions.to_json(), indent=2))
            metrics.update(samples_and_lyric_metrics(cfg, data, model, out / "samples.txt", charset))
        metrics.update(baseline)
        metrics["wall_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
    # Not logged (MLflow's val_bpc is the per-epoch series): the sweep objective `val_bpc` is the
    # series' best, the restored epoch, the same number as best_val_bpc.
    metrics["val_bpc"] = metrics["best_val_bpc"]
    return metrics
