"""Every command the README shows still parses, so the guide cannot rot.

Each `python -m lyricslab.<command> ...` line is composed with its own arguments (the `--cfg job`
form, in-process: an unknown key or a bad value fails here); each `make <target>` must be a target
of the Makefile (`make -n` parses it).
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from conftest import ROOT

from lyricslab import run
from lyricslab.config.cli import compose_command, to_overrides
from lyricslab.evaluate import TEXT_KEYS as EVALUATE_TEXT
from lyricslab.generate import TEXT_KEYS as GENERATE_TEXT
from lyricslab.sweep import parse_args as sweep_args

README = (ROOT / "README.md").read_text()
COMMAND = re.compile(r"python -m lyricslab\.(\w+)((?:[^\n#`]|\\\n)*)")
TEXT_KEYS = {"generate": GENERATE_TEXT, "evaluate": EVALUATE_TEXT, "compare": ("sweep", "sort", "out")}


def documented() -> list[tuple[str, list[str]]]:
    found = []
    for match in COMMAND.finditer(README):
        line = match.group(2).replace("\\\n", " ").replace("<", "").replace(">", "").rstrip("\\ ")
        try:
            words = shlex.split(line)
        except ValueError:  # prose that quotes a command inline, not a command line
            continue
        words = [w for w in words if w not in ("[", "]") and not w.startswith(("[", "|", "$"))]
        found.append((match.group(1), words))
    return found


COMMANDS = documented()


def test_the_readme_shows_every_command():
    assert {name for name, _ in COMMANDS} >= {"run", "sweep", "generate", "evaluate", "compare", "presets"}


@pytest.mark.parametrize("name,args", COMMANDS, ids=[f"{n} {' '.join(a)}"[:60] for n, a in COMMANDS])
def test_each_documented_command_parses(name, args):
    args = [a for a in args if a not in ("--help", "-h")]
    if name == "run":
        if "-cp" in args:  # a sweep's saved best config: another config folder, composed by Hydra itself
            assert args[args.index("-cp") + 1] and "-cn" in args
            return
        overrides = [a for i, a in enumerate(args) if not a.startswith("-") and not args[i - 1].startswith("--")
                     or i == 0 and not a.startswith("-")]
        assert run.compose_error(overrides) is None
    elif name == "sweep":
        sweep_args(args)
    elif name == "presets":
        cfg = compose_command(name, to_overrides(name, args, ("kind", "out"), positional=("kind", "out")))
        assert cfg.kind in ("tiny-gpt2", "tiny-bert", None)
    else:
        compose_command(name, to_overrides(name, args, TEXT_KEYS[name]))


def test_each_documented_make_target_exists():
    targets = set(re.findall(r"(?m)(?:^|`|\$ )make ([a-z-]+)", README))
    assert targets
    for target in sorted(targets):
        out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"make {target}: {out.stderr}"
