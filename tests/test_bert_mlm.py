"""BERT-family masked LM from a keras_hub preset (`model=bert_mlm`), on a tiny preset the project builds itself."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY, compose

BERT_TINY = [o for o in TINY if not o.startswith(("model.layers", "embedding"))]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    from lyricslab.hub.presets import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("presets") / "tiny-bert", vocab_size=400, context=64)


def fake_tok():
    return SimpleNamespace(pad_id=0, cls_id=2, eos_id=3, mask_id=4)


def test_masked_set_masks_only_text_tokens_and_is_reproducible():
    from lyricslab.training.masked_lm import MaskedSet, pack_rows

    stream = np.random.default_rng(0).integers(5, 50, size=3000).astype(np.int32)
    rows = pack_rows(stream, 32, fake_tok())
    assert rows.shape == (100, 32) and (rows[:, 0] == 2).all()
    np.testing.assert_array_equal(rows[:, 1:31].ravel()[:3000], stream)  # every token once, in order
    a, b = MaskedSet(rows, fake_tok(), 0.15), MaskedSet(rows, fake_tok(), 0.15)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    chosen = a.weights > 0
    picked = np.take_along_axis(rows, a.positions, axis=1)[chosen]
    assert (picked >= 5).all()  # never [PAD], [CLS] or [SEP]
    assert 0.12 < chosen.sum() / 3000 < 0.18
    assert (np.take_along_axis(a.tokens, a.positions, axis=1)[chosen] == 4).all()  # all [MASK] when scoring


def test_masked_metrics_are_accuracy_and_macro_prf_over_the_masked_tokens():
    from sklearn.metrics import precision_recall_fscore_support

    from lyricslab.training.masked_lm import MaskedSet, masked_scores, pack_rows

    rows = pack_rows(np.random.default_rng(1).integers(5, 12, size=600).astype(np.int32), 16, fake_tok())
    data = MaskedSet(rows, fake_tok(), 0.3)

    def oracle(right_share):
        """Predicts the true token for the first `right_share` of each row's slots, token 5 otherwise."""
        def model(inputs, training=False):
            targets = np.take_along_axis(rows[:len(inputs["token_ids"])], np.asarray(inputs["mask_positions"]), 1)
            guess = np.where(np.arange(targets.shape[1]) < right_share * targets.shape[1], targets, 5)
            return np.eye(12, dtype=np.float32)[guess] * 10.0
        return model

    perfect = masked_scores(oracle(1.0), data, 1000, "t_", keep_predictions=True)  # one batch: rows line up
    assert perfect["t_masked_accuracy"] == 1.0 and perfect["t_f1_macro"] == 1.0
    assert perfect["t_masked_tokens"] == (data.weights > 0).sum()
    half = masked_scores(oracle(0.5), data, 1000, "", keep_predictions=True)
    truth = data.targets[data.weights > 0]
    guess = np.where(np.arange(data.targets.shape[1]) < 0.5 * data.targets.shape[1], data.targets, 5)[data.weights > 0]
    p, r, f, _ = precision_recall_fscore_support(truth, guess, average="macro", zero_division=0)
    assert half["masked_accuracy"] == pytest.approx((truth == guess).mean())
    assert (half["precision_macro"], half["recall_macro"], half["f1_macro"]) == pytest.approx((p, r, f))
    assert 0 < half["masked_accuracy"] < 1


@pytest.fixture(scope="module")
def trained_bert(preset, tmp_path_factory):
    import mlflow

    from lyricslab.training.train import train

    tmp = tmp_path_factory.mktemp("bertrun")
    store = [f"tracking.uri=sqlite:///{tmp}/mlruns/mlflow.db", f"tracking.artifact_root={tmp}/mlruns/artifacts",
             f"data.cache_dir={tmp}/cache"]
    cfg = compose(["model=bert_mlm", f"model.preset={preset}", *BERT_TINY, "data_size=tiny", *store])
    metrics = train(cfg)
    return mlflow.last_active_run().info.run_id, store[0].split("=", 1)[1], metrics, cfg


def test_bert_run_reports_masked_metrics_and_reproduces_them_from_the_bundle(trained_bert):
    import mlflow

    from lyricslab.data import load_splits
    from lyricslab.tracking.bundle import load_run
    from lyricslab.training.masked_lm import evaluate_songs

    run_id, uri, metrics, cfg = trained_bert
    assert "test_bpc" not in metrics and "best_val_bpc" not in metrics  # a masked LM has no bits/char
    assert 0 < metrics["trainable_params"] < metrics["params"] and metrics["test_masked_tokens"] > 50
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(run_id)
    assert run.data.tags["objective"] == "masked_lm"
    bundle = load_run(run_id)  # safe_mode reload of the merged model
    test = load_splits(cfg.data, cfg.data_size.songs).test
    again = evaluate_songs(bundle, test)
    assert again["masked_accuracy"] == pytest.approx(metrics["test_masked_accuracy"])
    assert again["f1_macro"] == pytest.approx(metrics["test_f1_macro"])
    assert again["masked_nll"] == pytest.approx(metrics["test_masked_nll"], rel=1e-4)

    # The test figures by brute force: the saved model asked about one row at a time, for exactly that row's
    # masked slots (the fixed-seed masks of the test split's rows), then counted here: accuracy, mean NLL,
    # and macro precision/recall/F1 over the labels that occur as a truth or a guess.
    from lyricslab.training.masked_lm import MaskedSet, model_inputs, pack_rows

    tok = bundle.tokenizer
    data = MaskedSet(pack_rows(tok.encode_songs(test), int(cfg.trainer.seq_len), tok), tok, float(cfg.model.mask_rate))
    truth, guess, nll = [], [], []
    for i in range(len(data.tokens)):
        slots = data.positions[i][data.weights[i] > 0]
        if not len(slots):
            continue
        row = data.tokens[i:i + 1]
        assert (row[0, slots] == tok.mask_id).all() and (row[0] != tok.mask_id).sum() == len(row[0]) - len(slots)
        logits = np.asarray(bundle.model(model_inputs(row, row != tok.pad_id, slots[None]), training=False),
                            dtype=np.float64)[0]
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        targets = data.targets[i][data.weights[i] > 0]
        truth += targets.tolist()
        guess += logits.argmax(-1).tolist()
        nll += (-log_probs[np.arange(len(slots)), targets]).tolist()
    truth, guess = np.array(truth), np.array(guess)
    assert metrics["test_masked_tokens"] == len(truth)
    assert metrics["test_masked_accuracy"] == pytest.approx((truth == guess).mean())
    assert metrics["test_masked_nll"] == pytest.approx(np.mean(nll), rel=1e-4)
    precision, recall, f1 = [], [], []
    for label in set(truth) | set(guess):
        hits = ((truth == label) & (guess == label)).sum()
        p = hits / (guess == label).sum() if (guess == label).any() else 0.0
        r = hits / (truth == label).sum() if (truth == label).any() else 0.0
        precision, recall, f1 = precision + [p], recall + [r], f1 + [2 * p * r / (p + r) if p + r else 0.0]
    assert (metrics["test_precision_macro"], metrics["test_recall_macro"], metrics["test_f1_macro"]) == pytest.approx(
        (np.mean(precision), np.mean(recall), np.mean(f1)))


def test_bert_generates_by_mask_filling_and_is_marked_on_the_leaderboard(trained_bert, tmp_path, capsys):
    from lyricslab import compare, generate

    run_id, uri, _, _ = trained_bert
    args = [f"run_id={run_id}", f"tracking.uri={uri}", "max_tokens=10", "seed=2", "prompt=paper boats"]
    assert generate.main([*args, "--out", str(tmp_path / "a.txt")]) == 0
    assert generate.main([*args, "--out", str(tmp_path / "b.txt")]) == 0
    text = (tmp_path / "a.txt").read_text()
    assert "[Verse]" in text and "paper boats" in text and "[MASK]" not in text
    assert text == (tmp_path / "b.txt").read_text()
    assert compare.main([f"tracking.uri={uri}", f"out={tmp_path}"]) == 0
    row = next(line for line in (tmp_path / "leaderboard.md").read_text().splitlines() if run_id[:8] in line)
    assert "bert_mlm (masked LM)" in row


def test_a_missing_bert_preset_says_how_to_get_one(tmp_path):
    from lyricslab.training.checks import ConfigError, check_config

    with pytest.raises(ConfigError) as err:
        check_config(compose(["model=bert_mlm", f"model.preset={tmp_path}/none"]))
    assert f"python -m lyricslab.presets tiny-bert {tmp_path}/none" in str(err.value)
    assert "\n" not in str(err.value)
