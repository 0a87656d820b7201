"""GPT-2 + LoRA from a keras_hub preset (`model=gpt2_lora`), on a tiny preset the project builds itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY, compose

# TINY without the from-scratch knobs (a preset fixes its own layers and width).
GPT2_TINY = [o for o in TINY if not o.startswith(("model.layers", "embedding"))]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    from lyricslab.hub.presets import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("presets") / "tiny-gpt2", vocab_size=600, context=64)


def gpt2_cfg(preset: Path, *overrides: str):
    return compose(["model=gpt2_lora", f"model.preset={preset}", *GPT2_TINY, *overrides])


def random_windows(tokenizer, rows: int = 4, length: int = 33, seed: int = 0) -> np.ndarray:
    """Random text-token windows (no <pad>/<unk>, and <eos> where GPT-2's end token would be)."""
    ids = tokenizer.encode_songs(["[verse]\nPaper lanterns drift across the harbour, slow and bright"] * 8)
    return np.random.default_rng(seed).choice(ids, size=(rows, length)).astype("int32")


def test_tiny_preset_is_a_real_keras_hub_preset(preset):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone.from_preset(str(preset))
    bpe = keras_hub.tokenizers.GPT2Tokenizer.from_preset(str(preset))
    assert backbone.num_layers == 2 and backbone.vocabulary_size == bpe.vocabulary_size() == 600
    # keras_hub pads with id 0, so <|endoftext|> must not be 0: like the real GPT-2, it is the last id.
    assert bpe.end_token_id == 599 and bpe.id_to_token(0) != "<|endoftext|>"


def test_gpt2_tokenizer_is_lossless_and_keeps_lyricslab_special_ids(preset):
    import keras_hub

    from lyricslab.hub.presets import demo_texts
    from lyricslab.text.factory import load_tokenizer
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer
    from lyricslab.text.tokenizers import EOS_ID

    tok = GPT2BPETokenizer.from_preset(preset)
    songs = demo_texts()[:10] + ["Ünïcödé ☃ never seen, [chorus]\n!#\"$"]
    stream = tok.encode_songs(songs)
    assert tok.decode(stream) == "\n".join(songs) + "\n"  # lossless: bits/char is a true code length
    assert (stream >= EOS_ID).all() and (stream == EOS_ID).sum() == len(songs)  # never <pad>/<unk>; one <eos> a song
    bpe = keras_hub.tokenizers.GPT2Tokenizer.from_preset(str(preset))
    np.testing.assert_array_equal(tok.encode(songs[0]), np.asarray(bpe.tokenize(songs[0])) + 3)  # GPT-2 id + 3
    assert tok.vocab_size == 603
    # Line ends read off the byte-level vocabulary are the ones decoding every id finds (the slow way).
    from lyricslab.text.tokenizers import Tokenizer

    line_ends = tok.line_end_ids()
    assert sorted(line_ends) == Tokenizer.line_end_ids(tok) and EOS_ID in line_ends and len(line_ends) > 1
    again = load_tokenizer(tok.save(Path(str(preset) + "-tok")))  # from the bundle's copy, no preset needed
    np.testing.assert_array_equal(again.encode_songs(songs), stream)


def fit_one_step(model, x, learning_rate=0.05):
    import keras

    from lyricslab.training.train import compile_model

    compile_model(model, keras.optimizers.AdamW(learning_rate))
    model.fit(x[:, :-1], x[:, 1:], epochs=1, batch_size=len(x), verbose=0)


def test_lora_step_then_save_reloads_with_safe_mode_to_the_same_logits(preset, tmp_path):
    import keras

    from lyricslab.hub.presets import load_backbone
    from lyricslab.models import build_model
    from lyricslab.models.gpt2 import PresetCausalLM
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer

    keras.utils.set_random_seed(0)
    tok = GPT2BPETokenizer.from_preset(preset)
    model = build_model(gpt2_cfg(preset), tok.vocab_size)
    x = random_windows(tok)
    before = {v.path: np.array(v) for v in model.weights}
    fit_one_step(model, x)
    changed = {v.path for v in model.weights if not np.array_equal(np.array(v), before[v.path])}
    # Only the adapters learn: the adapted layers' biases stay frozen (keras-hub#2701), as does the rest.
    assert changed and all(p.endswith(("/lora_kernel_a", "/lora_kernel_b")) for p in changed), sorted(changed)
    logits = np.asarray(model(x[:, :-1]))

    model.save(tmp_path / "model.keras")  # merges LoRA into the kernels
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(reloaded, PresetCausalLM) and not any("lora" in v.path for v in reloaded.weights)
    np.testing.assert_allclose(np.asarray(reloaded(x[:, :-1])), logits, atol=1e-5)

    # The small adapters file + the untouched preset is the same fine-tuned model.
    lora = model.save_adapters(tmp_path)
    assert lora.stat().st_size < (tmp_path / "model.keras").stat().st_size / 10
    backbone = load_backbone(preset, "gpt2")
    backbone.load_lora_weights(str(lora))
    np.testing.assert_allclose(np.asarray(PresetCausalLM(backbone, tok.end_token_id)(x[:, :-1])), logits, atol=1e-5)


def test_full_fine_tuning_trains_every_weight(preset):
    from lyricslab.models import build_model
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer

    tok = GPT2BPETokenizer.from_preset(preset)
    lora = build_model(gpt2_cfg(preset), tok.vocab_size)
    full = build_model(gpt2_cfg(preset, "model.lora_rank=null"), tok.vocab_size)
    count = lambda ws: sum(int(np.prod(w.shape)) for w in ws)  # noqa: E731
    assert count(full.trainable_weights) == full.count_params()
    assert 0 < count(lora.trainable_weights) < full.count_params() / 20


def test_logits_are_gpt2s_softmax_over_lyricslab_ids(preset):
    """<eos> carries <|endoftext|>'s probability; <pad>, <unk> and the end token's shifted slot none."""
    import keras

    from lyricslab.models import build_model
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer

    tok = GPT2BPETokenizer.from_preset(preset)
    model = build_model(gpt2_cfg(preset), tok.vocab_size)
    x = random_windows(tok, rows=2, length=12)
    ours = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
    ids = model.backbone_ids(x)
    hidden = model.backbone({"token_ids": ids, "padding_mask": keras.ops.ones_like(ids)})
    theirs = keras.ops.convert_to_numpy(keras.ops.softmax(model.backbone.token_embedding(hidden, reverse=True)))
    end = tok.end_token_id
    np.testing.assert_allclose(ours[..., 2], theirs[..., end], rtol=1e-5)
    np.testing.assert_allclose(ours[..., 3:], np.where(np.arange(600) == end, 0, theirs), rtol=1e-5, atol=1e-9)
    assert ours[..., :2].max() == 0.0


def test_cached_decoding_matches_the_full_model(preset):
    from lyricslab.models import build_model
    from lyricslab.models.decoding import make_cache
    from lyricslab.models.gpt2 import GPT2Cache
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer

    tok = GPT2BPETokenizer.from_preset(preset)
    model = build_model(gpt2_cfg(preset), tok.vocab_size)
    cache = make_cache(model)
    assert isinstance(cache, GPT2Cache) and cache.context == 64
    x = random_windows(tok, rows=2, length=20)
    full = np.asarray(model(x, training=False))
    padded = x.copy()
    padded[:, 5:] = 0
    state = cache.prefill(padded, 5)
    for index in range(5, x.shape[1] + 1):
        logits, _, state = cache.next(x, state, index)
        np.testing.assert_allclose(np.asarray(logits), full[:, index - 1], atol=1e-4)


@pytest.fixture(scope="module")
def trained_gpt2(preset, tmp_path_factory):
    import mlflow

    from lyricslab.training.train import train

    tmp = tmp_path_factory.mktemp("gpt2run")
    store = [f"tracking.uri=sqlite:///{tmp}/mlruns/mlflow.db", f"tracking.artifact_root={tmp}/mlruns/artifacts",
             f"data.cache_dir={tmp}/cache"]
    cfg = gpt2_cfg(preset, "data_size=tiny", *store)
    metrics = train(cfg)
    return mlflow.last_active_run().info.run_id, store[0].split("=", 1)[1], metrics, cfg


def test_training_logs_lora_parameters_and_keeps_the_adapters(trained_gpt2, preset, tmp_path):
    import json

    import mlflow

    from lyricslab.data import load_splits
    from lyricslab.hub.presets import load_backbone
    from lyricslab.models.gpt2 import PresetCausalLM
    from lyricslab.scoring.scorers import full_context_scorer
    from lyricslab.text.preset_tokenizers import GPT2BPETokenizer

    run_id, uri, metrics, cfg = trained_gpt2
    # Rank-4 adapters on query and value of each of the 2 layers. Keras' EinsumDense kernel there is
    # (width, heads, head_dim); its adapters are A (width, heads, 4) and B (4, head_dim). Nothing else
    # trains: the adapted layers' biases stay frozen.
    shape = json.loads((preset / "config.json").read_text())["config"]
    width, heads = shape["hidden_dim"], shape["num_heads"]
    assert metrics["trainable_params"] == 2 * 2 * (width * heads * 4 + 4 * width // heads)  # 2560
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert int(run.data.params["model.trainable_params"]) == metrics["trainable_params"]
    files = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run_id, "model")}
    assert {"model/model.keras", "model/lora.lora.h5", "model/tokenizer"} <= files
    # The untouched preset plus the adapters file is the fine-tuned model: it scores the run's test_bpc,
    # and the preset alone does not.
    lora = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model/lora.lora.h5",
                                               dst_path=str(tmp_path), tracking_uri=uri)
    tok = GPT2BPETokenizer.from_preset(preset)
    stream = tok.encode_songs(load_splits(cfg.data, cfg.data_size.songs).test)
    chars = sum(len(song) + 1 for song in load_splits(cfg.data, cfg.data_size.songs).test)

    def test_bpc(with_adapters: bool) -> float:
        backbone = load_backbone(preset, "gpt2")
        if with_adapters:
            backbone.load_lora_weights(lora)
        model = PresetCausalLM(backbone, tok.end_token_id)
        return full_context_scorer(model, cfg.trainer)(stream).metrics(chars, "")["bpc"]

    assert test_bpc(True) == pytest.approx(metrics["test_bpc"], rel=1e-6)
    assert test_bpc(False) != pytest.approx(metrics["test_bpc"], rel=1e-5)  # 4 small steps: about 1e-4 apart


def test_generate_and_evaluate_from_the_run(trained_gpt2, tmp_path, capsys):
    import mlflow
    import pandas as pd

    from lyricslab import evaluate, generate
    from lyricslab.data import load_splits
    from lyricslab.data.prepare import demo_path

    run_id, uri, metrics, cfg = trained_gpt2
    args = [f"run_id={run_id}", f"tracking.uri={uri}", "max_tokens=20", "seed=3", "prompt=I remember"]
    assert generate.main([*args, "--out", str(tmp_path / "a.txt")]) == 0
    assert generate.main([*args, "--out", str(tmp_path / "b.txt")]) == 0
    text = (tmp_path / "a.txt").read_text()
    assert "[Verse]\nI remember" in text and text == (tmp_path / "b.txt").read_text()
    # A new process, as a user runs it: the GPT-2 adapter class must be registered before the model loads.
    fresh = subprocess.run([sys.executable, "-m", "lyricslab.generate", *args, f"out={tmp_path / 'c.txt'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert (tmp_path / "c.txt").read_text() == text
    # evaluate on the run's held-out test songs, from the CSV through the saved (merged) model, scores what
    # training scored with the model in memory.
    splits = load_splits(cfg.data, cfg.data_size.songs)
    test_ids = set(splits.frame.loc[splits.frame["split"] == "test", "id"].astype(str))
    raw = pd.read_csv(demo_path(), dtype=str, keep_default_na=False)
    raw[raw["id"].isin(test_ids)].to_csv(tmp_path / "held_out.csv", index=False)
    assert evaluate.main([f"run_id={run_id}", f"tracking.uri={uri}", f"csv={tmp_path / 'held_out.csv'}",
                          "samples=false"]) == 0
    out = capsys.readouterr().out
    bpc = float(next(line for line in out.splitlines() if line.startswith("| bpc |")).split("|")[2])
    logged = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["eval_held_out_songs"] == len(test_ids) == len(splits.test)
    assert logged["eval_held_out_bpc"] == pytest.approx(metrics["test_bpc"], rel=1e-4)
    assert bpc == pytest.approx(metrics["test_bpc"], abs=1e-4)  # the printed table, to 4 decimals


def test_lora_training_flops_skip_the_weight_gradients(preset):
    from lyricslab.training.flops import (
        forward_flops_per_token,
        training_flops_per_token,
    )

    lora, full = gpt2_cfg(preset), gpt2_cfg(preset, "model.lora_rank=null")
    forward = forward_flops_per_token(full, 603)
    assert forward > 2 * 64 * 603  # the layers count, not just the output head
    assert training_flops_per_token(full, 603) == 3 * forward and training_flops_per_token(lora, 603) == 2 * forward


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lyricslab.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_missing_preset_is_one_line_that_says_how_to_get_one(tmp_path):
    out = run_cli("model=gpt2_lora", f"model.preset={tmp_path}/nowhere")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: model.preset={tmp_path}/nowhere is neither a preset folder")
    assert f"python -m lyricslab.presets tiny-gpt2 {tmp_path}/nowhere" in line and "gpt2_base_en" in line


def test_preset_errors(preset, tmp_path, monkeypatch):
    from lyricslab.hub.presets import PresetError, resolve_preset
    from lyricslab.training.checks import ConfigError, check_config

    (tmp_path / "gpt2_base_en").mkdir()
    with pytest.raises(PresetError, match="not a keras_hub preset"):
        resolve_preset(tmp_path / "gpt2_base_en", "gpt2")
    # A relative path spelled like a built-in name is this folder, made absolute (keras_hub would ask Kaggle).
    monkeypatch.chdir(preset.parent)
    assert resolve_preset(preset.name, "gpt2") == str(preset)
    with pytest.raises(ConfigError, match="tokenizer.kind=char"):
        check_config(gpt2_cfg(preset, "tokenizer=char"))
    with pytest.raises(ConfigError, match="model.lora_rank"):
        check_config(gpt2_cfg(preset, "model.lora_rank=0"))


def test_presets_cli_refuses_bad_arguments(tmp_path):
    from lyricslab import presets

    assert presets.main(["tiny-gpt3", str(tmp_path)]) == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert presets.main(["tiny-gpt2", str(tmp_path / "taken")]) == 2
    assert presets.main(["tiny-gpt2", str(tmp_path / "new"), "vocab_size=12"]) == 2


def test_gpt2_lora_sweep_trials_compose_to_valid_configs():
    import optuna
    from conftest import CONF
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lyricslab.sweeps.space import sample, to_overrides
    from lyricslab.sweeps.spec import load_spec, validate

    spec = load_spec("gpt2_lora")
    validate(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for _ in range(12):
            trial = study.ask()
            cfg = hydra_compose("config", overrides=[*spec.fixed, *to_overrides(sample(trial, spec.space))])
            assert cfg.model.family == "gpt2" and cfg.tokenizer.kind == "gpt2"
            assert set(cfg.model.lora_targets) <= {"query", "key", "value", "attention_output"}
            assert cfg.model.lora_rank >= 1 and cfg.trainer.budget_minutes > 0
            seen.add(tuple(cfg.model.lora_targets))
    assert len(seen) > 1  # the target layers really vary
