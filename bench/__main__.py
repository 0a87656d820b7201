"""`python -m bench [--quick] [name [part ...] ...]`: run the benchmarks (all by default); `python -m
bench report` writes BENCHMARKS.md from their results.

Words after a benchmark's name that are its parts run only those: `python -m bench sweep load` runs
the sweep load benchmark alone, `python -m bench sweep` every sweep part (load included).

--quick runs each benchmark at tiny sizes to check that its code path works; its results go to
bench/out/quick/, and `python -m bench --quick report` writes bench/out/quick/BENCHMARKS.md.
"""

import os
import sys

from bench.sweep import (
    PARTS as SWEEP_PARTS,  # light: bench.sweep imports TensorFlow only inside its parts
)

NAMES = ["ingest", "throughput", "mfu", "generation", "sweep", "conditioning", "lora", "quality"]
PARTS = {"sweep": SWEEP_PARTS, "quality": ("compare", "recipe")}  # benchmarks made of parts that can run alone
USAGE = (f"usage: python -m bench [--quick] [{'|'.join(NAMES)} [part ...] ...] | python -m bench [--quick] report"
         f" (parts: {'; '.join(f'{k}: {chr(44).join(v)}' for k, v in PARTS.items())})")


def plan(args: list[str]) -> list[tuple[str, list[str]]]:
    """[(benchmark, its parts or [] for all)], e.g. ["sweep", "load", "mfu"] -> [("sweep", ["load"]), ("mfu", [])]."""
    out: list[tuple[str, list[str]]] = []
    for word in args:
        if word in NAMES:
            out.append((word, []))
        elif out and word in PARTS.get(out[-1][0], ()):
            out[-1][1].append(word)
        else:
            raise SystemExit(f"error: unknown benchmark {word!r}; {USAGE}")
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    if "--quick" in args:
        os.environ["BENCH_QUICK"] = "1"  # before bench.common is read anywhere, and seen by subprocesses
        args = [a for a in args if a != "--quick"]
    from bench.common import OUT, quick, results_path

    if args == ["report"]:
        from bench.report import ROOT, write

        write(results_path(), OUT / "quick" / "BENCHMARKS.md" if quick() else ROOT / "BENCHMARKS.md")
        return
    for name, parts in plan(args) or [(name, []) for name in NAMES]:
        module = __import__(f"bench.{name}", fromlist=["run"])
        if parts:
            module.run(tuple(parts))
        else:
            module.run()
    print(f"\nresults in {results_path()}; `python -m bench {'--quick ' if quick() else ''}report` writes the Markdown")


if __name__ == "__main__":
    main()
