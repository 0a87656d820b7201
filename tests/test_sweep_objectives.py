"""Sweep objectives are checked against what train() returns, before any trial runs."""

import subprocess
import sys

import pytest
from conftest import ROOT

from lyricslab import sweep
from lyricslab.sweeps import objectives


def sweep_file(tmp_path, objectives_text: str, pruner: str = "median") -> str:
    path = tmp_path / "o.yaml"
    path.write_text(f"# objective test\nn_trials: 1\nobjectives: {objectives_text}\npruner: {{name: {pruner}}}\n"
                    f"fixed: [trainer.epochs=1]\nparams:\n  model: choice(lstm, gru)\n")
    return f"sweep={path}"


@pytest.mark.parametrize("text,pruner,message", [
    ("[val_lossy]", "median", "objective 'val_lossy' is not a metric train() returns; choose one of val_bpc"),
    ("[test_bpc]", "median", "objective test_bpc would select models on the test split; use val_bpc"),
    ("[test_f1_macro]", "none", "objective test_f1_macro would select models on the test split; use a validation"),
    ("[val_accuracy:minimize]", "median", "objective val_accuracy is better when higher; write val_accuracy:maximize"),
    ("[train_seconds:maximize, val_bpc]", "none", "train_seconds is better when lower"),
    ("[rhyme_density]", "none", "rhyme_density has no natural direction; write rhyme_density:maximize"),
    ("[val_bpc:up]", "median", "direction must be minimize or maximize, not 'up'"),
    ("[val_bpc, val_bpc]", "none", "names a metric twice"),
    ("[train_seconds]", "median", "pruning needs a per-epoch objective"),
])
def test_bad_objectives_fail_before_any_trial_with_one_line(tmp_path, capsys, text, pruner, message):
    assert sweep.main([sweep_file(tmp_path, text, pruner)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_the_command_line_reports_a_test_objective_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lyricslab.sweep", sweep_file(tmp_path, "[test_nll]")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error") or "Traceback" in line]
    assert lines == ["error: objective test_nll would select models on the test split; use val_nll "
                     "(the validation split) instead"]


@pytest.mark.parametrize("text,expected,watched", [
    ("[val_bpc]", [("val_bpc", "minimize")], "val_bpc"),
    ("[best_val_bpc]", [("best_val_bpc", "minimize")], "val_bpc"),
    ("[val_nll]", [("val_nll", "minimize")], "val_nll"),
    ("[val_accuracy]", [("val_accuracy", "maximize")], "val_accuracy"),
    ("[best_val_top5_accuracy]", [("best_val_top5_accuracy", "maximize")], "val_top5_accuracy"),
    ("[{metric: distinct_2}, rhyme_density:maximize]", [("distinct_2", "maximize"), ("rhyme_density", "maximize")],
     None),
])
def test_directions_are_inferred_and_pruning_watches_the_per_epoch_log(tmp_path, text, expected, watched):
    spec = sweep.load(sweep_file(tmp_path, text, "median" if watched else "none").split("=", 1)[1], {}, [])
    assert [(o.metric, o.direction) for o in spec.objectives] == expected
    assert spec.objectives[0].per_epoch == watched


def test_an_objective_reads_val_and_best_val_as_one_metric():
    assert objectives.value("val_bpc", {"best_val_bpc": 2.0}) == 2.0
    assert objectives.value("best_val_bpc", {"val_bpc": 3.0}) == 3.0
    assert objectives.value("val_nll", {"best_val_nll": 1.5, "val_nll": 9.0}) == 9.0
    with pytest.raises(KeyError, match="val_nll"):
        objectives.value("val_nll", {"val_bpc": 1.0})


def test_the_objective_table_needs_no_tensorflow():
    code = "import sys, lyricslab.sweeps.objectives, lyricslab.sweeps.spec; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
