"""The package's shape: stages import downwards only, no cycles, commands at the top.

Every `import lyricslab...` in the source is read with ast (top-level and inside functions), so a
cycle cannot hide behind an import moved into a function.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lyricslab

PACKAGE = Path(lyricslab.__file__).parent
# Lowest first: a stage may import its own package and the ones before it, never one after it.
LAYERS = ["config", "data", "hub", "text", "models", "scoring", "sampling", "tracking", "training", "sweeps"]
COMMANDS = {"run", "sweep", "generate", "evaluate", "compare", "presets", "__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported lyricslab module, whether the import sits inside a function) for each import."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, nested) for a in child.names if a.name.startswith("lyricslab"))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("lyricslab"):
                for alias in child.names:  # `from lyricslab.text import factory` imports a module
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                                  or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else child.module, nested))
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def is_command(module: str) -> bool:
    return module.count(".") == 1 and stage(module) in COMMANDS


def test_every_module_belongs_to_a_stage_or_is_a_command():
    strays = [m for m in MODULES if m != "lyricslab" and not is_command(m) and stage(m) not in LAYERS]
    assert strays == []


def test_stages_import_downwards_and_never_a_command():
    upward = []
    for module, found in GRAPH.items():
        if module == "lyricslab" or is_command(module):
            continue
        here = LAYERS.index(stage(module))
        for target, _ in found:
            if target == "lyricslab":  # the root holds only the version
                continue
            if is_command(target):
                upward.append(f"{module} -> {target} (a command)")
            elif LAYERS.index(stage(target)) > here:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_library_modules_import_lyricslab_at_the_top_only():
    """An import inside a function is how a cycle hides; commands may defer theirs (fast --help)."""
    hidden = [f"{module} -> {target}" for module, found in GRAPH.items() if not is_command(module)
              for target, nested in found if nested]
    assert hidden == []


def test_no_import_cycles():
    edges = {m: {t for t, _ in found if t in MODULES and t != m} for m, found in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


@pytest.mark.parametrize("package", LAYERS)
def test_each_stage_says_its_job_in_one_line(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()[0]) > 20


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    """make test-fast leaves out the slow tests: every module still has to import (no broken import hides)."""
    importlib.import_module(module)
