"""`train(cfg) -> metrics`: one training run, recorded as one MLflow run.

Plain function, no Hydra main here (see run.py), so sweeps and tests call it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the console


import keras
import mlflow
import numpy as np
from omegaconf import OmegaConf

from lyricslab.data.conditioning import ARTIFACT as CONDITIONING_ARTIFACT
from lyricslab.data.conditioning import condition_splits, control_fields
from lyricslab.data.prepare import SPLITS
from lyricslab.models import build_model
from lyricslab.models.rnn import build_rnn
from lyricslab.sampling.generation import write_samples
from lyricslab.scoring.breakdown import bpc_by_group, columns_of, scorer_for
from lyricslab.scoring.lyric_metrics import sample_metrics
from lyricslab.scoring.ngram import baseline_bpc
from lyricslab.scoring.scorers import full_context_scorer, score_windows
from lyricslab.scoring.song_cache import ARTIFACT as SONG_CACHE_ARTIFACT
from lyricslab.scoring.song_cache import SongCache, fit_and_score
from lyricslab.text.factory import load_tokenizer, train_tokenizer
from lyricslab.text.tokenizers import EOS_ID, TOKENIZER_CACHE_VERSION, Tokenizer
from lyricslab.text.windows import (
    Windows,
    carried_batches,
    make_windows,
    to_dataset,
    with_start,
)
from lyricslab.tracking import runs as tracking
from lyricslab.tracking.bundle import save_bundle
from lyricslab.tracking.plots import learning_curves
from lyricslab.training.budget import Budget
from lyricslab.training.callbacks import (
    DerivedMetrics,
    FullContextValidation,
    ResetStatesEachPass,
    RoundProgress,
    ThroughputProbe,
)
from lyricslab.training.fitting import (  # noqa: E402,F401
    MlflowEpochLogger,
    NonFiniteLoss,
    StopOnNonFiniteLoss,
    budget_callbacks,
    diverged_as_non_finite_loss,
    log_model_size,
    prepare_run,
    progress_verbosity,
    steps_per_round,
    stopped_by,
)
from lyricslab.training.flops import (
    matmul_peak,
    model_flop_utilisation,
    training_flops_per_token,
)
from lyricslab.training.masked_lm import train_masked_lm
from lyricslab.training.optim import build_optimizer, scheduler_callbacks

MAX_ROUNDS = 1_000_000  # under a budget: "unbounded"; the budget or early stopping ends the fit


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
    plain.set_weights(model.get_weights())  # same layers in the same order: only the batch size differs
    return plain


def training_windows(tr: Any, stream: np.ndarray) -> Windows:
    """Shuffled independent windows; or, with `trainer.carry_state`, batches of parallel rows in order."""
    if tr.get("carry_state"):
        return carried_batches(stream, int(tr.batch_size), int(tr.seq_len))
    return make_windows(stream, tr.seq_len, pad_last=False)


PROBE_MAX_STEPS = 200  # a throughput probe stops sooner: see ThroughputProbe


def measure_steps_per_second(cfg: Any, vocab_size: int, train_ds: Any,
                             controls: Sequence[tuple[int, str]] = ()) -> float:
    """Training steps per second of a throwaway copy of the model (same shapes, optimizer and batches).

    A copy, so the real run's weights, optimizer state and step-keyed lr schedule (which needs the
    round size this sizes) are untouched; the price is one more graph trace and a few steps.
    """
    probe = build_training_model(cfg, vocab_size, controls)
    compile_model(probe, build_optimizer(cfg, 1))
    timer = ThroughputProbe()
    probe.fit(train_ds, epochs=1, steps_per_epoch=PROBE_MAX_STEPS, shuffle=False, verbose=0, callbacks=[timer])
    return timer.steps_per_second()


def fit_callbacks(cfg: Any, derived: DerivedMetrics, validation: FullContextValidation,
                  extra: Sequence[keras.callbacks.Callback] = (), budget: Budget | None = None
                  ) -> list[keras.callbacks.Callback]:
    """The callbacks of every fit, in the order they must run: Keras hands each the same logs dict,
    so the derived and full-context val metrics come first, then whatever reads them; the
    progress line last, so it shows them all.

    EarlyStopping restores the best round's weights at the end of training whoever stopped it
    (Keras 3 restores in on_train_end whenever it has seen a round), so a budget stop ends on them too.
    """
    callbacks = [derived, validation, MlflowEpochLogger(), StopOnNonFiniteLoss(),
                 keras.callbacks.EarlyStopping(monitor="val_bpc", mode="min", patience=cfg.trainer.patience,
                                               restore_best_weights=True),
                 *scheduler_callbacks(cfg.scheduler)]
    return [*callbacks, *budget_callbacks(cfg, budget), *extra, RoundProgress(budget)]


def evaluate_test(model: keras.Model, scorer: Any, stream: np.ndarray, chars: int, seq_len: int,
                  batch_size: int, unscored_ids: Sequence[int] = ()) -> tuple[dict[str, float], np.ndarray | None]:
    """Full-context test metrics, plus `test_bpc_windowed` (non-overlapping windows, no carried
    context) to show what the cheap measure would have reported for the same weights; and the
    per-token NLL of the full-context pass, for the song cache."""
    scores = scorer(stream, keep_predictions=True)
    metrics = scores.metrics(chars, "test_")
    windowed = score_windows(model, make_windows(stream, seq_len, pad_last=True), batch_size,
                             unscored_ids=unscored_ids)
    metrics["test_bpc_windowed"] = windowed.metrics(chars, "")["bpc"]
    return metrics, scores.token_nll


def song_cache_max_context(cfg: Any) -> int | None:
    value = (cfg.get("song_cache") or {}).get("max_context")
    return int(value) if value else None


def with_song_cache(cfg: Any, streams: dict[str, np.ndarray], token_nll: dict[str, np.ndarray | None],
                    chars: dict[str, int]) -> tuple[SongCache | None, dict[str, float]]:
    """The model mixed with the song cache (lyricslab.scoring.song_cache): weights fitted on the val split's
    per-token probabilities (the restored round's), then `val_bpc_song_cache` (fitted on itself, so a
    little optimistic) and `test_bpc_song_cache` (songs never used to fit anything)."""
    max_context = song_cache_max_context(cfg)
    if max_context is None or any(nll is None for nll in token_nll.values()):
        return None, {}
    splits = {name: (with_start(streams[name]), np.exp(-token_nll[name])) for name in token_nll}
    cache, bits = fit_and_score(splits, EOS_ID, max_context)
    return cache, {f"{name}_bpc_song_cache": bits[name] / max(chars[name], 1) for name in bits}


def tokenize_splits(tok_cfg: Any, texts: dict[str, list[str]], cache_path: Path | None
                    ) -> tuple[Tokenizer, dict[str, np.ndarray]]:
    """Train the tokenizer on the train split and encode every split, once per data + tokenizer config
    and tokenizer code version (TOKENIZER_CACHE_VERSION), so changed tokenizer code never reuses old streams.

    Sweep trials that share both reuse the saved tokenizer and token streams instead of
    retraining BPE and re-encoding every song per trial.
    """
    blob = {"v": TOKENIZER_CACHE_VERSION, "tokenizer": OmegaConf.to_container(tok_cfg, resolve=True)}
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


def train(cfg: Any, callbacks: Sequence[keras.callbacks.Callback] = (), parent_run_id: str | None = None,
          tags: dict[str, str] | None = None, on_run_start: Callable[[str], None] | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Train one model as configured; log everything to one MLflow run; return the final metrics.

    `callbacks` run after the metric and logging callbacks (e.g. an Optuna pruning callback sees
    each round's full-context val_bpc); `parent_run_id` nests the run under a sweep's parent run; `on_run_start(run_id)` is
    called as soon as the MLflow run exists (a sweep records it on the trial); `clock` is what
    `trainer.budget_minutes` is measured with (tests pass a fake one).
    """
    if cfg.model.family == "bert":  # a masked LM: no causal bits/char, so its own loop
        return train_masked_lm(cfg, callbacks, parent_run_id, tags, on_run_start, clock)
    started = time.perf_counter()
    tr = cfg.trainer
    splits, texts = prepare_run(cfg)
    conditioned = condition_splits(cfg, splits)  # control tokens before each song; the same texts when off
    tokenizer, streams = tokenize_splits(cfg.tokenizer, conditioned.texts, conditioned.cache_path)
    # +1: the end-of-song mark. Lyrics only: control tokens are not characters.
    chars = {name: sum(len(s) + 1 for s in texts[name]) for name in SPLITS}
    unscored = getattr(tokenizer, "control_ids", list)()  # control tokens: given to the model, never scored
    train_windows = training_windows(tr, streams["train"])
    carried = bool(tr.get("carry_state"))

    batches = max(len(train_windows.x) // tr.batch_size, 1)
    sized = bool(tr.steps_per_epoch or tr.get("eval_every_steps") or tr.get("eval_every_minutes"))
    train_ds = to_dataset(train_windows, tr.batch_size, shuffle=not carried, seed=tr.seed, repeat=sized or carried)

    summary = splits.summary()
    for name in SPLITS:
        summary[name]["tokens"] = int(len(streams[name]))
    summary["vocab_size"] = tokenizer.vocab_size
    baseline = ngram_baseline(cfg, texts, splits.cache_path)

    with tracking.training_run(cfg, parent_run_id=parent_run_id, tags=tags) as run:
        if on_run_start:
            on_run_start(run.info.run_id)
        controls = control_fields(tokenizer)
        model = build_training_model(cfg, tokenizer.vocab_size, controls)
        budget = Budget(tr.budget_minutes, clock) if tr.get("budget_minutes") else None
        if budget is not None:
            budget.start()  # before the throughput probe: the budget counts it
        probe_start = time.perf_counter()
        steps = steps_per_round(tr, batches, lambda: measure_steps_per_second(cfg, tokenizer.vocab_size, train_ds,
                                                                                 controls))
        probe_seconds = time.perf_counter() - probe_start
        compile_model(model, build_optimizer(cfg, steps, budget=budget is not None))
        derived = DerivedMetrics(tokens_per_step=tr.batch_size * tr.seq_len)
        scorer = full_context_scorer(model, tr, unscored)
        validation = FullContextValidation(scorer, streams["val"], chars["val"])
        trainable = log_model_size(model, tokenizer.vocab_size)
        mlflow.log_metrics(baseline)
        extra = [ResetStatesEachPass(batches), *callbacks] if carried else callbacks
        fit_list = fit_callbacks(cfg, derived, validation, extra, budget)
        fit_start = time.perf_counter()
        # No validation_data: FullContextValidation scores the val split each round instead.
        # Under a budget, the budget (or early stopping) ends the run, never a round count.
        with diverged_as_non_finite_loss(model):
            history = model.fit(train_ds, epochs=MAX_ROUNDS if budget else tr.epochs, steps_per_epoch=steps,
                                shuffle=False, callbacks=fit_list, verbose=progress_verbosity(tr.verbose)).history
        fit_seconds = time.perf_counter() - fit_start
        budget_used = budget.used_minutes() if budget else None
        mlflow.set_tag("stopped_by", stopped_by(fit_list))
        model = plain_model(cfg, model, tokenizer.vocab_size, controls)

        eval_start = time.perf_counter()
        metrics, test_nll = evaluate_test(model, scorer, streams["test"], chars["test"], tr.seq_len, tr.batch_size,
                                          unscored)
        song_cache, cached = with_song_cache(cfg, streams, {"val": validation.best_token_nll, "test": test_nll}, chars)
        metrics.update(cached)
        test_rows = splits.frame[splits.frame["split"] == "test"].to_dict("records")
        metrics.update(bpc_by_group(scorer_for(scorer, tokenizer), conditioned.texts["test"], texts["test"],
                                    test_rows, columns_of(cfg), "test_"))
        metrics["eval_seconds"] = time.perf_counter() - eval_start
        best = int(np.argmin(history["val_bpc"]))
        # best_*: the restored (best) round; the per-round series keep the plain names (val_bpc, ...).
        metrics.update({f"best_{k}": float(history[k][best]) for k in ("val_bpc", "val_nll", "val_perplexity",
                                                                           "val_accuracy", "val_top5_accuracy")})
        if budget is not None:
            metrics.update({"budget_minutes": budget.minutes, "budget_used_minutes": budget_used})
        if tr.get("eval_every_minutes"):
            metrics["probe_seconds"] = probe_seconds
        metrics.update({
            "best_round": float(best + 1), "rounds_run": float(len(history["val_bpc"])),
            "steps_per_round": float(steps), "train_tokens": float(derived.tokens_seen),
            "params": float(model.count_params()), "trainable_params": float(trainable),
            "train_tokens_per_sec": derived.tokens_seen / max(derived.train_seconds, 1e-9),
            "train_seconds": fit_seconds,
        })
        # MFU: the model's training FLOP/s over this machine's measured (and cached) matmul peak.
        peak = matmul_peak(tr.precision)
        flops_per_token = training_flops_per_token(cfg, tokenizer.vocab_size)
        metrics.update({"train_flops_per_token": flops_per_token, "matmul_peak_gflops": peak / 1e9,
                        "mfu": model_flop_utilisation(flops_per_token, metrics["train_tokens_per_sec"], peak)})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            tokenizer.save(out / "tokenizer")
            save_bundle(out / "model", model, tokenizer, cfg)
            if song_cache is not None:  # beside the model: generate and evaluate mix with the same weights
                song_cache.save(out / "model" / SONG_CACHE_ARTIFACT)
            learning_curves(history, out / "learning_curves.png", title=f"{cfg.model.name} / {cfg.tokenizer.kind}")
            (out / "data_summary.json").write_text(json.dumps(summary, indent=2))
            if conditioned.conditions is not None:  # the values the model knows, for `generate genre=...`
                (out / CONDITIONING_ARTIFACT).write_text(json.dumps(conditioned.conditions.to_json(), indent=2))
            sample_start = time.perf_counter()
            # The network's own samples: the song cache feeds loops in them (see README, "The song cache").
            samples = write_samples(model, tokenizer, cfg, out / "samples.txt")
            metrics["sample_seconds"] = time.perf_counter() - sample_start
            lyric_start = time.perf_counter()
            metrics.update(sample_metrics(samples, texts["train"], texts["val"]))  # ref_*: same count and length
            metrics["lyric_metric_seconds"] = time.perf_counter() - lyric_start
            mlflow.log_artifacts(tmp)
        metrics.update(baseline)
        if baseline:  # below 1: the model beats the n-gram on the same test songs
            metrics["test_bpc_vs_baseline"] = metrics["test_bpc"] / baseline["baseline_ngram_test_bpc"]
            if "test_bpc_song_cache" in metrics:  # the model with the song cache against the plain n-gram
                metrics["test_bpc_song_cache_vs_baseline"] = (metrics["test_bpc_song_cache"]
                                                              / baseline["baseline_ngram_test_bpc"])
        metrics["wall_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
    # Not logged (MLflow's val_bpc is the per-epoch series): the sweep objective `val_bpc` is the
    # series' best, the restored epoch, the same number as best_val_bpc.
    metrics["val_bpc"] = metrics["best_val_bpc"]
    return metrics
