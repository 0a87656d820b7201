"""`python -m bench [name ...]`: run the benchmarks (all by default) and print their ratios."""

import sys

NAMES = ["ingest", "throughput", "mfu", "generation", "sweep"]


def main() -> None:
    chosen = sys.argv[1:] or NAMES
    for name in chosen:
        if name not in NAMES:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {NAMES}")
        module = __import__(f"bench.{name}", fromlist=["run"])
        module.run()
    print("\nresults also in bench/out/results.json")


if __name__ == "__main__":
    main()
