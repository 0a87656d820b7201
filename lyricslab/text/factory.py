"""The tokenizer a config names: trained on the training texts, or loaded from a run's bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from lyricslab.text import preset_tokenizers
from lyricslab.text.tokenizers import (
    CONFIG_FILE,
    KINDS,
    PRESET_KINDS,
    SubwordTokenizer,
    Tokenizer,
)


def train_tokenizer(cfg: Any, texts: Sequence[str]) -> Tokenizer:
    kind = cfg.kind if not isinstance(cfg, str) else cfg
    if kind in PRESET_KINDS:
        return preset_tokenizers.from_preset(kind, cfg)
    if kind not in KINDS:
        raise ValueError(f"tokenizer.kind must be one of {sorted(KINDS)}, not {kind!r}")
    return KINDS[kind].train(texts, cfg if not isinstance(cfg, str) else None)


def load_tokenizer(folder: str | Path) -> Tokenizer:
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    kind = config["kind"]
    if kind in PRESET_KINDS:
        return preset_tokenizers.load(kind, folder)
    if kind == "subword":
        from tokenizers import Tokenizer as HFTokenizer

        return SubwordTokenizer(HFTokenizer.from_file(str(folder / "tokenizer.json")))
    return KINDS[kind](json.loads((folder / "vocab.json").read_text()))
