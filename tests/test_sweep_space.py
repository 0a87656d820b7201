"""Search-space parsing and validation, table-driven."""

import optuna
import pytest

from lyricslab.sweeps import study as sweep_study
from lyricslab.sweeps.space import SpaceError, parse_space, sample, to_overrides
from lyricslab.sweeps.spec import load_spec, validate

D = optuna.distributions


# The Hydra Optuna sweeper plugin's own override table (its test_create_optuna_distribution_from_override),
# as lyricslab's expectations. One deliberate difference: range() excludes its stop, as everywhere
# else in Hydra (range(1,3) sweeps 1, 2); the plugin maps range(1,3) to IntDistribution(1, 3).
PLUGIN_TABLE = [
    ("key=choice(1,2)", D.CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", D.CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", D.CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", D.CategoricalDistribution([1, 2])),
    ("key=range(1,3)", D.IntDistribution(1, 2)),  # plugin: IntDistribution(1, 3)
    ("key=interval(1, 5)", D.FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", D.IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", D.FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", D.IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", D.FloatDistribution(0.5, 4.5, step=1)),  # plugin: high 5.5
]
LYRICSLAB_TABLE = [
    ("choice(lstm, gru)", D.CategoricalDistribution(["lstm", "gru"])),
    ("choice(64, 128)", D.CategoricalDistribution([64, 128])),
    ("interval(0.1, 0.5)", D.FloatDistribution(0.1, 0.5)),
    ("int(interval(1, 4))", D.IntDistribution(1, 4)),
    ("tag(log, interval(1e-4, 1e-2))", D.FloatDistribution(1e-4, 1e-2, log=True)),
    ("int(tag(log, interval(16, 256)))", D.IntDistribution(16, 256, log=True)),
    ("range(1, 4)", D.IntDistribution(1, 3)),
    ("range(1, 10, 3)", D.IntDistribution(1, 7, step=3)),
    ("range(5, 1, -1)", D.IntDistribution(2, 5)),
    ("range(0, 1, 0.1)", D.FloatDistribution(0.0, 0.9, step=0.1)),
]


@pytest.mark.parametrize("text,expected", [(t.removeprefix("key="), e) for t, e in PLUGIN_TABLE + LYRICSLAB_TABLE])
def test_grammar_maps_to_optuna_distributions(text, expected):
    actual = parse_space({"x": text})[0].distribution
    if text.startswith("shuffle("):  # shuffled: the order of the choices is random
        assert isinstance(actual, D.CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


def test_range_samples_the_same_values_as_hydra_in_order():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lyricslab.sweeps.space import grid_values

    for text in ("range(2, 9, 2)", "range(0.5, 3.5)", "range(0, 1, 0.25)"):
        hydra_values = list(OverridesParser.create().parse_override(f"x={text}").sweep_iterator())
        assert grid_values(parse_space({"x": text})[0].distribution) == hydra_values


@pytest.mark.parametrize("params,message", [
    ({"x": "interval(0.5, 0.1)"}, "lower bound must be below"),
    ({"x": "tag(log, interval(0, 1))"}, "lower bound above 0"),
    ({"x": "3"}, "single value, not a search space"),
    ({"x": "choice(a"}, "cannot parse"),
    ({"x": {"when": {"model": "lstm"}}}, "needs `space:`"),
    ({"x": {"space": "choice(1, 2)", "when": {"model": "lstm"}}}, "not a parameter declared above"),
    ({"x": "range(3, 3)"}, "is empty"),
    ({"n": "range(1, 4)", "x": {"space": "choice(1, 2)", "when": {"n": [7]}}}, "can never hold"),
    ({"model": "choice(lstm, gru)", "x": {"space": "choice(1, 2)", "when": {"model": "transformer"}}},
     "can never hold"),
])
def test_invalid_spaces_are_rejected(params, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(params)


def test_conditionals_sample_only_what_applies():
    space = parse_space({"model": "choice(lstm, transformer)",
                         "model.units": {"space": "choice(32, 64)", "when": {"model": ["lstm", "gru"]}},
                         "model.heads": {"space": "choice(2, 4)", "when": {"model": "transformer"}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(12):
        trial = study.ask()
        values = sample(trial, space)
        seen.setdefault(values["model"], set()).update(values)
        study.tell(trial, 1.0)
    assert seen["lstm"] == {"model", "model.units"}
    assert seen["transformer"] == {"model", "model.heads"}
    assert to_overrides({"model": "lstm", "optimizer.learning_rate": 0.001, "embedding.tied": True}) == [
        "model=lstm", "optimizer.learning_rate=0.001", "embedding.tied=true"]


def write_sweep(tmp_path, params: str, fixed: str = "[trainer.epochs=1]"):
    path = tmp_path / "s.yaml"
    path.write_text(f"# test sweep\nn_trials: 2\nfixed: {fixed}\nparams:\n{params}")
    return str(path)


@pytest.mark.parametrize("params,message", [
    ("  modell: choice(lstm)\n", "not a key of the composed config"),
    ("  model: choice(lstm, lstmm)\n", r"unknown option\(s\) \['lstmm'\]"),
    ("  model.unitz: choice(1, 2)\n", "params.model.unitz"),
    ("  model: choice(lstm, transformer)\n  model.heads:\n    space: choice(2)\n    when: {model: lstm}\n",
     r"params.model.heads \(when"),
])
def test_validation_against_the_configs_before_any_trial(tmp_path, params, message):
    spec = load_spec(write_sweep(tmp_path, params))
    with pytest.raises(SpaceError, match=message):
        validate(spec)


def test_shipped_sweeps_are_valid():
    for name in ("demo", "rnn", "transformer", "all"):
        spec = load_spec(name)
        validate(spec)
        assert spec.n_trials >= 1 and spec.space
    families = {c for c in load_spec("all").space[0].distribution.choices}
    assert {"lstm", "transformer"} <= families


def trial_configs(spec, n=12):
    """(searched params, composed config) of n randomly sampled trials, without training."""

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = sweep_study.compose_trial(spec, sample(trial, spec.space, spec.fixed_values))
        out.append((trial.params, cfg))
        study.tell(trial, 1.0)
    return out


def test_a_command_line_override_pins_a_searched_key():
    from lyricslab import sweep

    spec = sweep.load("rnn", {}, ["model.units=32"])
    assert spec.pinned == {"model.units": 32} and "model.units=32" not in spec.fixed
    for params, cfg in trial_configs(spec, 6):
        assert "model.units" not in params and cfg.model.units == 32


def test_a_pinned_key_under_a_condition_applies_only_where_the_condition_holds():
    from lyricslab import sweep

    spec = sweep.load("demo", {}, ["model.units=32"])  # model.units exists for lstm/gru only
    families = set()
    for params, cfg in trial_configs(spec):
        families.add(cfg.model.name)
        assert "model.units" not in params
        if cfg.model.name == "transformer":
            assert "units" not in cfg.model and "model.heads" in params
        else:
            assert cfg.model.units == 32
    assert {"transformer", "lstm"} <= families


def test_conditions_on_a_pinned_key_use_the_pinned_value():
    from lyricslab import sweep

    spec = sweep.load("demo", {}, ["model=transformer"])
    assert "model" not in {p.name for p in spec.space if not p.pinned}
    for params, cfg in trial_configs(spec, 6):
        assert cfg.model.name == "transformer" and "model" not in params
        assert {"model.heads", "model.ff_dim"} <= set(params) and "model.units" not in params
    with pytest.raises(SpaceError, match="model.units=32 is never used"):
        sweep.load("demo", {}, ["model=transformer", "model.units=32"])


@pytest.mark.parametrize("override", ["model.units=[1,2]", "model.units=choice(32,64)"])
def test_a_pin_is_a_single_value(override):
    from lyricslab import sweep

    with pytest.raises(SpaceError, match="can only be pinned to a single value"):
        sweep.load("rnn", {}, [override])
