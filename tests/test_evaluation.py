"""Full-context scoring is exact: every token once, padding excluded, equal to a direct computation."""

import math

import keras
import numpy as np
import pytest
from conftest import compose, sharpen, tiny

from lyricslab.models import build_model
from lyricslab.scoring.scorers import (
    CarriedStateScorer,
    SlidingWindowScorer,
    full_context_scorer,
    score_windows,
)
from lyricslab.text.windows import (
    make_windows,
    parallel_streams,
    sliding_windows,
    with_start,
)

VOCAB = 20


def random_stream(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, VOCAB, size=length).astype(np.int32)


def rows_nll(model: keras.Model, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Total NLL of the weighted targets of a batch of rows, from one model call (float64 log-softmax here).

    Compare like with like (same batch shape): with scaled-up weights an RNN amplifies the
    last-bit differences between kernels for different batch sizes.
    """
    logits = np.asarray(model(x, training=False), dtype=np.float64)
    top = logits.max(-1)
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return float(((np.log(np.exp(logits - top[..., None]).sum(-1)) + top - picked) * w).sum())


def direct_nll(model: keras.Model, stream: np.ndarray) -> float:
    """Total NLL of the whole stream from one model call over all of it."""
    tokens = with_start(stream)
    return rows_nll(model, tokens[None, :-1], tokens[None, 1:], np.ones((1, len(tokens) - 1)))


def tiny_model(name: str, *overrides: str) -> tuple[keras.Model, object]:
    """A tiny untrained model whose weights are scaled up: at initialisation context barely changes
    the scores, and a scorer that dropped the context would pass the equality tests unnoticed."""
    cfg = compose([*tiny(name), *overrides])
    keras.utils.set_random_seed(0)
    model = build_model(cfg, VOCAB)
    sharpen(model)
    return model, cfg


@pytest.mark.parametrize("length,context,stride", [(5, 8, 4), (8, 8, 4), (9, 8, 4), (100, 8, 3), (64, 16, 16),
                                                   (33, 8, 1)])
def test_sliding_windows_score_each_token_once_in_order(length, context, stride):
    stream = random_stream(length)
    targets = with_start(stream)[1:]
    scored_targets, scored_positions = [], []
    for batch in sliding_windows(stream, context, stride, batch_size=3):
        assert batch.x.shape == batch.y.shape == (len(batch.x), context)
        for i, (y, w) in enumerate(zip(batch.y, batch.w)):
            where = np.flatnonzero(w)
            scored_targets.append(y[where])
            scored_positions.append(where)
    assert np.concatenate(scored_targets).tolist() == targets.tolist()  # every target once, in order
    for positions in scored_positions[1:]:  # past the first window, at least context - stride tokens of context
        assert positions.min() >= context - stride


@pytest.mark.parametrize("length,rows,chunk", [(1, 4, 8), (37, 4, 8), (64, 2, 8), (500, 7, 16)])
def test_parallel_streams_cover_the_stream_contiguously(length, rows, chunk):
    stream = random_stream(length)
    laid = parallel_streams(stream, rows, chunk)
    assert laid.x.shape[1] % chunk == 0
    assert laid.w.sum() == length
    assert laid.y[laid.w > 0].tolist() == with_start(stream)[1:].tolist()  # row-major order = stream order
    assert laid.x[laid.w > 0].tolist() == with_start(stream)[:-1].tolist()


def test_empty_split_and_bad_stride_are_clear_errors():
    with pytest.raises(ValueError, match="no tokens to score"):
        parallel_streams(np.zeros(0, np.int32), 4, 8)
    model, cfg = tiny_model("transformer")
    with pytest.raises(ValueError, match="trainer.eval_stride must be between 1 and the context"):
        SlidingWindowScorer(model, stride=cfg.model.context + 1, batch_size=4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_carried_state_chunks_equal_one_call_over_the_whole_stream(cell):
    model, _ = tiny_model(cell)
    stream = random_stream(203)
    one_row = CarriedStateScorer(model, chunk=8, rows=1)(stream)  # 26 chunks, state carried across them
    assert one_row.tokens == len(stream)
    assert one_row.nll_sum == pytest.approx(direct_nll(model, stream), rel=1e-5)
    windowed = score_windows(model, make_windows(stream, 8, pad_last=True), batch_size=4)
    assert abs(windowed.nll_sum / one_row.nll_sum - 1) > 1e-3  # context matters for this model
    # Several rows: each row is one contiguous piece of the stream, scored from an empty state.
    laid = parallel_streams(stream, 3, 8)
    three_rows = CarriedStateScorer(model, chunk=8, rows=3)(stream)
    assert three_rows.tokens == len(stream)
    assert three_rows.nll_sum == pytest.approx(rows_nll(model, laid.x, laid.y, laid.w), rel=1e-5)



def test_transformer_sliding_window_equals_direct_call_within_the_context():
    model, cfg = tiny_model("transformer")
    stream = random_stream(cfg.model.context - 7)  # shorter than the context: one window, right-padded
    scores = SlidingWindowScorer(model, stride=8, batch_size=4)(stream)
    assert scores.tokens == len(stream)
    assert scores.nll_sum == pytest.approx(direct_nll(model, stream), rel=1e-5)


def test_transformer_stride_equal_to_context_is_the_windowed_score():
    model, cfg = tiny_model("transformer")
    stream = random_stream(5 * cfg.model.context + 3)
    full = SlidingWindowScorer(model, stride=cfg.model.context, batch_size=4)(stream)
    windowed = score_windows(model, make_windows(stream, cfg.model.context, pad_last=True), batch_size=4)
    assert full.tokens == windowed.tokens == len(stream)
    assert full.nll_sum == pytest.approx(windowed.nll_sum, rel=1e-5)
    overlapping = SlidingWindowScorer(model, stride=None, batch_size=4)  # default: half the context
    assert overlapping.stride == cfg.model.context // 2
    more_context = overlapping(stream)
    assert more_context.tokens == len(stream)
    assert abs(more_context.nll_sum / full.nll_sum - 1) > 1e-3  # overlapping windows really change the score


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_uniform_logits_give_log2_vocab_bits_per_token(name):
    """Known answer: with the output layer zeroed every logit is 0, so each token costs log2(V) bits."""
    model, cfg = tiny_model(name)
    embedding = model.get_layer("embedding")
    embedding.reverse_embeddings.assign(np.zeros(embedding.reverse_embeddings.shape, dtype="float32"))
    stream, chars = random_stream(150), 397
    for scores in (full_context_scorer(model, cfg.trainer)(stream, keep_predictions=True),
                   score_windows(model, make_windows(stream, cfg.trainer.seq_len, pad_last=True), batch_size=4)):
        metrics = scores.metrics(chars, "val_")
        assert metrics["val_tokens"] == len(stream)
        assert metrics["val_bpc"] == pytest.approx(math.log2(VOCAB) * len(stream) / chars, rel=1e-6)
        assert metrics["val_nll"] == pytest.approx(math.log(VOCAB), rel=1e-6)
        assert metrics["val_perplexity"] == pytest.approx(VOCAB, rel=1e-5)
