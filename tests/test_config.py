"""Every option of every config group composes, and each option file says what it is."""

from pathlib import Path

import pytest

from conftest import CONF, compose

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def test_groups_are_the_documented_ones():
    assert GROUPS == ["data", "data_size", "dropout", "embedding", "model", "optimizer", "scheduler", "tokenizer"]
    assert {o for g, o in OPTIONS if g == "model"} == {"simple_rnn", "lstm", "gru", "transformer"}
    assert {o for g, o in OPTIONS if g == "scheduler"} == {"constant", "exponential", "cosine", "warmup_cosine",
                                                           "plateau"}


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_resolves(group, option):
    from omegaconf import OmegaConf

    cfg = compose([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved[group] is not None
    first_line = (CONF / group / f"{option}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# ") and len(first_line) > 10, f"{group}/{option}.yaml needs a one-line comment"


def test_defaults_and_sections():
    cfg = compose()
    assert cfg.optimizer._target_ == "keras.optimizers.RMSprop"  # the original study's optimizer
    assert cfg.data.source == "demo"
    assert cfg.tracking.uri == "sqlite:///mlruns/mlflow.db"
    for key in ("epochs", "batch_size", "seq_len", "patience", "gradient_clip", "seed", "precision"):
        assert key in cfg.trainer
    assert compose(["dropout=heavy", "dropout.rate=0.33"]).dropout.rate == 0.33
    assert compose(["model=transformer", "trainer.seq_len=64"]).model.context == 64


def test_data_sizes_are_song_counts():
    sizes = [compose([f"data_size={s}"]).data_size.songs for s in ("tiny", "small", "medium", "large")]
    assert sizes == sorted(sizes) and all(isinstance(s, int) for s in sizes)
    assert compose(["data_size=full"]).data_size.songs is None
