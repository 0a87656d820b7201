"""Warm-started sweeps: configs from another study, the leaderboard or by hand are checked, queued and tagged."""

from __future__ import annotations

import mlflow
import optuna
import pytest
from conftest import compose
from test_sweep import runs, setup_sweep, split, study_of

from lyricslab import sweep
from lyricslab.sweeps.space import SpaceError, parse_space
from lyricslab.sweeps.spec import load_spec
from lyricslab.sweeps.warm_start import WARM_ATTR, check_entries, fit_space, resolve
from lyricslab.tracking.runs import flatten

SPACE = parse_space({
    "model": "choice(lstm, gru, transformer)",
    "optimizer.learning_rate": "tag(log, interval(0.001, 0.01))",
    "model.units": {"space": "choice(128, 256)", "when": {"model": ["lstm", "gru"]}},
    "model.heads": {"space": "choice(2, 4)", "when": {"model": "transformer"}},
})


def test_a_config_is_fitted_to_the_space():
    values, unknown = fit_space(SPACE, {}, {"model": "gru", "optimizer.learning_rate": "0.003", "model.units": "256",
                                            "model.heads": 4, "trainer.seq_len": 64})
    assert values == {"model": "gru", "optimizer.learning_rate": 0.003, "model.units": 256}  # heads: RNN, not used
    assert unknown == ["trainer.seq_len"]
    assert fit_space(SPACE, {}, {"model": "transformer", "model.heads": "2"})[0] == {"model": "transformer",
                                                                                   "model.heads": 2}
    for bad, message in (({"model": "rnn"}, "not one of"), ({"optimizer.learning_rate": 0.5}, "outside"),
                         ({"model": "lstm", "model.units": 64}, "not one of")):
        with pytest.raises(ValueError, match=message):
            fit_space(SPACE, {}, bad)


@pytest.mark.parametrize("raw, message", [
    ("demo", "must be a list"), ([{"best": 3}], "exactly one of"), ([{"study": "a", "params": {}}], "exactly one of"),
    ([{"study": "a", "best": 0}], "best must be a whole number"), ([{"overrides": ["model"]}], "key=value"),
])
def test_bad_warm_start_entries_are_one_line_errors(raw, message):
    with pytest.raises(SpaceError, match=message):
        check_entries(raw)


def spec_with(tmp_path, warm, **over):
    path = tmp_path / "w.yaml"
    path.write_text("study_name: w\nn_trials: 4\nparams:\n  model: choice(lstm, gru, transformer)\n"
                    "  optimizer.learning_rate: tag(log, interval(0.001, 0.01))\n"
                    "  model.units: {space: 'choice(128, 256)', when: {model: [lstm, gru]}}\n")
    spec = load_spec(str(path), {"storage": f"journal:{tmp_path}/w.log", **over})
    spec.warm_start = check_entries(warm)
    return spec


def test_explicit_configs_must_fit(tmp_path):
    spec = spec_with(tmp_path, [{"overrides": ["model=gru", "optimizer.learning_rate=0.004"]},
                                {"params": {"model": "lstm", "model.units": 128}}])
    configs, notes = resolve(spec, tmp_path)
    assert [(c.params, c.source) for c in configs] == [
        ({"model": "gru", "optimizer.learning_rate": 0.004}, "explicit #1"),
        ({"model": "lstm", "model.units": 128}, "explicit #2")] and notes == []
    with pytest.raises(SpaceError, match=r"model\.unitz not searched by this sweep"):
        resolve(spec_with(tmp_path, [{"params": {"model.unitz": 128}}]), tmp_path)
    with pytest.raises(SpaceError, match="outside"):
        resolve(spec_with(tmp_path, [{"params": {"optimizer.learning_rate": 1.0}}]), tmp_path)


def test_best_trials_of_another_study_best_first_and_misfits_skipped(tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "old.log")))
    old = optuna.create_study(study_name="old", storage=storage)
    dists = {"model": CategoricalDistribution(["lstm", "gru", "simple_rnn"]),
             "optimizer.learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
    for value, model, lr in ((2.5, "lstm", 0.002), (2.1, "gru", 0.005), (1.9, "simple_rnn", 0.003), (2.3, "gru", 0.05)):
        old.add_trial(optuna.trial.create_trial(params={"model": model, "optimizer.learning_rate": lr},
                                                distributions=dists, value=value))
    spec = spec_with(tmp_path, [{"study": "old", "best": 3, "storage": f"journal:{tmp_path}/old.log"}])
    configs, notes = resolve(spec, tmp_path)
    # Best three: 1.9 (simple_rnn: not in this space, skipped), 2.1, 2.3 (lr 0.05: outside, skipped).
    assert [c.params for c in configs] == [{"model": "gru", "optimizer.learning_rate": 0.005}]
    assert configs[0].source == "study old trial 1 (value 2.1)"
    assert len(notes) == 2 and "simple_rnn" in notes[0] and "outside" in notes[1]
    with pytest.raises(SpaceError, match="no study named 'nope'"):
        resolve(spec_with(tmp_path, [{"study": "nope"}]), tmp_path)


def test_top_rows_of_the_leaderboard_with_their_config_group_options(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("board")
    for bpc, overrides in ((2.4, ["model=lstm", "model.units=256"]), (2.0, ["model=gru", "model.units=128",
                                                                              "optimizer.learning_rate=0.004"]),
                           (2.2, ["model=transformer"])):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_params(flatten(compose(overrides)))
            mlflow.log_metric("best_val_bpc", bpc)
    configs, notes = resolve(spec_with(tmp_path, [{"leaderboard": "board", "top": 2}]), tmp_path)
    assert [c.params for c in configs] == [{"model": "gru", "optimizer.learning_rate": 0.004, "model.units": 128},
                                           {"model": "transformer", "optimizer.learning_rate": 0.002}]
    assert configs[0].source.startswith("leaderboard board #1 run ") and notes == []


def test_command_line_warm_starts(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("study_name: w\nparams:\n  model: choice(lstm, gru)\n")
    _, _, _, spec_over, hydra_over = sweep.parse_args([f"sweep={path}", "warm_start.study=old", "warm_start.best=2"])
    assert sweep.load(str(path), spec_over, hydra_over, check=False).warm_start == [{"study": "old", "best": 2}]
    _, _, _, spec_over, hydra_over = sweep.parse_args([f"sweep={path}", "warm_start=[{leaderboard: all, top: 3}]"])
    assert sweep.load(str(path), spec_over, hydra_over, check=False).warm_start == [{"leaderboard": "all", "top": 3}]


def test_warm_started_trials_run_first_and_are_tagged(tmp_path, no_plots, capsys):
    args = setup_sweep(tmp_path, n=2)
    sweep_file = tmp_path / "t.yaml"
    sweep_file.write_text(sweep_file.read_text() + "warm_start:\n  - params: {model: gru, optimizer.learning_rate: 0.004}\n")
    assert sweep.main(args) == 0
    assert "warm start: trial 0 <- explicit #1: model=gru optimizer.learning_rate=0.004" in capsys.readouterr().out
    trials = study_of(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params == {"model": "gru", "optimizer.learning_rate": 0.004}
    assert trials[0].user_attrs[WARM_ATTR] == "explicit #1" and WARM_ATTR not in trials[1].user_attrs
    parents, children = split(runs(tmp_path))
    assert parents[0].data.tags["warm_start.trial_0"] == "explicit #1"
    by_trial = {c.data.tags["trial"]: c for c in children}
    assert by_trial["0"].data.tags[WARM_ATTR] == "explicit #1" and WARM_ATTR not in by_trial["1"].data.tags
    assert by_trial["0"].data.params["model.name"] == "gru"
    # A resume queues nothing twice.
    assert sweep.main([*args, "n_trials=3"]) == 0
    assert len([t for t in study_of(tmp_path).trials if WARM_ATTR in t.user_attrs]) == 1


@pytest.fixture
def no_plots(monkeypatch):
    from lyricslab.sweeps import parent_run as report

    monkeypatch.setattr(report, "_plots", lambda study, spec, out: [])
