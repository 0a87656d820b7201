"""`python -m bench report`: write BENCHMARKS.md from bench/out/results.json.

Every figure in BENCHMARKS.md comes from results.json, and met / not met is decided here from
each value and its target (common.Target.met), so nothing in it is typed by hand. The prose of
each section is the docstring of the benchmark that measured it, read with `ast` so writing the
report needs no TensorFlow.

results.json keeps every run (bench/history.py); each section shows its key's latest, with the
commit, command and overrides it ran with. A result whose measured code (MEASURES) changed since
its commit, or whose commit is unknown, is shown under a "stale: ..." line and marked stale in
the summary, never as current.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bench import history
from bench.common import Target

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

# (results key, title, command that measures it, file and function whose docstring explains it)
SECTIONS = [
    ("throughput", "Training throughput", "python -m bench throughput", "throughput.py", None),
    ("mfu", "MFU", "python -m bench mfu", "mfu.py", None),
    ("backends", "Keras backends: TensorFlow vs JAX", "python -m bench backends", "backends.py", None),
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

# results key -> the lyricslab code (files or folders) its figures depend on, beside its own bench module. A
# result measured before a code change to any of these is stale.
MODELS = ["lyricslab/models/rnn.py", "lyricslab/models/transformer.py", "lyricslab/models/controls.py"]
TRAINING = ["lyricslab/training/train.py", "lyricslab/training/optim.py", "lyricslab/training/callbacks.py"]
SWEEP = ["lyricslab/sweep.py", "lyricslab/sweeps"]
MEASURES = {
    "throughput": [*MODELS, *TRAINING, "lyricslab/training/flops.py", "lyricslab/training/batches.py"],
    "mfu": ["bench/throughput.py", *MODELS, *TRAINING, "lyricslab/training/flops.py"],
    "backends": [*MODELS, *TRAINING, "lyricslab/training/flops.py", "lyricslab/training/batches.py",
                 "lyricslab/conf/experiment/lyrics_lstm.yaml", "lyricslab/conf/experiment/lyrics_transformer.yaml",
                 "lyricslab/conf/experiment/lyrics_gpu.yaml"],
    "ingest": ["lyricslab/data/genius.py", "lyricslab/data/dedupe.py"],
    "generation": [*MODELS, "lyricslab/models/decoding.py", "lyricslab/sampling/generation.py"],
    "sweep.overhead": SWEEP,
    "sweep.pruning": SWEEP,
    "sweep.memory": SWEEP,
    "sweep.load": ["bench/services.py", "scripts/services.sh", *SWEEP],
    "conditioning": ["lyricslab/data/conditioning.py", "lyricslab/conf/experiment/lyrics_lstm.yaml"],
    "lora": ["lyricslab/models/gpt2.py", "lyricslab/models/lora.py", "lyricslab/conf/model/gpt2_lora.yaml"],
    "quality": ["lyricslab/conf/experiment/lyrics_lstm.yaml", "lyricslab/conf/experiment/lyrics_transformer.yaml",
                "lyricslab/scoring/song_cache.py", "lyricslab/scoring/ngram.py", "lyricslab/scoring/mixture.py",
                "lyricslab/sampling",
                "lyricslab/text/charset.py", "lyricslab/scoring/lyric_metrics.py"],
    "quality.compare": ["lyricslab/conf/experiment/lyrics_lstm.yaml",
                        "lyricslab/conf/experiment/lyrics_transformer.yaml"],
}


def measured_paths(key: str, file: str) -> list[str]:
    """The files whose code a result of `key` describes: its bench module and MEASURES[key]."""
    return [f"bench/{file}", *MEASURES.get(key, [])]


INTRO = """\
`make bench` runs every benchmark, then `python -m bench report`, which writes this file from
`bench/out/results.json`. Nothing here is typed by hand: the figures, the machine and the date
come from the run, and met / not met is computed from each value and its target (the targets
are constants next to each benchmark in `bench/*.py`). The prose of each section is the
docstring of the benchmark that measured it. `python -m bench NAME ...` runs some benchmarks
(then `python -m bench report`); `python -m bench --quick` runs each at tiny sizes to check the
code paths, and writes to `bench/out/quick/` instead.

`results.json` keeps every run, with the commit, command, config overrides and machine it ran
with; each section shows its benchmark's latest run. A result measured at a commit whose
benchmark code (the bench module and the lyricslab modules it measures) differs from HEAD's,
with uncommitted changes to that code, or at an unknown commit, is marked **stale**: rerun its
command to bring it up to date.

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


def current(results: dict) -> dict[str, dict]:
    """key -> {"entry": its latest run, "earlier": runs kept before it, "stale": a reason or None}."""
    out = {}
    for key, _, _, file, _ in SECTIONS:
        if key in results:
            entry, earlier = results[key]
            stale = history.stale_reason(entry, measured_paths(key, file))
            out[key] = {"entry": entry, "earlier": earlier, "stale": stale}
    return out


def summary_table(shown: dict[str, dict]) -> list[str]:
    lines = ["| benchmark | check | target | measured | met |", "|---|---|---|---|---|"]
    for key, title, *_ in SECTIONS:
        if key not in shown:
            lines.append(f"| {title} | not measured yet | | | |")
            continue
        label = f"{title} (**stale**)" if shown[key]["stale"] else title
        for item in shown[key]["entry"].get("checks", []):
            lines.append(f"| {label} | {item['name']} | {target_of(item)} | {measured_cell(item)} | "
                         f"{met_cell(item)} |")
    return lines


def provenance_lines(entry: dict, earlier: int) -> list[str]:
    commit = entry.get("commit") or history.UNKNOWN
    at = "an unknown commit" if commit == history.UNKNOWN else f"commit `{history.short(commit)}`"
    if entry.get("dirty_files"):
        at += f" (uncommitted changes to {len(entry['dirty_files'])} tracked file(s))"
    lines = [f"Measured {entry['date']} at {at} on {machine_line(entry)}.", ""]
    how = f"Command: `{entry['command']}`" if entry.get("command") else "Command: not recorded"
    overrides = entry.get("overrides")
    how += ("; overrides not recorded" if overrides is None else
            "; overrides: " + ("; ".join(f"`{o}`" for o in overrides) if overrides else "none"))
    if entry.get("env"):
        how += "; environment: " + ", ".join(f"`{k}={v}`" for k, v in entry["env"].items())
    lines += [how + ".", ""]
    if earlier:
        lines += [f"{earlier} earlier run(s) of this benchmark are kept in results.json.", ""]
    return lines


def section(title: str, command: str, file: str, function: str | None, shown: dict | None) -> list[str]:
    lines = [f"## {title} (`{command}`)", "", docstring(file, function), ""]
    if shown is None:
        return lines + [f"Not measured yet: run `{command}`, then `python -m bench report`.", ""]
    entry = shown["entry"]
    if shown["stale"]:
        lines += [f"**{shown['stale'][0].upper()}{shown['stale'][1:]}.** Rerun `{command}` to measure the code at "
                  "HEAD.", ""]
    lines += provenance_lines(entry, shown["earlier"])
    lines += [f"Budget and data: {entry['budget']}.", ""]
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


def render(results: dict | list) -> str:
    """BENCHMARKS.md as a string, from results.json's runs (a list of entries, bench/history.py) or from
    the earlier form, one entry per key."""
    runs = results if isinstance(results, list) else history.normalise(results)
    shown = current(history.latest(runs))
    lines = ["# Benchmarks", "",
             "<!-- Generated by `python -m bench report` from bench/out/results.json; edit bench/*.py, "
             "not this file. -->", "", INTRO, ""]
    if any(s["entry"].get("quick") for s in shown.values()):
        lines += ["**These results come from quick mode (`--quick`): they check code paths and measure "
                  "nothing.**", ""]
    stale = [title for key, title, *_ in SECTIONS if key in shown and shown[key]["stale"]]
    if stale:
        lines += [f"**Stale** (measured before a change to their benchmark code, or at an unknown commit): "
                  f"{', '.join(stale)}.", ""]
    lines += ["## Summary", "", *summary_table(shown), ""]
    for key, title, command, file, function in SECTIONS:
        lines += section(title, command, file, function, shown.get(key))
    return "\n".join(lines).rstrip() + "\n"


def write(results_file: Path, markdown_file: Path) -> Path:
    if not results_file.exists():
        raise SystemExit(f"error: {results_file} not found; run `make bench` (or `python -m bench NAME`) first")
    markdown_file.write_text(render(history.read(results_file)))
    print(f"wrote {markdown_file} from {results_file}")
    return markdown_file
