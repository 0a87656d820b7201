"""Every option of every config group composes, and each option file says what it is."""


import pytest
from conftest import CONF, compose

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def test_groups_are_the_documented_ones():
    assert GROUPS == ["data", "data_size", "dropout", "embedding", "experiment", "model", "optimizer", "scheduler",
                      "tokenizer", "tracking"]
    assert {o for g, o in OPTIONS if g == "experiment"} == {"lyrics_lstm", "lyrics_transformer", "lyrics_gpu"}
    assert {o for g, o in OPTIONS if g == "model"} == {"simple_rnn", "lstm", "gru", "transformer", "gpt2_lora", "bert_mlm"}
    assert {o for g, o in OPTIONS if g == "scheduler"} == {"constant", "exponential", "cosine", "warmup_cosine",
                                                           "plateau"}


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_resolves(group, option):
    from omegaconf import OmegaConf

    cfg = compose([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if group == "experiment":  # a recipe is overlaid on the whole config (@package _global_), not one section
        assert resolved["data"]["source"] == "genius" and resolved["trainer"]["budget_minutes"] > 0
        family = {"lyrics_gpu": "transformer"}.get(option, option.removeprefix("lyrics_"))
        assert resolved["model"]["name"] == family
    else:
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
    # A command-line value replaces one key; the rest of the group still comes from the chosen file.
    heavy = compose(["dropout=heavy", "dropout.rate=0.33"]).dropout
    assert heavy.rate == 0.33 and heavy.recurrent == 0.2  # 0.2 from heavy.yaml, not standard.yaml's 0.0
    # Interpolations follow the composed values, not the file's literals.
    transformer = compose(["model=transformer", "trainer.seq_len=48", "embedding=small"]).model
    assert transformer.context == 48 and transformer.width == 64


def default_options() -> dict[str, str]:
    from omegaconf import OmegaConf

    entries = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))["defaults"]
    # experiment: null (no recipe unless one is asked for)
    return {k: v for entry in entries if isinstance(entry, dict) for k, v in entry.items() if k in GROUPS and v}


def test_defaults_come_from_the_files_the_defaults_list_names():
    from omegaconf import OmegaConf

    defaults = default_options()
    assert set(defaults) == set(GROUPS) - {"experiment"} and defaults["model"] == "lstm" and defaults["optimizer"] == "rmsprop"
    cfg = OmegaConf.to_container(compose())
    for group, option in defaults.items():
        own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
        assert {k: cfg[group].get(k) for k in own} == own, f"{group} is not {option}.yaml"


@pytest.mark.parametrize("group,option", [("model", "gru"), ("model", "transformer"), ("dropout", "heavy"),
                                          ("optimizer", "adamw"), ("tokenizer", "word")])
def test_a_group_option_changes_only_the_keys_that_group_owns(group, option):
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(compose())
    chosen = OmegaConf.to_container(compose([f"{group}={option}"]))
    own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    assert chosen[group] == own  # exactly the option's keys: nothing left over from the default option
    assert chosen[group] != base[group]
    assert {k: v for k, v in chosen.items() if k != group} == {k: v for k, v in base.items() if k != group}


def test_data_sizes_are_song_counts():
    sizes = [compose([f"data_size={s}"]).data_size.songs for s in ("tiny", "small", "medium", "large")]
    assert sizes == sorted(sizes) and all(isinstance(s, int) for s in sizes)
    assert compose(["data_size=full"]).data_size.songs is None
