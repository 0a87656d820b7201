"""Run under one Keras backend (KERAS_BACKEND): `make FOLDER` builds tiny models from fixed weights
and saves them as <model>-<backend>.keras; `score FOLDER` prints, as JSON, the full-context NLL of
every saved model (whichever backend saved it) on FOLDER/stream.npy. tests/test_backends.py runs it."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from lyricslab.config.runtime import start_keras

BACKEND = start_keras()

import keras  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from lyricslab.models import build_model  # noqa: E402  (also registers lyricslab's layers for loading)
from lyricslab.scoring.scorers import full_context_scorer  # noqa: E402
from tests.conftest import compose, sharpen, tiny  # noqa: E402

MODELS = ("lstm", "gru", "simple_rnn", "transformer")
VOCAB = 40


def make(folder: Path) -> None:
    for name in MODELS:
        keras.utils.set_random_seed(7)
        model = build_model(compose(tiny(name)), VOCAB)
        model(np.zeros((1, 8), dtype=np.int32))
        sharpen(model)
        model.save(folder / f"{name}-{BACKEND}.keras")


def score(folder: Path) -> dict[str, float]:
    stream = np.load(folder / "stream.npy")
    bits = {}
    for path in sorted(folder.glob("*.keras")):
        model = keras.saving.load_model(path)
        cfg = compose(tiny(path.stem.rsplit("-", 1)[0]))
        scores = full_context_scorer(model, cfg.trainer)(stream)
        bits[path.stem] = scores.nll_sum / math.log(2) / scores.tokens
    return bits


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "make":
        make(folder)
    else:
        print(json.dumps({"backend": BACKEND, "bits": score(folder)}))
