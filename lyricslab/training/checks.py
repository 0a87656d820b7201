"""Check a composed run config before TensorFlow loads, so a bad value is one line, not a traceback.

Hydra checks that groups, options and keys exist but not what a value means: `trainer.epochs=-1`
or `trainer.seq_len=0` would otherwise fail minutes later, deep inside Keras, as a KeyError or a
ZeroDivisionError. Only keys present in the config are checked (model.units exists for RNNs only).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lyricslab.config.errors import ConfigError  # noqa: E402  (raised here, defined below every stage)
from lyricslab.data.conditioning import check as check_conditioning
from lyricslab.data.errors import DataError
from lyricslab.data.genius import languages
from lyricslab.hub.presets import resolve_preset
from lyricslab.scoring.breakdown import columns_of
from lyricslab.text.tokenizers import KINDS, PRESET_KINDS

# key -> (smallest allowed, None allowed)
WHOLE_NUMBERS = {
    "trainer.epochs": (1, False), "trainer.batch_size": (1, False), "trainer.seq_len": (1, False),
    "trainer.steps_per_epoch": (1, True), "trainer.patience": (0, False), "trainer.seed": (0, False),
    "model.layers": (1, False), "model.units": (1, False), "model.heads": (1, False), "model.ff_dim": (1, False),
    "embedding.dim": (1, False), "tokenizer.vocab_size": (1, False), "tokenizer.min_freq": (1, False),
    "data_size.songs": (1, True), "samples.max_tokens": (1, False), "samples.candidates": (1, False),
    "model.lora_rank": (1, True), "model.context": (1, True),
}
# key -> (low, high, whether high itself is allowed)
FRACTIONS = {"dropout.rate": (0.0, 1.0, False), "dropout.recurrent": (0.0, 1.0, False),
             "data.val_fraction": (0.0, 1.0, False), "data.test_fraction": (0.0, 1.0, False),
             "data.max_bad_row_share": (0.0, 1.0, True)}
CHOICES = {"trainer.precision": ("float32", "bf16"), "data.structure": ("tags", "keep", "drop")}


def _whole(key: str, value: Any, low: int, nullable: bool) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or null" if nullable else ""
        raise ConfigError(f"{key} must be a whole number >= {low}{extra}, not {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# family (= its tokenizer kind) -> the model option that picks it
PRESET_MODELS = {"gpt2": "gpt2_lora", "bert": "bert_mlm"}


def _check_preset_family(cfg: DictConfig, family: str) -> None:
    """A pretrained family reads its preset's own tokenizer, and the preset must be there."""
    if cfg.model.family != family:
        raise ConfigError(f"tokenizer={family} is the tokenizer of a {family} preset; use it with "
                          f"model={PRESET_MODELS[family]} (which picks it), not model.family={cfg.model.family}")
    if cfg.tokenizer.kind != family:
        raise ConfigError(f"model.family={family} uses its preset's own tokenizer, not tokenizer.kind="
                          f"{cfg.tokenizer.kind}; drop the tokenizer override (or pass tokenizer={family})")
    resolve_preset(cfg.model.get("preset"), family)  # a missing preset: one line that says how to get one


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value no training could use."""
    def get(key: str) -> tuple[bool, Any]:
        missing = object()
        value = OmegaConf.select(cfg, key, default=missing)
        return value is not missing, value

    for key, (low, nullable) in WHOLE_NUMBERS.items():
        present, value = get(key)
        if present:
            _whole(key, value, low, nullable)
    for key, (low, high, closed) in FRACTIONS.items():
        present, value = get(key)
        if present and not (_number(value) and low <= value and (value <= high if closed else value < high)):
            raise ConfigError(f"{key} must be a number in [{low}, {high}{']' if closed else ')'}, not {value!r}")
    choices = {**CHOICES, "tokenizer.kind": tuple(sorted({*KINDS, *PRESET_KINDS}))}
    for key, allowed in choices.items():
        present, value = get(key)
        if present and value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    present, rate = get("optimizer.learning_rate")
    if present and not (_number(rate) and rate > 0):
        raise ConfigError(f"optimizer.learning_rate must be a number > 0, not {rate!r}")
    present, temperatures = get("samples.temperatures")
    if present and not (OmegaConf.is_list(temperatures) and all(_number(t) and t > 0 for t in temperatures)):
        raise ConfigError(f"samples.temperatures must be a list of numbers > 0, e.g. [0.8], not {temperatures!r}")
    present, coverage = get("samples.charset_coverage")
    if present and coverage is not None and not (_number(coverage) and 0 < coverage <= 1):
        raise ConfigError(f"samples.charset_coverage must be a share in (0, 1], e.g. 0.999, or null for every "
                          f"character, not {coverage!r}")
    present, carry = get("trainer.carry_state")
    if present and not isinstance(carry, bool):
        raise ConfigError(f"trainer.carry_state must be true or false, not {carry!r}")
    _, family = get("model.family")
    if carry and family != "rnn":
        raise ConfigError(f"trainer.carry_state=true needs an RNN (model=lstm, gru or simple_rnn); a {family} has no "
                          f"state to carry: give it a longer trainer.seq_len instead")

    try:  # conditioning fields, breakdown columns and data.language: their modules say what is allowed
        check_conditioning(cfg)
        columns_of(cfg)
        if "data" in cfg:
            languages(cfg.data.get("language"))
    except (ValueError, DataError) as err:
        raise ConfigError(str(err)) from None
    _, kind = get("tokenizer.kind")
    for preset_family in PRESET_MODELS:
        if preset_family in (family, kind):
            _check_preset_family(cfg, preset_family)
    _, val = get("data.val_fraction")
    _, test = get("data.test_fraction")
    if _number(val) and _number(test) and val + test >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction must leave songs to train on (got {val} + {test})")
