"""A user sees lyricslab's output, not TensorFlow's start-up chatter."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

SNIPPET = "from lyricslab.config.runtime import quiet_tensorflow; quiet_tensorflow(); import keras; print('ready')"


def run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LYRICSLAB_VERBOSE")}
    return subprocess.run([sys.executable, "-c", SNIPPET], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, **env_extra})


def test_tensorflow_import_is_quiet_unless_verbose():
    quiet = run({})
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ready"
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = run({"LYRICSLAB_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0
    assert loud.stderr.strip() != ""  # the filter is what made the difference
