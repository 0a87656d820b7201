"""Controls at every RNN step (`conditioning.every_step`): the state of controls in force, and the same
numbers from the full model, incremental decoding, carried-state scoring, stateful training and a reload."""

import keras
import numpy as np
import pytest
from conftest import compose, tiny

from lyricslab.models import build_model
from lyricslab.models.controls import ControlCell, ControlOneHot
from lyricslab.models.decoding import make_cache
from lyricslab.models.rnn import copy_weights
from lyricslab.scoring.scorers import CarriedStateScorer
from lyricslab.training.train import build_training_model, plain_model

VOCAB = 20
CONTROLS = [(10, "tag"), (11, "tag"), (12, "decade"), (13, "decade")]  # (id, field)


def conditioned_rnn(cell="lstm", *extra):
    keras.utils.set_random_seed(5)
    cfg = compose([*tiny(cell), "model.layers=2", "conditioning.fields=[tag,decade]", *extra])
    model = build_model(cfg, VOCAB, CONTROLS)
    projection = model.get_layer("control_embedding")
    # Trained models learn this; zeros (the initial value) would make the controls invisible here.
    projection.set_weights([np.random.default_rng(0).normal(size=projection.kernel.shape).astype("float32")])
    return cfg, model


def stream(length=24, seed=0):
    """Random lyrics tokens with controls at a few places: a tag, a decade, then another tag."""
    x = np.random.default_rng(seed).integers(3, 10, size=(2, length)).astype("int32")
    x[:, 0], x[:, 1], x[0, 9], x[1, 14] = 10, 12, 11, 13
    return x


def test_a_control_replaces_its_fields_one_and_the_others_carry_on():
    one_hot = ControlOneHot(VOCAB, [10, 11, 12, 13])
    tokens = np.array([[10, 5, 12, 6, 11, 7, 13]], dtype="int32")
    layer = keras.layers.RNN(ControlCell([0, 0, 1, 1]), return_sequences=True)
    state = np.asarray(layer(one_hot(tokens)))[0]
    assert state.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0],
                              [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1]]


def test_the_controls_change_every_later_prediction_not_just_the_next():
    _, model = conditioned_rnn()
    x = stream()
    other = x.copy()
    other[:, 0] = 11  # the other tag at the head only
    a, b = np.asarray(model(x)), np.asarray(model(other))
    assert np.abs(a[0, 8] - b[0, 8]).max() > 1e-2  # 8 tokens later, still told apart (row 0 switches tag at 9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_incremental_decoding_matches_the_full_model(cell):
    _, model = conditioned_rnn(cell)
    x = stream()
    full = np.asarray(model(x, training=False))
    cache = make_cache(model)
    state = cache.prefill(x, 3)
    for index in range(3, x.shape[1] + 1):
        logits, _, state = cache.next(x, state, index)
        np.testing.assert_allclose(np.asarray(logits), full[:, index - 1], atol=1e-4)


def test_carried_state_scoring_reads_the_stream_like_one_sequence():
    """Chunks of 5 with the controls' state carried give the whole-stream model's per-token NLL."""
    _, model = conditioned_rnn()
    tokens = stream(30)[0]
    scores = CarriedStateScorer(model, chunk=5, rows=1)(tokens)
    inputs = np.concatenate([[2], tokens[:-1]]).astype("int32")[None]  # <eos> first, as the scorer reads it
    logits = np.asarray(model(inputs, training=False))[0].astype("float64")
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    np.testing.assert_allclose(scores.token_nll, -logp[np.arange(len(tokens)), tokens], rtol=1e-4, atol=1e-4)


def test_stateful_training_model_carries_the_controls_and_the_plain_model_takes_its_weights(tmp_path):
    cfg, plain = conditioned_rnn("lstm", "trainer.carry_state=true", "trainer.batch_size=2")
    stateful = build_training_model(cfg, VOCAB, CONTROLS)
    copy_weights(plain, stateful)
    x = stream()
    whole = np.asarray(plain(x))
    chunks = np.concatenate([np.asarray(stateful(x[:, :8])), np.asarray(stateful(x[:, 8:]))], axis=1)
    np.testing.assert_allclose(chunks, whole, rtol=1e-4, atol=1e-5)  # the tag read in chunk 1 still counts
    again = plain_model(cfg, stateful, VOCAB, CONTROLS)
    np.testing.assert_allclose(np.asarray(again(x)), whole, rtol=1e-4, atol=1e-5)
    path = tmp_path / "model.keras"
    plain.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(x)), whole, rtol=1e-5, atol=1e-6)


def test_off_or_without_controls_the_model_is_the_plain_rnn():
    names = {layer.name for layer in build_model(compose([*tiny("lstm"), "conditioning.every_step=false"]),
                                                 VOCAB, CONTROLS).layers}
    assert "control_state" not in names
    assert "control_state" not in {layer.name for layer in build_model(compose(tiny("lstm")), VOCAB).layers}
