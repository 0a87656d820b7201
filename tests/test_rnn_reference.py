"""Every path that scores an RNN agrees with a numpy implementation of its cell.

The expected values come from the cell equations written out below in float64, not from Keras, so
a kernel or a scorer that computes a cell differently fails here on any machine. Issue 22 was the
tests' own doing: weights scaled 3x gave SimpleRNN a recurrence of spectral radius 3, which is
chaotic, so the last-bit differences of two correct kernels grew to 2-4% of the NLL (against this
reference it fails on every CPU, oneDNN on or off); conftest.sharpen keeps the recurrence contractive.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compose, sharpen, tiny

from lyricslab.models import build_model
from lyricslab.models.rnn import build_rnn, copy_weights
from lyricslab.scoring.scorers import CarriedStateScorer, score_windows
from lyricslab.text.windows import make_windows, with_start

VOCAB = 20
TOL = 1e-5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def cell_step(cell: str, w: dict, x: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
    """One step of Keras' SimpleRNN / LSTM / GRU (reset_after=True) cell, from their documented equations."""
    k, r, b = w["kernel"], w["recurrent_kernel"], w["bias"]
    if cell == "simple_rnn":
        return [np.tanh(x @ k + state[0] @ r + b)]
    if cell == "lstm":  # gates i, f, c, o
        h, c = state
        z = x @ k + h @ r + b
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return [sigmoid(o) * np.tanh(c), c]
    h = state[0]  # gru: gates z, r, h; the recurrent bias is applied before the reset gate (reset_after)
    xz, xr, xh = np.split(x @ k + b[0], 3, axis=-1)
    hz, hr, hh = np.split(h @ r + b[1], 3, axis=-1)
    z, reset = sigmoid(xz + hz), sigmoid(xr + hr)
    return [z * h + (1 - z) * np.tanh(xh + reset * hh)]


def reference_logits(model: keras.Model, cell: str, tokens: np.ndarray) -> np.ndarray:
    """Logits of one row of tokens, from an empty state, in float64."""
    embedding = model.get_layer("embedding")
    table = np.asarray(embedding.embeddings, np.float64)
    hidden = table[tokens]
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    for layer in layers:
        w = {v.path.split("/")[-1]: np.asarray(v, np.float64) for v in layer.cell.weights}
        units = layer.cell.units
        state = [np.zeros(units)] * (2 if cell == "lstm" else 1)
        out = []
        for x in hidden:
            state = cell_step(cell, w, x, state)
            out.append(state[0])
        hidden = np.stack(out)
    if "projection" in {layer.name for layer in model.layers}:
        proj = model.get_layer("projection")
        hidden = hidden @ np.asarray(proj.kernel, np.float64) + np.asarray(proj.bias, np.float64)
    reverse = table.T if embedding.tie_weights else np.asarray(embedding.reverse_embeddings, np.float64)
    return hidden @ reverse


def nll(logits: np.ndarray, targets: np.ndarray) -> float:
    top = logits.max(-1)
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((np.log(np.exp(logits - top[..., None]).sum(-1)) + top - picked).sum())


def scaled_model(cell: str, *overrides: str):
    """Sharpened weights, so that context matters (a wrong kernel moves the scores by far more than 1e-5)."""
    cfg = compose([*tiny(cell), "embedding.tied=false", *overrides])
    keras.utils.set_random_seed(0)
    model = build_model(cfg, VOCAB)
    sharpen(model)
    return model, cfg


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_every_rnn_scoring_path_matches_the_numpy_cell(cell):
    model, cfg = scaled_model(cell, "model.layers=2")
    stream = np.random.default_rng(1).integers(3, VOCAB, size=95).astype(np.int32)
    tokens = with_start(stream)
    expected = nll(reference_logits(model, cell, tokens[:-1]), tokens[1:])

    # 1. The trained model called directly over the whole stream.
    direct = np.asarray(model(tokens[None, :-1], training=False), np.float64)[0]
    assert nll(direct, tokens[1:]) == pytest.approx(expected, rel=TOL)

    # 2. The carried-state twin (full-context scoring), 12 chunks of 8 with the state carried.
    carried = CarriedStateScorer(model, chunk=8, rows=1)(stream)
    assert carried.tokens == len(stream)
    assert carried.nll_sum == pytest.approx(expected, rel=TOL)

    # 3. Windowed scoring: each window from an empty state, against the reference per window.
    windows = make_windows(stream, 16, pad_last=True)
    expected_windows = sum(nll(reference_logits(model, cell, x)[w > 0], y[w > 0])
                           for x, y, w in zip(windows.x, windows.y, windows.w))
    windowed = score_windows(model, windows, batch_size=4)
    assert windowed.nll_sum == pytest.approx(expected_windows, rel=TOL)

    # 4. The stateful training model (trainer.carry_state): same weights, state kept across calls.
    stateful = build_rnn(cfg, VOCAB, stateful_batch=1)
    copy_weights(model, stateful)
    inputs = tokens[:-1]
    pieces = [np.asarray(stateful(inputs[None, t:t + 8], training=False), np.float64)[0]
              for t in range(0, len(inputs), 8)]
    logits = np.concatenate(pieces)
    assert nll(logits, tokens[1:]) == pytest.approx(expected, rel=TOL)
