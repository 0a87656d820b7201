"""Scoring a token stream with a trained model: exact sums over every real token.

Two ways to lay a stream out for the model:
- windowed (`score_windows`): non-overlapping windows of seq_len tokens, no state between them,
  so a token sees on average seq_len / 2 tokens of context: the cheap, biased measure;
- full context (`full_context_scorer`): a transformer reads overlapping windows of its whole
  context and scores only each window's new tokens; an RNN reads a few long rows chunk by chunk
  and carries its recurrent state across chunks, so each token is conditioned on everything
  before it in its row.
Both score every real token exactly once and leave padding out, so bits/char stays exact.
Control tokens (`unscored_ids`, see lyricslab.data.conditioning) are given to the model, not
predicted: they are left out of the sums, as they are left out of the character count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

from lyricslab.config.errors import ConfigError
from lyricslab.models.compiled import compiled
from lyricslab.models.controls import ControlPath, recurrent_stack
from lyricslab.text.windows import Windows, parallel_streams, sliding_windows

LN2 = math.log(2.0)


@dataclass
class Scores:
    """Sums over the scored tokens of one split, plus the targets and argmax predictions if kept."""

    nll_sum: float = 0.0  # nats
    tokens: int = 0
    correct: int = 0
    top5: int = 0
    y_true: list[np.ndarray] = field(default_factory=list)
    y_pred: list[np.ndarray] = field(default_factory=list)
    unscored_ids: np.ndarray | None = None  # targets never scored: control tokens
    # NLL (nats) of each target of the stream, in stream order, NaN where not scored (full-context
    # scorers fill it, for the song cache: lyricslab.scoring.song_cache); None when not kept.
    token_nll: np.ndarray | None = None

    def add(self, stats: tuple, windows: Windows, keep_predictions: bool) -> None:
        nll, pred, top5 = (np.asarray(s) for s in stats)
        scored = windows.w > 0
        if self.unscored_ids is not None and len(self.unscored_ids):
            scored &= ~np.isin(windows.y, self.unscored_ids)
        if self.token_nll is not None and windows.pos is not None:
            self.token_nll[windows.pos[scored]] = nll[scored]
        self.nll_sum += float(nll.astype(np.float64)[scored].sum())
        self.tokens += int(scored.sum())
        self.correct += int((pred == windows.y)[scored].sum())
        self.top5 += int(top5[scored].sum())
        if keep_predictions:
            self.y_true.append(windows.y[scored])
            self.y_pred.append(pred[scored])

    def metrics(self, chars: int, prefix: str) -> dict[str, float]:
        """Mean NLL per token, perplexity, bits per character, accuracy, top-5 accuracy, token count;
        macro precision/recall/F1 of next-token prediction when predictions were kept."""
        nll = self.nll_sum / max(self.tokens, 1)
        out = {f"{prefix}nll": nll, f"{prefix}perplexity": math.exp(min(nll, 50.0)),
               f"{prefix}bpc": self.nll_sum / LN2 / max(chars, 1),
               f"{prefix}accuracy": self.correct / max(self.tokens, 1),
               f"{prefix}top5_accuracy": self.top5 / max(self.tokens, 1), f"{prefix}tokens": float(self.tokens)}
        if self.y_true:
            from sklearn.metrics import precision_recall_fscore_support

            true, pred = np.concatenate(self.y_true), np.concatenate(self.y_pred)
            precision, recall, f1, _ = precision_recall_fscore_support(true, pred, average="macro", zero_division=0)
            out.update({f"{prefix}precision_macro": float(precision), f"{prefix}recall_macro": float(recall),
                        f"{prefix}f1_macro": float(f1)})
        return out


def token_stats(logits, targets):
    """Per-token NLL (nats), argmax prediction and top-5 hit, computed where the logits are (no
    (batch, time, vocab) array crosses to the host)."""
    logits = ops.cast(logits, "float32")
    nll = ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    # Same tie rule as Keras' SparseTopKCategoricalAccuracy.
    hit = ops.in_top_k(ops.reshape(targets, (-1,)), ops.reshape(logits, (-1, ops.shape(logits)[-1])), k=5)
    return nll, pred, ops.reshape(hit, ops.shape(targets))


def score_batches(forward, batches: Iterable[Windows], keep_predictions: bool,
                  unscored_ids: Sequence[int] = (), targets: int = 0) -> Scores:
    """Sums over every batch; with `targets` > 0, also each target's NLL in stream order (`Scores.token_nll`)."""
    scores = Scores(unscored_ids=np.asarray(unscored_ids, dtype=np.int32),
                    token_nll=np.full(targets, np.nan) if targets else None)
    for windows in batches:
        scores.add(forward(windows.x, windows.y), windows, keep_predictions)
    return scores


def _forward(model: keras.Model):
    # Compiled once per batch shape (the ragged last batch adds one); predict_on_batch would return
    # the (batch, time, vocab) logits to the host.
    return compiled(lambda x, y: token_stats(model(x, training=False), y), model.variables)


def score_windows(model: keras.Model, windows: Windows, batch_size: int, keep_predictions: bool = False,
                  unscored_ids: Sequence[int] = ()) -> Scores:
    """Windowed scoring: each window on its own, from an empty context."""
    batches = (Windows(windows.x[i:i + batch_size], windows.y[i:i + batch_size], windows.w[i:i + batch_size])
               for i in range(0, len(windows.x), batch_size))
    return score_batches(_forward(model), batches, keep_predictions, unscored_ids)


class SlidingWindowScorer:
    """Full-context scoring for a transformer: windows of its whole context, `stride` tokens apart."""

    def __init__(self, model: keras.Model, stride: int | None, batch_size: int, unscored_ids: Sequence[int] = ()):
        self.unscored_ids = list(unscored_ids)
        self.context = int(getattr(model, "context_length", 0) or model.get_layer("position_embedding").sequence_length)
        self.stride = int(stride) if stride else max(self.context // 2, 1)
        if not 0 < self.stride <= self.context:  # checked here, before training, not at the first validation
            raise ConfigError(f"trainer.eval_stride must be between 1 and the context ({self.context}), not {stride}")
        self.batch_size = batch_size
        self.forward = _forward(model)

    def __call__(self, stream: np.ndarray, keep_predictions: bool = False) -> Scores:
        batches = sliding_windows(stream, self.context, self.stride, self.batch_size)
        return score_batches(self.forward, batches, keep_predictions, self.unscored_ids, targets=len(stream))


class CarriedStateScorer:
    """Full-context scoring for an RNN: `rows` parallel rows, `chunk` tokens per call, state carried.

    Keras RNN layers return their final state only when built with `return_state=True`, so each
    trained layer gets an evaluation twin built from its config with that flag; the twin's
    weights are copied from the trained layer at every call (cheap next to a pass over the split).
    The twins are the same Keras layer classes, so they run the same kernels (cuDNN on a GPU).
    """

    def __init__(self, model: keras.Model, chunk: int, rows: int, unscored_ids: Sequence[int] = ()):
        self.chunk, self.rows, self.unscored_ids = chunk, rows, list(unscored_ids)
        self.embedding = model.get_layer("embedding")
        names = {layer.name for layer in model.layers}
        self.projection = model.get_layer("projection") if "projection" in names else None
        self.controls = ControlPath.of(model)  # conditioning.every_step: its state comes first
        self.control_twin = self.controls.twin() if self.controls is not None else None
        self.layers = recurrent_stack(model)
        self.twins = []
        for layer in self.layers:
            twin = type(layer).from_config({**layer.get_config(), "return_state": True, "stateful": False,
                                          "name": f"{layer.name}_eval"})
            twin(keras.ops.zeros((1, 1, layer.cell.kernel.shape[0]), dtype=layer.compute_dtype))  # builds it
            self.twins.append(twin)
        twins = [*self.twins, *([self.control_twin] if self.control_twin is not None else [])]
        self.step = compiled(self._step, [*model.variables, *(v for twin in twins for v in twin.variables)])

    def _step(self, x, y, states):
        hidden, new = self.embedding(x), []
        if self.controls is not None:
            hidden, controls = self.controls.sequence(self.control_twin, hidden, x, states[0][0])
            new.append([controls])
            states = states[1:]
        for twin, state in zip(self.twins, states):
            hidden, *state = twin(hidden, initial_state=state, training=False)
            new.append(state)
        if self.projection is not None:
            hidden = self.projection(hidden)
        return token_stats(self.embedding(hidden, reverse=True), y), new

    def __call__(self, stream: np.ndarray, keep_predictions: bool = False) -> Scores:
        for layer, twin in zip(self.layers, self.twins):
            twin.set_weights(layer.get_weights())
        rows = parallel_streams(stream, self.rows, self.chunk)
        states = [twin.get_initial_state(len(rows.x)) for twin in self.twins]
        states = [list(s) if isinstance(s, (list, tuple)) else [s] for s in states]
        if self.controls is not None:
            states = [[self.controls.initial(len(rows.x))], *states]
        scores = Scores(unscored_ids=np.asarray(self.unscored_ids, dtype=np.int32),
                        token_nll=np.full(len(stream), np.nan))
        for t in range(0, rows.x.shape[1], self.chunk):
            cut = slice(t, t + self.chunk)
            chunk = Windows(rows.x[:, cut], rows.y[:, cut], rows.w[:, cut], rows.pos[:, cut])
            stats, states = self.step(chunk.x, chunk.y, states)
            scores.add(stats, chunk, keep_predictions)
        return scores


def full_context_scorer(model: keras.Model, trainer, unscored_ids: Sequence[int] = ()
                        ) -> SlidingWindowScorer | CarriedStateScorer:
    """The full-context scorer for this model family (transformers have a position embedding or, wrapping
    a preset, a context length); `unscored_ids`: target ids left out of every sum (control tokens)."""
    if hasattr(model, "context_length") or "position_embedding" in {layer.name for layer in model.layers}:
        return SlidingWindowScorer(model, trainer.get("eval_stride"), int(trainer.batch_size), unscored_ids)
    return CarriedStateScorer(model, chunk=int(trainer.seq_len), rows=int(trainer.batch_size),
                              unscored_ids=unscored_ids)
