"""`lyricslab <command> [key=value ...]` (or `python -m lyricslab <command> ...`): the same commands as
`python -m lyricslab.<command>`, under one name."""

from __future__ import annotations

import runpy
import sys

COMMANDS = {"run": "train one model", "sweep": "search hyperparameters with Optuna",
            "generate": "write songs with a trained model", "evaluate": "score a trained model on any lyrics CSV",
            "compare": "a leaderboard of finished runs", "presets": "build a tiny keras_hub preset"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] not in COMMANDS:
        listing = "\n".join(f"  lyricslab {name:<9} {job}" for name, job in COMMANDS.items())
        print(f"usage: lyricslab COMMAND [key=value ...]   (COMMAND --help lists its keys)\n{listing}",
              file=sys.stdout if args[:1] in ([], ["--help"], ["-h"]) else sys.stderr)
        return 0 if args[:1] in ([], ["--help"], ["-h"]) else 2
    sys.argv = [f"lyricslab {args[0]}", *args[1:]]
    runpy.run_module(f"lyricslab.{args[0]}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
