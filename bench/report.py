"""`python -m bench report`: write BENCHMARKS.md from bench/out/results.json.

Every figure in BENCHMARKS.md comes from results.json, and met / not met is decided here from
each value and its target (common.Target.met), so nothing in it is typed by hand. The prose of
each section is the docstring of the benchmark that measured it, read with `ast` so writing the
report needs no TensorFlow.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from bench.common import Target

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

# (results key, title, command that measures it, file and function whose docstring explains it)
SECTIONS = [
    ("throughput", "Training throughput", "python -m bench throughput", "throughput.py", None),
    ("mfu", "MFU", "python -m bench mfu", "mfu.py", None),
    ("ingest", "Ingest", "python -m bench ingest", "ingest.py", None),
    ("generation", "Generation speed", "python -m bench generation", "generation.py", None),
    ("sweep.overhead", "Sweep overhead per trial", "python -m bench.sweep overhead", "sweep.py", "overhead"),
    ("sweep.pruning", "Sweep pruning savings", "python -m bench.sweep pruning", "sweep.py", "pruning"),
    ("sweep.memory", "Sweep memory", "python -m bench.sweep memory", "sweep.py", "memory"),
    ("sweep.load", "Sweep load on PostgreSQL and an MLflow server", "python -m bench sweep load", "sweep_load.py",
     "load"),
    ("conditioning", "Conditioning on tags", "python -m bench conditioning", "conditioning.py", None),
    ("lora", "LoRA vs full fine-tuning", "python -m bench lora", "lora.py", None),
    ("quality", "Quality on real lyrics", "python -m bench quality recipe", "quality.py", None),
    ("quality.compare", "Quality comparisons at one budget", "python -m bench quality compare", "quality.py",
     "compare"),
]

INTRO = """\
`make bench` runs every benchmark, then `python -m bench report`, which writes this file from
`bench/out/results.json`. Nothing here is typed by hand: the figures, the machine and the date
come from the run, and met / not met is computed from each value and its target (the targets
are constants next to each benchmark in `bench/*.py`). The prose of each section is the
docstring of the benchmark that measured it. `python -m bench NAME ...` runs some benchmarks
(then `python -m bench report`); `python -m bench --quick` runs each at tiny sizes to check the
code paths, and writes to `bench/out/quick/` instead.

These are not timed tests. This VM is noisy, so the two sides of every comparison run
alternately in one process, swapping which goes first each round (a b, b a, a b, ...), and
the best time of each side is kept: stalls only ever add time."""


def docstring(file: str, function: str | None) -> str:
    """The module's (or one function's) docstring, without importing the module."""
    tree = ast.parse((BENCH_DIR / file).read_text())
    if function is None:
        return ast.get_docstring(tree) or ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.get_docstring(node) or ""
    return ""


def target_of(item: dict) -> Target:
    return Target(item["op"], float(item["threshold"]), item.get("unit", "x"))


def met_cell(item: dict) -> str:
    return "yes" if target_of(item).met(item.get("value")) else "**no**"


def measured_cell(item: dict) -> str:
    value = item.get("value")
    return "n/a" if value is None else target_of(item).show(float(value))


def figure_cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def machine_line(entry: dict) -> str:
    m = entry.get("machine", {})
    parts = [f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores ({m.get('simd', '')})",
             f"{m.get('memory_gib', '?')} GiB"]
    if "tensorflow" in m:
        parts.append(f"TensorFlow {m['tensorflow']}")
    return "; ".join(parts)


def summary_table(results: dict) -> list[str]:
    lines = ["| benchmark | check | target | measured | met |", "|---|---|---|---|---|"]
    for key, title, *_ in SECTIONS:
        entry = results.get(key)
        if entry is None:
            lines.append(f"| {title} | not measured yet | | | |")
            continue
        for item in entry.get("checks", []):
            lines.append(f"| {title} | {item['name']} | {target_of(item)} | {measured_cell(item)} | "
                         f"{met_cell(item)} |")
    return lines


def section(title: str, command: str, file: str, function: str | None, entry: dict | None) -> list[str]:
    lines = [f"## {title} (`{command}`)", "", docstring(file, function), ""]
    if entry is None:
        return lines + [f"Not measured yet: run `{command}`, then `python -m bench report`.", ""]
    lines += [f"Measured {entry['date']} on {machine_line(entry)}.", "", f"Budget and data: {entry['budget']}.", ""]
    if entry.get("quick"):
        lines += ["**Quick mode**: tiny sizes that only check the code path; these are not measurements.", ""]
    if entry.get("checks"):
        lines += ["| check | target | measured | met |", "|---|---|---|---|"]
        lines += [f"| {c['name']} | {target_of(c)} | {measured_cell(c)} | {met_cell(c)} |" for c in entry["checks"]]
        lines.append("")
    if entry.get("figures"):
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {figure_cell(value)} |" for name, value in entry["figures"].items()]
        lines.append("")
    for name, text in entry.get("texts", {}).items():
        lines += [f"{name}:", "", "```text", text, "```", ""]
    return lines


def render(results: dict) -> str:
    """BENCHMARKS.md as a string, from a results.json dict."""
    lines = ["# Benchmarks", "",
             "<!-- Generated by `python -m bench report` from bench/out/results.json; edit bench/*.py, "
             "not this file. -->", "", INTRO, ""]
    if any(entry.get("quick") for entry in results.values()):
        lines += ["**These results come from quick mode (`--quick`): they check code paths and measure "
                  "nothing.**", ""]
    lines += ["## Summary", "", *summary_table(results), ""]
    for key, title, command, file, function in SECTIONS:
        lines += section(title, command, file, function, results.get(key))
    return "\n".join(lines).rstrip() + "\n"


def write(results_file: Path, markdown_file: Path) -> Path:
    if not results_file.exists():
        raise SystemExit(f"error: {results_file} not found; run `make bench` (or `python -m bench NAME`) first")
    markdown_file.write_text(render(json.loads(results_file.read_text())))
    print(f"wrote {markdown_file} from {results_file}")
    return markdown_file
