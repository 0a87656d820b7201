"""Build a tiny keras_hub preset from the demo corpus, for tests and offline demos.

    python -m lyricslab.presets tiny-gpt2 presets/tiny-gpt2   # random 2-layer GPT-2, BPE from the demo corpus
    python -m lyricslab.presets tiny-bert presets/tiny-bert   # random 2-layer BERT, WordPiece from the demo corpus
"""

from __future__ import annotations

import sys
from pathlib import Path

from lyricslab.config.runtime import quiet_tensorflow
from lyricslab.hub.presets import BUILDERS

USAGE = f"usage: python -m lyricslab.presets {{{'|'.join(BUILDERS)}}} OUT_DIR [vocab_size=1000]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    if len(args) not in (2, 3) or args[0] not in BUILDERS:
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    vocab_size = 1000
    if len(args) == 3:
        key, _, value = args[2].partition("=")
        if key != "vocab_size" or not value.isdigit() or int(value) < 300:
            print(f"error: expected vocab_size=N with N >= 300 (the 256 bytes and some merges), not {args[2]!r}",
                  file=sys.stderr)
            return 2
        vocab_size = int(value)
    out = Path(args[1])
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty; pick a new folder", file=sys.stderr)
        return 2
    quiet_tensorflow()
    BUILDERS[args[0]](out, vocab_size=vocab_size)
    print(f"wrote {args[0]} to {out}; train with model.preset={out.resolve()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
