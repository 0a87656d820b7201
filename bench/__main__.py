"""`python -m bench [--quick] [name ...]`: run the benchmarks (all by default); `python -m bench report`
writes BENCHMARKS.md from their results.

--quick runs each benchmark at tiny sizes to check that its code path works; its results go to
bench/out/quick/, and `python -m bench --quick report` writes bench/out/quick/BENCHMARKS.md.
"""

import os
import sys

NAMES = ["ingest", "throughput", "mfu", "generation", "sweep", "lora"]
USAGE = f"usage: python -m bench [--quick] [{'|'.join(NAMES)} ...] | python -m bench [--quick] report"


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
    unknown = [name for name in args if name not in NAMES]
    if unknown:
        raise SystemExit(f"error: unknown benchmark {unknown[0]!r}; {USAGE}")
    for name in args or NAMES:
        module = __import__(f"bench.{name}", fromlist=["run"])
        module.run()
    print(f"\nresults in {results_path()}; `python -m bench {'--quick ' if quick() else ''}report` writes the Markdown")


if __name__ == "__main__":
    main()
