"""One command line for every command: `key=value` overrides of the command's own config, composed by Hydra.

Each command has a config in the package's conf/ (`generate.yaml`, `evaluate.yaml`, ...) that lists
every key it takes with its default and a comment, as lightning-hydra-template does with `eval.yaml`.
`--help` prints that file, `--cfg job` prints the composed config, and an unknown key or a value
Hydra cannot parse is one `error:` line. Free-text keys (a prompt, a file name) are quoted before
Hydra sees them, so `prompt=Hold on, we're home` stays one string.
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lyricslab.config.errors import UsageError
from lyricslab.config.paths import CONF_DIR

# Names earlier versions used; each maps to the key every command shares now.
RENAMED = {"tracking_uri": "tracking.uri", "experiment": "tracking.experiment"}


def config_text(command: str) -> str:
    return (CONF_DIR / f"{command}.yaml").read_text()


def quote(value: str) -> str:
    """A Hydra single-quoted string: taken as text whatever it contains. Hydra reads a backslash as an
    escape only before a quote (or the closing one), so only those backslashes are doubled."""
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + text.replace("'", "\\'") + "'"


def to_overrides(command: str, argv: Sequence[str], text_keys: Sequence[str] = (),
                 positional: Sequence[str] = ()) -> list[str]:
    """The command line as Hydra overrides: `--key value` and leading positional values become key=value."""
    args, out, free = list(argv), [], list(positional)
    while args:
        arg = args.pop(0)
        if arg.startswith("--") and "=" not in arg and arg not in ("--help", "--cfg"):
            if not args:
                raise UsageError(f"{arg} needs a value, e.g. {arg} VALUE or {arg[2:]}=VALUE")
            arg = f"{arg[2:]}={args.pop(0)}"
        key, eq, value = arg.partition("=")
        if not eq:
            if not free:
                raise UsageError(f"{arg!r} is not key=value; `python -m lyricslab.{command} --help` lists the keys")
            key, value = free.pop(0), arg
        if key in RENAMED:
            raise UsageError(f"{key}= is now {RENAMED[key]}= (the same name in every command)")
        out.append(f"{key}={quote(value)}" if key in text_keys and value else f"{key}={value}")
    return out


def one_line(err: Exception) -> str:
    text = str(err).split("Config search path:")[0].replace(":\n\t", ": ").replace("\n\t", ", ")
    return "; ".join(line.strip().rstrip(".") for line in text.splitlines() if line.strip())


def compose_command(command: str, overrides: Sequence[str]) -> DictConfig:
    """The command's config with these overrides; an unknown key or bad value raises UsageError."""
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(command, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err)
        if "not in struct" in message or "Could not override" in message or "Could not append" in message:
            key = message.split("'")[1] if "'" in message else message
            known = sorted(k for k in _keys(command) if k != "hydra")
            raise UsageError(f"{command} has no key {key!r}; its keys: {', '.join(known)}") from None
        raise UsageError(message) from None


def _keys(command: str) -> list[str]:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(command)
    return [f"{k}.{sub}" if isinstance(v, DictConfig) else k
            for k, v in cfg.items() for sub in (v.keys() if isinstance(v, DictConfig) else [None])]


def parse(command: str, argv: Sequence[str] | None, doc: str, text_keys: Sequence[str] = (),
          positional: Sequence[str] = ()) -> DictConfig:
    """The composed config of `python -m lyricslab.<command> ARGS`; exits for --help and --cfg job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip() + f"\n\nKeys (key=value; defaults from lyricslab/conf/{command}.yaml):\n")
        print(config_text(command).strip())
        sys.exit(0)
    show = "--cfg" in argv
    if show:
        at = argv.index("--cfg")
        argv = argv[:at] + argv[at + 2:]
    cfg = compose_command(command, to_overrides(command, argv, text_keys, positional))
    check_types(compose_command(command, []), cfg)
    if show:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        sys.exit(0)
    return cfg


def check_types(defaults: DictConfig, cfg: DictConfig, prefix: str = "") -> None:
    """A key whose default is a number or true/false takes only that kind of value (null where allowed)."""
    for key, default in defaults.items():
        value = cfg.get(key)
        if isinstance(default, DictConfig) and isinstance(value, DictConfig):
            check_types(default, value, f"{prefix}{key}.")
        elif value is None or default is None:
            continue
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise UsageError(f"{prefix}{key} must be true or false, not {value!r}")
        elif isinstance(default, int) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{prefix}{key} must be a whole number, not {value!r}")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"{prefix}{key} must be a number, not {value!r}")


def parse_model_command(command: str, argv: Sequence[str] | None, doc: str,
                        text_keys: Sequence[str]) -> dict:
    """For the commands that load a trained model (generate, evaluate): the options as a plain dict,
    `tracking.uri` as `tracking_uri`, with exactly one of run_id, model_uri and sweep."""
    cfg = parse(command, argv, doc, text_keys)
    opts = {key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key != "tracking"}
    opts["tracking_uri"] = cfg.tracking.uri
    if len([key for key in ("run_id", "model_uri", "sweep") if opts.get(key)]) != 1:
        raise UsageError("pass exactly one of run_id=<id>, model_uri=models:/<name>@best or sweep=<name>")
    return opts


def exit_with(err: Exception, code: int = 2) -> int:
    """Print the one-line error every command prints, and return its exit code."""
    print(f"error: {err}", file=sys.stderr)
    return code
