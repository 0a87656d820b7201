"""Keras callbacks shared by the training tests."""

from __future__ import annotations

import keras
import numpy as np


class SpoilAfterFirstRound(keras.callbacks.Callback):
    """Keeps the round-1 (epoch-1) weights, then replaces them with noise so that every later round is worse."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.first = [w.copy() for w in self.model.get_weights()]

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            rng = np.random.default_rng(0)
            self.model.set_weights([rng.normal(0, 3, w.shape).astype(w.dtype) for w in self.model.get_weights()])
