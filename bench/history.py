"""results.json keeps every benchmark run, with the code and settings it ran with, and says which
results still describe the code at HEAD.

The file is `{"format": 2, "runs": [entry, ...]}`, entries in the order they were recorded; a run
is appended, never written over another (one process recording the same benchmark twice, as
`quality compare` does after every variant, replaces its own entry). Each entry carries, beside
its figures: `key` (its report section), `run` (one id per process), `commit` (HEAD's full hash,
or "unknown"), `dirty` and `dirty_files` (tracked files with uncommitted changes when it ran),
`command`, `overrides` (the Hydra overrides of every config it composed, one string per config),
`env` (the BENCH_*/LYRICSLAB_* settings that change what runs) and `machine`.

A file of the earlier form (one entry per key at the top level, written over at every run) is
read as history entries with commit "unknown"; `migrate` rewrites it in this form. Top-level keys
beside "format" and "runs" (written by a `python -m bench` started before this form existed) are
read the same way, so no result is lost.

Writes hold a lock on `results.json.lock` and re-read the file right before writing, so
benchmarks running in parallel each add their entry.

Staleness (`stale_reason`): a result is current when its commit is known and the code it measured
(its bench module and the lyricslab modules listed for it in bench/report.py) is the same at HEAD,
docstrings and comments aside, and had no uncommitted changes when it ran. Anything else is
reported as stale, with the reason.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMAT = 2
UNKNOWN = "unknown"
RUN_ID = uuid.uuid4().hex[:12]  # one per process: a benchmark recording twice replaces its own entry
LEGACY_NOTE = "recorded before results.json kept commits and history"


# --- reading and writing ---------------------------------------------------------------------------------------

def legacy_entry(key: str, entry: dict, note: str = LEGACY_NOTE) -> dict:
    """An entry of the one-entry-per-key form, as a history entry whose commit is unknown."""
    return {"key": key, "run": None, "commit": UNKNOWN, "dirty": None, "dirty_files": [], "command": None,
            "overrides": None, "env": {}, **entry, "note": entry.get("note", note)}


def normalise(data: object) -> list[dict]:
    """The history entries in a parsed results.json of either form."""
    if not isinstance(data, dict):
        raise ValueError("results.json must hold a JSON object")
    runs = [dict(e) for e in data.get("runs", [])] if data.get("format") == FORMAT else []
    for key, value in data.items():
        if data.get("format") == FORMAT and key in ("format", "runs"):
            continue
        if isinstance(value, dict) and "title" in value:  # an entry of the earlier form
            runs.append(legacy_entry(key, value))
    return runs


def read(path: Path) -> list[dict]:
    """Every recorded run in `path`, oldest first (an absent file: none)."""
    if not path.exists():
        return []
    return normalise(json.loads(path.read_text()))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(path: Path, change: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """Under the lock: read the file as it is now, apply `change`, write the result in place."""
    with locked(path):
        runs = change(read(path))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "runs": runs}, indent=2, default=str))
        tmp.replace(path)
    return runs


def append(path: Path, entry: dict) -> None:
    """Add one run's entry; an entry of the same key and run (this process, recording again) is replaced,
    keeping the overrides both saw."""
    def change(runs: list[dict]) -> list[dict]:
        for i, old in enumerate(runs):
            if old.get("run") == entry["run"] and old.get("key") == entry["key"]:
                seen = [o for o in (old.get("overrides") or []) if o not in entry["overrides"]]
                runs[i] = {**entry, "overrides": seen + entry["overrides"]}
                return runs
        return runs + [entry]

    update(path, change)


def latest(runs: list[dict]) -> dict[str, tuple[dict, int]]:
    """key -> (its latest run, how many earlier runs of it are kept). Latest: by date, then by order."""
    out: dict[str, tuple[dict, int]] = {}
    order = sorted(range(len(runs)), key=lambda i: (runs[i].get("date", ""), i))
    for i in order:
        entry = runs[i]
        key = entry.get("key")
        earlier = out[key][1] + 1 if key in out else 0
        out[key] = (entry, earlier)
    return out


# --- where a result came from -----------------------------------------------------------------------------------

def git(*args: str, root: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root or ROOT, capture_output=True, text=True, check=False)


def provenance(root: Path | None = None) -> dict:
    """HEAD's commit and the tracked files with uncommitted changes, now; "unknown" outside a git checkout."""
    head = git("rev-parse", "HEAD", root=root)
    if head.returncode != 0:
        return {"commit": UNKNOWN, "dirty": None, "dirty_files": []}
    status = git("status", "--porcelain", "--untracked-files=no", root=root).stdout.splitlines()
    files = sorted({line[3:].split(" -> ")[-1] for line in status if line.strip()})
    return {"commit": head.stdout.strip(), "dirty": bool(files), "dirty_files": files}


# --- is a result still current? --------------------------------------------------------------------------------

def code_of(source: str) -> str | None:
    """The module's code without docstrings and comments (an AST dump); None if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def changed_since(commit: str, paths: list[str], root: Path | None = None) -> list[str] | None:
    """Files under `paths` whose code differs between `commit` and HEAD (a .py file whose only changes
    are docstrings or comments does not count); None when git does not know the commit."""
    if git("cat-file", "-e", f"{commit}^{{commit}}", root=root).returncode != 0:
        return None
    names = git("diff", "--name-only", commit, "HEAD", "--", *paths, root=root).stdout.split()
    changed = []
    for name in names:
        if name.endswith(".py"):
            old, new = git("show", f"{commit}:{name}", root=root), git("show", f"HEAD:{name}", root=root)
            if old.returncode == 0 and new.returncode == 0 and code_of(old.stdout) is not None \
                    and code_of(old.stdout) == code_of(new.stdout):
                continue
        changed.append(name)
    return changed


def short(commit: str) -> str:
    return commit[:10] if re.fullmatch(r"[0-9a-f]{40}", commit or "") else (commit or UNKNOWN)


def under(name: str, paths: list[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in paths)


def stale_reason(entry: dict, paths: list[str], root: Path | None = None) -> str | None:
    """Why this result may not describe the code at HEAD (a line for the report), or None when it does."""
    commit = entry.get("commit") or UNKNOWN
    if commit == UNKNOWN:
        return ("stale: measured at an unknown commit (" + (entry.get("note") or LEGACY_NOTE) +
                "), so it cannot be shown to match the benchmark code at HEAD")
    changed = changed_since(commit, paths, root)
    if changed is None:
        return f"stale: measured at {short(commit)}, a commit this repository does not have"
    if changed:
        return f"stale: measured at {short(commit)}, benchmark code changed since ({', '.join(changed)})"
    dirty = [f for f in entry.get("dirty_files") or [] if under(f, paths)]
    if dirty:
        return f"stale: measured at {short(commit)} with uncommitted changes to {', '.join(dirty)}"
    return None


# --- the earlier form, and results only BENCHMARKS.md still shows -----------------------------------------------

UNIT_SUFFIX = (("×", "x"), ("%", "%"), (" MB", "MB"))


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _valued(text: str) -> tuple[float | None, str]:
    """A measured or target cell as the report shows it (1.06×, 23.3%, 1,024 MB, 0, n/a) -> (value, unit)."""
    text = text.strip()
    if text == "n/a":
        return None, ""
    for suffix, unit in UNIT_SUFFIX:
        if text.endswith(suffix):
            value = _number(text[: -len(suffix)])
            return (value / 100 if unit == "%" else value), unit
    return _number(text), ""


def _figure(text: str) -> object:
    if re.fullmatch(r"-?[\d,]+", text):
        return int(text.replace(",", ""))
    if re.fullmatch(r"-?[\d,]*\.?\d+(e[+-]?\d+)?", text):
        return float(text.replace(",", ""))
    return {"True": True, "False": False, "None": None}.get(text, text)


def _table(lines: list[str], header: str) -> list[list[str]]:
    if header not in lines:
        return []
    rows = []
    for line in lines[lines.index(header) + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _machine(text: str) -> dict:
    m = re.fullmatch(r"(.*), (\S+) cores \((.*)\); (\S+) GiB(?:; TensorFlow (\S+))?", text)
    if not m:
        return {"cpu": text}
    out = {"cpu": m[1], "cores": int(m[2]) if m[2].isdigit() else m[2], "simd": m[3], "memory_gib": float(m[4])}
    if m[5]:
        out["tensorflow"] = m[5]
    return out


def from_markdown(markdown: str, keys_by_title: dict[str, str], note: str) -> list[dict]:
    """The results a generated BENCHMARKS.md shows, as history entries (commit unknown), figures as
    rounded there. For results whose results.json is gone."""
    out = []
    for block in markdown.split("\n## ")[1:]:
        title = block.split("\n", 1)[0].split(" (`", 1)[0].strip()
        key = keys_by_title.get(title)
        lines = block.splitlines()
        measured = next((line for line in lines if line.startswith("Measured ")), None)
        if key is None or measured is None:
            continue
        m = re.fullmatch(r"Measured (.+? UTC)(?: at .*?)? on (.*)\.", measured)
        if not m:
            continue
        budget = next((line[len("Budget and data: "):].rstrip(".") for line in lines
                       if line.startswith("Budget and data: ")), "")
        checks = []
        for name, target, value, _ in _table(lines, "| check | target | measured | met |"):
            op = ">=" if target.startswith("≥") else "<="
            threshold, unit = _valued(target[1:])
            measured_value, _ = _valued(value)
            checks.append({"name": name, "value": measured_value, "op": op, "threshold": threshold, "unit": unit,
                           "met": None})
        figures = {row[0]: _figure(row[1]) for row in _table(lines, "| figure | value |")}
        texts = dict(re.findall(r"\n([^\n]+):\n\n```text\n(.*?)\n```", "\n" + block, flags=re.DOTALL))
        out.append(legacy_entry(key, {"title": title, "date": m[1], "machine": _machine(m[2]), "budget": budget,
                                      "quick": "**Quick mode**" in block, "checks": checks, "figures": figures,
                                      "texts": texts}, note))
    return out


def migrate(path: Path, markdown: str | None = None, keys_by_title: dict[str, str] | None = None,
            markdown_source: str = "BENCHMARKS.md") -> list[dict]:
    """Rewrite `path` in the history form, in place (under the lock, merging what is there now). Keys no
    entry of the file has but `markdown` (a generated BENCHMARKS.md) shows are recovered from it."""
    def change(runs: list[dict]) -> list[dict]:
        if markdown is None:
            return runs
        have = {e.get("key") for e in runs}
        note = f"{LEGACY_NOTE}; recovered from {markdown_source}, figures as rounded there"
        return [e for e in from_markdown(markdown, keys_by_title or {}, note) if e["key"] not in have] + runs

    return update(path, change)
