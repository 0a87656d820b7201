"""Where the packaged configs live: found through importlib.resources, so a plain `pip install .` has them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Hydra needs a folder on disk; a wheel installs package data as plain files, so this path is real.
CONF_DIR = Path(str(files("lyricslab").joinpath("conf")))
SWEEPS_DIR = Path(str(files("lyricslab").joinpath("sweeps", "files")))  # the files that sweep=NAME names
