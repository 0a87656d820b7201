"""`python -m lyricslab.run` as a user runs it, in a subprocess."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT, tiny


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lyricslab.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_run_lstm_end_to_end(store):
    out = run_cli(*tiny("lstm"), *store)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MLflow run " in out.stdout and ": FINISHED" in out.stdout
    assert "val_bpc" in out.stdout and "make ui" in out.stdout
    # The sample is printed: the prompt's readable header, then what the model wrote (12 tokens).
    block = "=== prompt '[verse]\\n', temperature 0.8 ===\n[Verse]\n"
    assert block in out.stdout
    generated = out.stdout.split(block, 1)[1].split("\n\nOpen the MLflow UI")[0].rstrip("\n")
    assert 3 <= len(generated) <= 12 * len("[chorus]")
    assert not re.search(r"<eos>|<pad>|\[(verse|chorus|bridge|intro|outro)", generated)  # tags rendered, no specials


def test_help_and_cfg_do_not_import_tensorflow():
    for args in (["--help"], ["--cfg", "job", "model=gru"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "lyricslab.run", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "tensorflow" not in out.stderr and "keras" not in out.stderr
    assert "model: bert_mlm, gpt2_lora, gru, lstm, simple_rnn, transformer" in run_cli("--help").stdout


def test_bad_data_path_is_one_clear_line(tmp_path):
    out = run_cli("data=genius", f"data.path={tmp_path}/missing.csv")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: data file not found: {tmp_path}/missing.csv")


def test_unknown_config_option_is_rejected():
    out = run_cli("model=lstmm")
    assert out.returncode != 0 and "lstmm" in out.stderr


@pytest.mark.parametrize("command", ["run", "sweep", "generate", "evaluate", "compare", "presets"])
def test_every_command_answers_help_and_refuses_an_unknown_key_in_one_line(command):
    def call(*args):
        return subprocess.run([sys.executable, "-m", "lyricslab", command, *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    helped = call("--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "key=value" in helped.stdout or "Configuration groups" in helped.stdout or "usage" in helped.stdout
    refused = call("colour=red")
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "colour" in lines[0], refused.stderr[-2000:]
