"""`python -m bench [--quick] [name [part ...] ...]`: run the benchmarks (all by default); `python -m
bench report` writes BENCHMARKS.md from their results.

Words after a benchmark's name that are its parts run only those: `python -m bench sweep load` runs
the sweep load benchmark alone, `python -m bench sweep` every sweep part (load included).

--quick runs each benchmark at tiny sizes to check that its code path works (a few minutes in all;
tests/test_bench.py runs it); its results go to bench/out/quick/ (BENCH_OUT=DIR: DIR/quick/), never
over the real ones, and `python -m bench --quick report` writes bench/out/quick/BENCHMARKS.md. A
quick run goes on past a benchmark that fails and exits non-zero at the end, naming every failure;
quick `sweep load` needs PostgreSQL (scripts/services.sh) and fails without it.
"""

import os
import sys
import time
import traceback

from bench.sweep import (
    PARTS as SWEEP_PARTS,  # light: bench.sweep imports TensorFlow only inside its parts
)

NAMES = ["ingest", "throughput", "mfu", "backends", "generation", "sweep", "conditioning", "lora", "quality"]
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
    from bench.common import OUT, quick, reset_overrides, results_path

    if args == ["report"]:
        from bench.report import ROOT, write

        write(results_path(), OUT / "quick" / "BENCHMARKS.md" if quick() else ROOT / "BENCHMARKS.md")
        return
    chosen = plan(args)
    if quick() and not chosen:
        results_path().unlink(missing_ok=True)  # a quick run of everything shows this run's results only
    failed, seconds = [], {}
    for name, parts in chosen or [(name, []) for name in NAMES]:
        label = " ".join([name, *parts])
        start = time.perf_counter()
        reset_overrides()  # each result is stored with the configs its own benchmark composed
        try:
            module = __import__(f"bench.{name}", fromlist=["run"])
            if parts:
                module.run(tuple(parts))
            else:
                module.run()
        except (Exception, SystemExit) as err:
            if not quick():
                raise
            # A quick run checks every benchmark: report this one and go on to the next.
            traceback.print_exc()
            failed.append(f"{label} ({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]})")
        seconds[label] = time.perf_counter() - start
    if quick():
        print("\nquick run, seconds per benchmark: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"\nresults in {results_path()}; `python -m bench {'--quick ' if quick() else ''}report` writes the Markdown")
    if failed:
        raise SystemExit(f"error: {len(failed)} benchmark(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
