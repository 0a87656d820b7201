"""Carried-state RNN training (`trainer.carry_state`): the batch layout, the state carried from batch
to batch, the reset at each pass, and a full run that ends on a plain model of any batch size."""

import keras
import mlflow
import numpy as np
import pytest
from conftest import compose, tiny

from lyricslab.text.windows import carried_batches
from lyricslab.training.batches import to_dataset
from lyricslab.training.callbacks import ResetStatesEachPass, sync_fit_state
from lyricslab.training.checks import ConfigError, check_config
from lyricslab.training.train import build_training_model, plain_model, train

VOCAB = 20


@pytest.mark.parametrize("length,rows,chunk", [(200, 4, 8), (97, 3, 5), (64, 2, 16)])
def test_each_row_continues_in_the_next_batch(length, rows, chunk):
    stream = np.arange(1, length + 1, dtype=np.int32) + 10  # ids above the specials, all distinct
    laid = carried_batches(stream, rows, chunk)
    batches = len(laid.x) // rows
    assert len(laid.x) == batches * rows
    for row in range(rows):
        x = np.concatenate([laid.x[k * rows + row] for k in range(batches)])
        y = np.concatenate([laid.y[k * rows + row] for k in range(batches)])
        w = np.concatenate([laid.w[k * rows + row] for k in range(batches)])
        real = w > 0
        assert np.array_equal(y[real][:-1], x[real][1:])  # contiguous from batch to batch
    scored = np.sort(laid.y[laid.w > 0])
    assert np.array_equal(scored, np.sort(stream))  # every token is a target exactly once


def test_too_short_a_stream_for_the_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="lower trainer.batch_size"):
        carried_batches(np.arange(20, dtype=np.int32) + 10, rows=8, chunk=16)


def carried_cfg(*extra):
    return compose([*tiny("lstm"), "trainer.carry_state=true", "trainer.batch_size=2", "trainer.seq_len=6", *extra])


def test_the_state_carries_over_so_chunks_read_like_one_sequence():
    keras.utils.set_random_seed(3)
    cfg = carried_cfg()
    stateful = build_training_model(cfg, VOCAB)
    plain = plain_model(cfg, stateful, VOCAB)
    assert stateful.get_layer("lstm_0").stateful and not plain.get_layer("lstm_0").stateful

    tokens = np.random.default_rng(0).integers(4, VOCAB, size=(2, 12)).astype(np.int32)
    whole = keras.ops.convert_to_numpy(plain(tokens))
    first = keras.ops.convert_to_numpy(stateful(tokens[:, :6]))
    second = keras.ops.convert_to_numpy(stateful(tokens[:, 6:]))  # continues from the first chunk's state
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-4, atol=1e-5)

    stateful.get_layer("lstm_0").reset_state()
    fresh = keras.ops.convert_to_numpy(stateful(tokens[:, 6:]))
    assert not np.allclose(fresh, second, atol=1e-4)  # without the carried state the outputs change
    np.testing.assert_allclose(fresh, keras.ops.convert_to_numpy(plain(tokens[:, 6:])), rtol=1e-4, atol=1e-5)


def test_states_are_reset_where_each_pass_starts():
    cfg = carried_cfg()
    model = build_training_model(cfg, VOCAB)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stream = np.random.default_rng(1).integers(4, VOCAB, size=120).astype(np.int32)
    laid = carried_batches(stream, 2, 6)
    steps = len(laid.x) // 2
    seen = []

    class RecordState(keras.callbacks.Callback):  # runs after the reset, before the step
        def on_train_batch_begin(self, batch, logs=None):
            sync_fit_state(self.model)  # JAX: the state lives outside the variables during fit
            h = keras.ops.convert_to_numpy(self.model.get_layer("lstm_0").states[0])
            seen.append(float(np.abs(h).sum()))

    ds = to_dataset(laid, 2, shuffle=False, seed=0, repeat=True)
    model.fit(ds, epochs=1, steps_per_epoch=2 * steps, verbose=0,
              callbacks=[ResetStatesEachPass(steps), RecordState()])
    assert seen[0] == 0.0 and seen[steps] == 0.0  # both passes start from zero state
    assert all(value > 0 for i, value in enumerate(seen) if i % steps), seen  # carried everywhere else


def test_carried_state_run_trains_scores_and_saves_a_plain_model(store, tmp_path):
    import json
    import math

    from lyricslab.data import load_splits
    from lyricslab.text.tokenizers import EOS_ID

    cfg = compose([*tiny("lstm"), *store, "trainer.carry_state=true", "trainer.steps_per_epoch=null",
                   "trainer.epochs=1", "data_size=tiny"])
    metrics = train(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = mlflow.search_runs(experiment_names=["lyricslab"], output_format="list")[0]
    assert run.data.params["trainer.carry_state"] == "True"
    summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data_summary.json"))
    # One pass: 16 rows read the train split's tokens end to end, in whole 32-token chunks.
    tokens, per_step = summary["train"]["tokens"], 16 * 32
    assert metrics["train_tokens"] == math.ceil(tokens / per_step) * per_step
    from lyricslab.tracking.bundle import load_source

    bundle = load_source(run_id=run.info.run_id)  # the tracking URI set above
    model = bundle.model
    assert not model.get_layer("lstm_0").stateful
    assert model(np.ones((3, 5), np.int32)).shape[0] == 3  # any batch size, unlike the training model
    # The saved plain model, run over the scorer's 16 rows in one call each, gives the run's test_bpc:
    # the trained weights reached it, and the scorer carried its state from chunk to chunk.
    test = load_splits(cfg.data, cfg.data_size.songs).test
    stream = np.concatenate([[EOS_ID], bundle.tokenizer.encode_songs(test)]).astype(np.int32)
    rows = min(16, math.ceil((len(stream) - 1) / 32))
    length = math.ceil((len(stream) - 1) / (rows * 32)) * 32
    x = np.resize(stream[:-1], rows * length).reshape(rows, length)  # past the end: filler, not scored
    y = np.resize(stream[1:], rows * length).reshape(rows, length)
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(model(x), axis=-1)).astype(np.float64)
    nll = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0].ravel()[:len(stream) - 1]
    chars = sum(len(song) + 1 for song in test)
    assert metrics["test_bpc"] == pytest.approx(nll.sum() / math.log(2) / chars, rel=1e-4)


def test_carry_state_is_refused_for_a_transformer():
    with pytest.raises(ConfigError, match="needs an RNN"):
        check_config(compose([*tiny("transformer"), "trainer.carry_state=true"]))
    with pytest.raises(ConfigError, match="true or false"):
        check_config(compose(["trainer.carry_state=maybe"]))
