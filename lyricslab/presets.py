"""Build a tiny keras_hub preset from the demo corpus, for tests and offline demos.

    python -m lyricslab.presets tiny-gpt2 presets/tiny-gpt2   # random 2-layer GPT-2, BPE from the demo corpus
    python -m lyricslab.presets tiny-bert presets/tiny-bert   # random 2-layer BERT, WordPiece from the demo corpus
    python -m lyricslab.presets kind=tiny-gpt2 out=presets/tiny-gpt2 vocab_size=2000

Train on one with model=gpt2_lora model.preset=presets/tiny-gpt2 (or model=bert_mlm).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lyricslab.config.cli import exit_with, parse
from lyricslab.config.errors import UsageError
from lyricslab.config.runtime import start_keras
from lyricslab.hub.presets import BUILDERS


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse("presets", argv, __doc__, text_keys=("kind", "out"), positional=("kind", "out"))
        if cfg.kind not in BUILDERS or not cfg.out:
            raise UsageError(f"pass kind={'|'.join(BUILDERS)} and out=FOLDER (or both as words: presets tiny-gpt2 OUT)")
        if cfg.vocab_size < 300:
            raise UsageError(f"vocab_size must be at least 300 (the 256 bytes and some merges), not {cfg.vocab_size}")
        out = Path(cfg.out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"{out} exists and is not empty; pick a new folder")
    except UsageError as err:
        return exit_with(err)
    start_keras()
    BUILDERS[cfg.kind](out, vocab_size=int(cfg.vocab_size))
    print(f"wrote {cfg.kind} to {out}; train with model.preset={out.resolve()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
