"""Masked-LM fine-tuning of a BERT-family preset (`model=bert_mlm`): training, metrics, mask-filling generation.

A masked LM's loss is not a causal code length, so there is no bits/char here: like the original
study's table, it reports masked-token accuracy and macro precision/recall/F1 over the masked
tokens of the val and test splits. Its runs are tagged `objective=masked_lm`, and the leaderboard
marks their rows.

Windows: each split's songs, separated by [SEP], cut into rows of [CLS] + seq_len - 2 tokens + [SEP].
Training masks afresh every step (keras_hub MaskedLMMaskGenerator, BERT's 80/10/10 rule); val and
test are masked once with a fixed seed, every selected token replaced by [MASK], so every round is
scored on the same tokens.

Generation fills masks: the prompt, then [MASK]s, filled one at a time left to right by sampling
the model's prediction for the first one left. Each token costs a pass over the whole window, so
it is much slower than the causal models' cached decoding.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import mlflow
import numpy as np

from lyricslab.data.normalize import render_structure_tags
from lyricslab.data.prepare import SPLITS
from lyricslab.models import build_model
from lyricslab.models.lora import lora_layer_paths
from lyricslab.sampling.generation import unescape_prompt
from lyricslab.text.factory import train_tokenizer
from lyricslab.training import loop
from lyricslab.training.fitting import prepare_run

EVAL_SEED = 1234  # val/test masks: the same tokens every round and every run


def pack_rows(stream: np.ndarray, seq_len: int, tok: Any) -> np.ndarray:
    """[CLS] + up to seq_len - 2 tokens of the stream + [SEP], padded with [PAD]."""
    body = seq_len - 2
    if body < 1:
        raise ValueError(f"trainer.seq_len={seq_len} leaves no room beside [CLS] and [SEP]; use at least 3")
    rows = np.full((max(math.ceil(len(stream) / body), 1), seq_len), tok.pad_id, dtype=np.int32)
    for i in range(len(rows)):
        chunk = stream[i * body:(i + 1) * body]
        rows[i, 0], rows[i, 1:1 + len(chunk)], rows[i, 1 + len(chunk)] = tok.cls_id, chunk, tok.eos_id
    return rows


def model_inputs(token_ids, padding_mask, mask_positions) -> dict[str, Any]:
    """BertMaskedLM's inputs (one segment), all tensors: Keras refuses a dict that mixes them with arrays."""
    tensor = keras.ops.convert_to_tensor
    token_ids = tensor(token_ids, dtype="int32")
    return {"token_ids": token_ids, "padding_mask": tensor(padding_mask, dtype="int32"),
            "segment_ids": keras.ops.zeros_like(token_ids), "mask_positions": tensor(mask_positions, dtype="int32")}


class MaskedSet:
    """Rows masked once with a fixed seed: every selected token becomes [MASK] (no 80/10/10 when scoring)."""

    def __init__(self, rows: np.ndarray, tok: Any, rate: float, seed: int = EVAL_SEED):
        rng = np.random.default_rng(seed)
        selectable = ~np.isin(rows, [tok.pad_id, tok.cls_id, tok.eos_id])
        chosen = selectable & (rng.random(rows.shape) < rate)
        width = max(int(chosen.sum(axis=1).max()), 1)
        self.positions = np.zeros((len(rows), width), dtype=np.int32)
        self.weights = np.zeros((len(rows), width), dtype=np.float32)
        for i, where in enumerate(chosen):
            picked = np.flatnonzero(where)
            self.positions[i, :len(picked)], self.weights[i, :len(picked)] = picked, 1.0
        self.targets = np.take_along_axis(rows, self.positions, axis=1)
        self.tokens = np.where(chosen, tok.mask_id, rows).astype(np.int32)
        self.padding = (rows != tok.pad_id).astype(np.int32)


def masked_scores(model: keras.Model, data: MaskedSet, batch_size: int, prefix: str,
                  keep_predictions: bool = False) -> dict[str, float]:
    """Masked-token NLL and accuracy; with `keep_predictions`, macro precision/recall/F1 over them too."""
    nll_sum, right, count, truths, preds = 0.0, 0, 0, [], []
    for start in range(0, len(data.tokens), batch_size):
        part = slice(start, start + batch_size)
        logits = model(model_inputs(data.tokens[part], data.padding[part], data.positions[part]), training=False)
        logits = keras.ops.cast(logits, "float32")
        nll = keras.ops.convert_to_numpy(keras.ops.sparse_categorical_crossentropy(data.targets[part], logits,
                                                                                  from_logits=True))
        pred = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
        scored = data.weights[part] > 0
        nll_sum += float(nll[scored].astype(np.float64).sum())
        right += int((pred == data.targets[part])[scored].sum())
        count += int(scored.sum())
        truths.append(data.targets[part][scored])
        preds.append(pred[scored])
    out = {f"{prefix}masked_nll": nll_sum / max(count, 1), f"{prefix}masked_accuracy": right / max(count, 1),
           f"{prefix}masked_tokens": float(count)}
    if keep_predictions:
        from sklearn.metrics import precision_recall_fscore_support

        precision, recall, f1, _ = precision_recall_fscore_support(
            np.concatenate(truths), np.concatenate(preds), average="macro", zero_division=0)
        out.update({f"{prefix}precision_macro": float(precision), f"{prefix}recall_macro": float(recall),
                    f"{prefix}f1_macro": float(f1)})
    return out


class MaskedValidation(keras.callbacks.Callback):
    """val_masked_nll and val_masked_accuracy each round, before early stopping and logging read them."""

    def __init__(self, data: MaskedSet, batch_size: int):
        super().__init__()
        self.data, self.batch_size = data, batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(masked_scores(self.model, self.data, self.batch_size, "val_"))
            logs.pop("val_masked_tokens")


def training_batches(rows: np.ndarray, tok: Any, cfg: Any, repeat: bool):
    """Batches masked afresh each time (keras_hub MaskedLMMaskGenerator: BERT's 80/10/10 rule).

    tf.data on every backend: keras_hub's preprocessing layers (the mask generator) run in
    TensorFlow whatever the backend, and Keras feeds a tf.data pipeline to JAX as numpy."""
    import keras_hub
    import tensorflow as tf

    tr, rate = cfg.trainer, float(cfg.model.mask_rate)
    masker = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tok.vocab_size, mask_selection_rate=rate, mask_token_id=tok.mask_id,
        mask_selection_length=max(int(tr.seq_len * rate * 2), 1),
        unselectable_token_ids=[tok.pad_id, tok.cls_id, tok.eos_id])

    def to_example(batch):
        masked = masker(batch)
        inputs = model_inputs(masked["token_ids"], tf.cast(batch != tok.pad_id, tf.int32), masked["mask_positions"])
        return inputs, masked["mask_ids"], masked["mask_weights"]

    ds = tf.data.Dataset.from_tensor_slices(rows).shuffle(len(rows), seed=int(tr.seed), reshuffle_each_iteration=True)
    ds = ds.repeat() if repeat else ds
    return ds.batch(int(tr.batch_size), drop_remainder=len(rows) >= tr.batch_size).map(to_example).prefetch(2)


def compile_masked_lm(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")])


def fill_masks(model: keras.Model, tok: Any, prompt: str, max_tokens: int, context: int, temperature: float = 1.0,
               greedy: bool = False, rng: np.random.Generator | None = None) -> str:
    """One song: the prompt, then up to `max_tokens` [MASK]s filled left to right (a [SEP] ends it)."""
    rng = rng or np.random.default_rng(0)
    start = [tok.cls_id, *tok.encode(unescape_prompt(prompt)).tolist()][: context - 2]
    end = min(len(start) + max_tokens, context - 1)
    row = np.array([start + [tok.mask_id] * (end - len(start)) + [tok.eos_id]], dtype=np.int32)
    banned = [tok.pad_id, tok.cls_id, tok.mask_id, tok.unk_id]
    positions = np.arange(row.shape[1], dtype=np.int32)[None]
    filled = end
    for p in range(len(start), end):
        logits = np.asarray(model(model_inputs(row, np.ones_like(row), positions), training=False))[0, p]
        logits = logits.astype(np.float64)
        logits[banned] = -np.inf
        if greedy:
            pick = int(np.argmax(logits))
        else:
            probs = np.exp((logits - logits.max()) / temperature)
            pick = int(rng.choice(len(probs), p=probs / probs.sum()))
        row[0, p] = pick
        if pick == tok.eos_id:  # end of song
            filled = p
            break
    return render_structure_tags(tok.decode(row[0, 1:filled]))


def generate(model: Any, tokenizer: Any, prompt: str, n: int = 1, max_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, sampler: str = "random", seed: int = 0,
             cache: Any = None, context: int | None = None) -> list[str]:
    """lyricslab.sampling.generation.generate's signature, by mask filling (top_k, top_p and beam do not apply);
    `context` defaults to the backbone's whole position table."""
    rng = np.random.default_rng(seed)
    context = context or int(model.backbone.max_sequence_length)
    return [fill_masks(model, tokenizer, prompt, max_tokens, context, temperature, sampler != "random", rng)
            for _ in range(n)]


def evaluate_songs(bundle: Any, songs: list[str]) -> dict[str, float]:
    """Masked-token metrics of a bundle on any songs (lyricslab.evaluate's masked-LM path)."""
    tok, tr = bundle.tokenizer, bundle.cfg.trainer
    data = MaskedSet(pack_rows(tok.encode_songs(songs), int(tr.seq_len), tok), tok, float(bundle.cfg.model.mask_rate))
    scores = masked_scores(bundle.model, data, int(tr.batch_size), "", keep_predictions=True)
    scores["accuracy"] = scores["masked_accuracy"]
    scores["songs"] = float(len(songs))
    return scores


def samples(model: keras.Model, tok: Any, cfg: Any, path: Path) -> None:
    blocks = []
    for i, prompt in enumerate(cfg.samples.prompts):
        for temperature in cfg.samples.temperatures:
            text = fill_masks(model, tok, prompt, int(cfg.samples.max_tokens), int(cfg.trainer.seq_len),
                              float(temperature), rng=np.random.default_rng(int(cfg.trainer.seed) + i))
            blocks.append(f"=== prompt {unescape_prompt(prompt)!r}, temperature {temperature} (mask filling) ===\n"
                          f"{text}\n")
    path.write_text("\n".join(blocks))


def train_masked_lm(cfg: Any, callbacks: Sequence[keras.callbacks.Callback] = (), parent_run_id: str | None = None,
                    tags: dict[str, str] | None = None, on_run_start: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """lyricslab.training.train.train for a masked LM: the same data, skeleton (lyricslab.training.loop),
    MLflow run and bundle; early stopping on val_masked_nll; masked-token metrics."""
    started = time.perf_counter()
    tr = cfg.trainer
    splits, texts = prepare_run(cfg)
    tok = train_tokenizer(cfg.tokenizer, texts["train"])  # the preset's WordPiece, loaded
    rows = {name: pack_rows(tok.encode_songs(texts[name]), int(tr.seq_len), tok) for name in SPLITS}
    rate = float(cfg.model.mask_rate)
    val, test = MaskedSet(rows["val"], tok, rate), MaskedSet(rows["test"], tok, rate)
    batches = max(len(rows["train"]) // int(tr.batch_size), 1)
    train_ds = training_batches(rows["train"], tok, cfg, repeat=loop.repeats(tr))

    with loop.training_run(cfg, parent_run_id, {**(tags or {}), "objective": "masked_lm"}, on_run_start):
        model = build_model(cfg, tok.vocab_size)
        rounds = loop.begin_rounds(cfg, model, batches, compile_masked_lm, clock=clock, vocab_size=tok.vocab_size,
                                   probe=lambda: loop.probe_steps_per_second(build_model(cfg, tok.vocab_size),
                                                                             compile_masked_lm, cfg, train_ds))
        scoring = [MaskedValidation(val, int(tr.batch_size))]
        rounds.fit(train_ds, loop.round_callbacks(cfg, "val_masked_nll", scoring, callbacks, rounds.budget))
        metrics = masked_scores(model, test, int(tr.batch_size), "test_", keep_predictions=True)
        metrics["test_accuracy"] = metrics["test_masked_accuracy"]  # the leaderboard's column, marked as masked LM
        metrics.update(rounds.summary(model, ("val_masked_nll", "val_masked_accuracy")))
        with loop.run_artifacts(cfg, tok, model, splits.summary()) as out:
            if lora_layer_paths(model.backbone):
                model.backbone.save_lora_weights(str(out / "model" / "backbone.lora.h5"))  # the head is in model.keras
            sample_start = time.perf_counter()
            samples(model, tok, cfg, out / "samples.txt")
            metrics["sample_seconds"] = time.perf_counter() - sample_start
        metrics["wall_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
    return metrics
