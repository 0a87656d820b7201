"""The benchmark report: results.json -> BENCHMARKS.md, with met / not met computed from the targets.

The one place a made-up results dict is right: the unit under test is the formatter, not a
measurement. No training here.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from services import services  # noqa: F401  (the session's PostgreSQL + MLflow servers, for sweep load)

from bench import report
from bench.common import Target, check, interleaved

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "simd": "avx2 fma", "memory_gib": 24.0, "tensorflow": "2.99"}


def entry(title: str, checks: list[dict], figures: dict | None = None, quick: bool = False) -> dict:
    return {"title": title, "date": "2030-01-02 03:04 UTC", "machine": MACHINE, "budget": "3 tiny things",
            "quick": quick, "checks": checks, "figures": figures or {}}


def item(name: str, value: float | None, op: str, threshold: float, unit: str = "x") -> dict:
    # met deliberately wrong: the report must decide from value and target, not trust a stored flag
    return {"name": name, "value": value, "op": op, "threshold": threshold, "unit": unit, "met": None}


def summary_rows(markdown: str) -> dict[str, list[str]]:
    """check name -> the cells of its row in the Summary table."""
    table = markdown.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("benchmark", "---"):
            rows[cells[1]] = cells
    return rows


@pytest.fixture
def markdown() -> str:
    results = {
        "throughput": entry("Training throughput", [
            item("lstm: ratio", 1.02, ">=", 1.0),  # just above a >= target
            item("transformer: ratio", 0.98, ">=", 1.0),  # just below
        ], figures={"lstm: tokens/s lyricslab": 9725.25, "rows": 1145000, "params": "1,464,448 / 1,466,448"}),
        "sweep.overhead": entry("Sweep overhead per trial", [
            item("share outside fit", 0.029, "<=", 0.03, "%"),  # just under a <= target
            item("lyric share", 0.031, "<=", 0.02, "%"),  # over
            item("never reached", None, "<=", 0.4),  # no value: not met
        ]),
    }
    return report.render(results)


def test_met_is_computed_from_value_and_target(markdown: str):
    rows = summary_rows(markdown)
    assert rows["lstm: ratio"][2:] == ["≥ 1×", "1.02×", "yes"]
    assert rows["transformer: ratio"][2:] == ["≥ 1×", "0.98×", "**no**"]
    assert rows["share outside fit"][2:] == ["≤ 3%", "2.9%", "yes"]
    assert rows["lyric share"][2:] == ["≤ 2%", "3.1%", "**no**"]
    assert rows["never reached"][2:] == ["≤ 0.4×", "n/a", "**no**"]


def test_sections_show_machine_date_budget_figures_and_prose(markdown: str):
    section = markdown.split("## Training throughput", 1)[1].split("\n## ", 1)[0]
    assert "2030-01-02 03:04 UTC" in section
    assert "Test CPU 9000, 2 cores (avx2 fma)" in section and "TensorFlow 2.99" in section
    assert "Budget and data: 3 tiny things." in section
    assert "| lstm: tokens/s lyricslab | 9,725 |" in section
    assert "| rows | 1,145,000 |" in section
    assert report.docstring("throughput.py", None).split("\n")[0] in section  # the bench's own prose
    assert report.docstring("sweep.py", "overhead").split("\n")[0] in markdown


def test_missing_benchmarks_are_marked_not_measured(markdown: str):
    assert "| MFU | not measured yet |" in markdown
    assert "Not measured yet: run `python -m bench ingest`" in markdown
    assert "measure nothing" not in markdown and "**Quick mode**" not in markdown


def test_quick_results_are_flagged():
    text = report.render({"mfu": entry("MFU", [item("lstm: MFU", 0.5, ">=", 0.45, "%")], quick=True)})
    assert "measure nothing" in text
    assert "**Quick mode**" in text.split("## MFU", 1)[1]


def test_write_reads_results_json_and_explains_a_missing_file(tmp_path):
    results = tmp_path / "results.json"
    with pytest.raises(SystemExit, match="error: .*run `make bench`"):
        report.write(results, tmp_path / "BENCHMARKS.md")
    results.write_text(json.dumps({"mfu": entry("MFU", [item("lstm: MFU", 0.44, ">=", 0.45, "%")])}))
    out = report.write(results, tmp_path / "BENCHMARKS.md").read_text()
    assert summary_rows(out)["lstm: MFU"][2:] == ["≥ 45%", "44%", "**no**"]


def test_target_and_check_decide_the_same_way():
    at_least, at_most = Target(">=", 10, "x"), Target("<=", 1024, "MB")
    assert at_least.met(10) and not at_least.met(9.99)
    assert at_most.met(1024) and not at_most.met(1024.5)
    assert check("x", 9.99, at_least)["met"] is False and check("y", 905.0, at_most)["met"] is True
    with pytest.raises(ValueError):
        Target(">", 1.0)


def test_interleaved_swaps_which_side_goes_first_each_round():
    order: list[str] = []
    best_a, best_b = interleaved(lambda: order.append("a") or 2.0, lambda: order.append("b") or 1.0, rounds=4)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert (best_a, best_b) == (2.0, 1.0)


# --- choosing benchmarks and parts; the sweep load benchmark's own logic (no servers, no training) ----------

def test_words_after_a_benchmark_select_its_parts():
    from bench.__main__ import plan

    assert plan(["sweep", "load"]) == [("sweep", ["load"])]
    assert plan(["sweep"]) == [("sweep", [])]  # every part, load included
    assert plan(["mfu", "sweep", "memory", "load"]) == [("mfu", []), ("sweep", ["memory", "load"])]
    for bad in (["load"], ["mfu", "load"], ["sweep", "loud"]):
        with pytest.raises(SystemExit, match="error: unknown benchmark"):
            plan(bad)


def test_load_section_has_its_prose_and_shows_counts_plainly():
    loaded = entry("Sweep load on PostgreSQL and an MLflow server",
                   [item("storage errors", 0, "<=", 0, ""), item("duplicate configurations", 3, "<=", 0, "")])
    text = report.render({"sweep.load": loaded})
    rows = summary_rows(text)
    assert rows["storage errors"][2:] == ["≤ 0", "0", "yes"]
    assert rows["duplicate configurations"][2:] == ["≤ 0", "3", "**no**"]
    assert "## Sweep load on PostgreSQL and an MLflow server (`python -m bench sweep load`)" in text
    assert report.docstring("sweep_load.py", "load").split("\n")[0] in text
    assert "Not measured yet: run `python -m bench sweep load`" in report.render({})


def test_duplicate_configurations_counts_repeats_of_earlier_trials():
    from types import SimpleNamespace

    from bench.sweep_load import duplicate_configurations

    trials = [SimpleNamespace(params=p) for p in
              ({"lr": 0.1, "model": "lstm"}, {"model": "lstm", "lr": 0.1}, {"lr": 0.2, "model": "lstm"},
               {"lr": 0.1, "model": "lstm"}, {})]  # {}: a trial that failed before sampling
    assert duplicate_configurations(trials) == 2


def test_storage_error_pattern_matches_failures_not_progress():
    from bench.sweep_load import STORAGE_ERROR

    for line in ["sqlalchemy.exc.OperationalError: (psycopg.OperationalError) server closed the connection",
                 "[W 2030-01-01] Trial 4 failed with value None. optuna.exceptions.StorageInternalError: x",
                 "mlflow.exceptions.MlflowException: API request to http://127.0.0.1:5000/api/2.0 failed",
                 "psycopg.errors.DeadlockDetected: deadlock detected"]:
        assert STORAGE_ERROR.search(line), line
    for line in ["Trial 3 finished with value: 2.1 and parameters: {'model': 'gru'}",
                 "sweep load: 8 trials, sampler random, pruner none, 2 worker(s); MLflow parent run abc"]:
        assert not STORAGE_ERROR.search(line), line


def test_load_without_postgres_is_one_line_and_records_nothing(monkeypatch, capsys, tmp_path):
    import bench.services
    from bench import sweep_load

    monkeypatch.setattr(bench.services, "missing_requirement", lambda: "PostgreSQL binaries not found (apt-get ...)")
    monkeypatch.setattr(sweep_load, "record", lambda *a, **k: pytest.fail("nothing is measured"))
    assert sweep_load.load() is None
    assert capsys.readouterr().err.strip().splitlines() == ["sweep load skipped: PostgreSQL binaries not found "
                                                            "(apt-get ...)"]


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads Linux /proc")
def test_peak_memory_sums_real_process_groups():
    """Stand-ins for the servers: a session leader with an HTTP-ish child and a job-runner child
    (named like MLflow's), and a 'postmaster' with a backend."""
    from bench.sweep_load import PeakMemory

    # The job runner's name comes from the environment: the leader's own command line must not hold it.
    mlflow = subprocess.Popen(["bash", "-c", 'sleep 60 & (exec -a "$JOB" sleep 60) & wait'], start_new_session=True,
                              env={**os.environ, "JOB": "python -m mlflow.server.jobs._job_runner"})
    postgres = subprocess.Popen(["bash", "-c", "sleep 60 & wait"])
    try:
        time.sleep(0.5)  # the children start
        memory = PeakMemory(mlflow.pid, postgres.pid)
        memory.sample()
        assert memory.processes == {"mlflow http": 2, "mlflow jobs": 1, "postgres": 2}
        for name in memory.GROUPS:
            rss, pss = memory.peak[name]
            assert rss > 0 and 0 < pss <= rss, (name, rss, pss)
    finally:
        os.killpg(mlflow.pid, signal.SIGTERM)
        postgres.kill()
        for p in (mlflow, postgres):
            p.wait()


# --- benchmarks cannot rot: `python -m bench --quick` runs every one at tiny size ------------------------------

def test_a_failing_benchmark_does_not_stop_a_quick_run(monkeypatch, tmp_path):
    """The quick run reports every broken benchmark, then exits non-zero naming them."""
    from types import ModuleType

    from bench.__main__ import main

    monkeypatch.setenv("BENCH_QUICK", "0")  # main() sets it to 1; monkeypatch puts back what was there
    monkeypatch.setenv("BENCH_OUT", str(tmp_path))
    ran = []
    for name, fails in (("ingest", True), ("mfu", False)):
        module = ModuleType(f"bench.{name}")

        def run(name=name, fails=fails):
            ran.append(name)
            if fails:
                raise ImportError("cannot import name 'gone' from 'lyricslab.somewhere'")

        module.run = run
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)
    with pytest.raises(SystemExit, match=r"1 benchmark\(s\) failed: ingest \(ImportError: cannot import name 'gone'"):
        main(["--quick", "ingest", "mfu"])
    assert ran == ["ingest", "mfu"]


def test_quick_load_without_postgres_fails_loudly(monkeypatch):
    import bench.services
    from bench import sweep_load

    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.setattr(bench.services, "missing_requirement", lambda: "PostgreSQL binaries not found")
    with pytest.raises(SystemExit, match="error: sweep load needs PostgreSQL and psycopg: PostgreSQL binaries not"):
        sweep_load.load()


RESULT_KEYS = [key for key, *_ in report.SECTIONS]  # every benchmark's entry in results.json, one per report section
NO_CHECKS = {"quality.compare"}  # figures only: the comparisons have no target
QUICK_TIMEOUT = 840  # seconds; about 4 minutes on 2 idle cores


def quick_plan(with_load: bool) -> list[str]:
    """Every benchmark and every part, by name; sweep load only `with_load`."""
    from bench.__main__ import NAMES, PARTS

    words: list[str] = []
    for name in NAMES:
        parts = [p for p in PARTS.get(name, ()) if with_load or (name, p) != ("sweep", "load")]
        words += [name, *parts]
    return words


def test_every_benchmark_is_run_and_reported():
    """A benchmark module (one with a top-level run()) that `python -m bench` doesn't run, or a report
    section no benchmark part writes, would escape the quick run."""
    import ast

    from bench.__main__ import NAMES, PARTS

    bench_dir = Path(report.BENCH_DIR)
    with_run = {f.stem for f in bench_dir.glob("*.py")
                if any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in ast.parse(f.read_text()).body)}
    assert with_run == set(NAMES)
    assert {key.split(".")[0] for key in RESULT_KEYS} == set(NAMES)
    for key, _, command, file, function in report.SECTIONS:
        if function is not None and "." in key:  # a part: its name is one of its benchmark's parts
            assert key.split(".", 1)[1] in PARTS.get(key.split(".")[0], ()), key
    assert quick_plan(True)[-3:] == ["quality", "compare", "recipe"] and "load" in quick_plan(True)
    assert "load" not in quick_plan(False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, request):
    """`python -m bench --quick` once, with BENCH_OUT in a temporary folder. Sweep load runs on the
    suite's own PostgreSQL and MLflow servers (the session's `services`, shared with
    tests/test_services.py, passed in BENCH_SERVICES), which saves starting a second pair. Without
    PostgreSQL (outside CI) every benchmark but sweep load runs, and that one's test skips (or fails
    under CI) as the services tests do."""
    from bench.services import SERVICES_ENV, missing_requirement

    root = Path(report.ROOT)
    real = root / "bench" / "out" / "results.json"
    real_before = real.stat().st_mtime_ns if real.exists() else None
    out = tmp_path_factory.mktemp("bench-out")
    env = {**os.environ, "BENCH_OUT": str(out)}
    env.pop("BENCH_QUICK", None)
    if missing_requirement() is None:
        args = []
        env[SERVICES_ENV] = request.getfixturevalue("services").to_env()
    else:
        args = quick_plan(with_load=False)
        env.pop(SERVICES_ENV, None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=QUICK_TIMEOUT)
    seconds = time.perf_counter() - started
    path = out / "quick" / "results.json"
    from bench import history

    results = {key: latest for key, (latest, _) in history.latest(history.read(path)).items()}
    real_after = real.stat().st_mtime_ns if real.exists() else None
    tail = f"\n--- last output of `python -m bench --quick` ---\n{(proc.stdout + proc.stderr)[-6000:]}"
    return SimpleNamespace(proc=proc, out=out, results=results, seconds=seconds, tail=tail,
                           real_untouched=real_before == real_after)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT + 60)
def test_quick_run_exits_cleanly_and_writes_only_its_own_folder(quick_run):
    assert quick_run.proc.returncode == 0, quick_run.tail
    assert "quick run, seconds per benchmark:" in quick_run.proc.stdout, quick_run.tail
    assert quick_run.real_untouched, "the quick run touched bench/out/results.json"
    assert sorted(p.name for p in quick_run.out.iterdir()) == ["quick"]  # everything under BENCH_OUT/quick/
    assert set(quick_run.results) <= set(RESULT_KEYS), "a benchmark wrote an entry the report has no section for"


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT + 60)
@pytest.mark.parametrize("key", RESULT_KEYS)
def test_quick_run_measured(quick_run, key):
    """Each benchmark (or part) wrote its entry: quick-flagged, with figures and, where it has targets,
    checks; every measured number finite."""
    if key == "sweep.load":
        from services import require_services

        require_services()  # skips without PostgreSQL, fails under CI
    entry = quick_run.results.get(key)
    assert entry is not None, f"no {key!r} in the quick results{quick_run.tail}"
    assert entry["quick"] is True and entry["budget"] and entry["machine"]["cores"]
    assert re.fullmatch("[0-9a-f]{40}", entry["commit"]) and entry["command"].startswith("python -m bench --quick")
    assert entry["overrides"], f"{key}: ran with no recorded overrides"
    assert entry["figures"], key
    numbers = {name: v for name, v in entry["figures"].items() if not isinstance(v, str)}
    assert numbers, f"{key}: no numeric figure"
    bad = {name: v for name, v in numbers.items() if not finite(v)}
    assert not bad, f"{key}: figures not finite: {bad}"
    if key in NO_CHECKS:
        assert not entry["checks"]
    else:
        assert entry["checks"], f"{key}: no checks"
        for c in entry["checks"]:
            assert c["name"] and finite(c["value"]), f"{key}: check {c['name']!r} has value {c['value']!r}"
            assert c["op"] in (">=", "<=") and finite(c["threshold"])
    if key == "sweep.load":  # correctness, not speed: these hold at any size
        assert {c["name"].split(" (")[0]: c["value"] for c in entry["checks"]} == {
            "storage errors": 0, "duplicate configurations": 0, "failed trials": 0, "overshoot": 0,
            "trials started after the sweep's stored end": 0}, entry["checks"]
    if key == "lora":
        lora = {c["name"]: c["value"] for c in entry["checks"]}
        assert 0 < lora["LoRA trainable parameters / full fine-tuning's"] < 1


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT + 60)
def test_quick_report_is_written_beside_the_quick_results(quick_run):
    env = {**os.environ, "BENCH_OUT": str(quick_run.out)}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "report"], cwd=Path(report.ROOT), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (quick_run.out / "quick" / "BENCHMARKS.md").read_text()
    assert "**Quick mode**" in text
    for key, title, *_ in report.SECTIONS:
        if key in quick_run.results:
            assert f"## {title}" in text


# --- results.json keeps every run, with where it came from; stale results are marked, never shown as current --

def git_repo(root: Path) -> None:
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def commit_file(root: Path, name: str, text: str) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    subprocess.run(["git", "add", name], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", f"change {name}"], cwd=root, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=report.ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def results_file(tmp_path, monkeypatch) -> Path:
    """record() writes here; compose() has remembered nothing yet."""
    from bench import common

    path = tmp_path / "out" / "results.json"
    monkeypatch.setattr(common, "results_path", lambda: path)
    common.reset_overrides()
    return path


def test_record_appends_every_run_with_commit_overrides_command_and_machine(results_file, monkeypatch):
    from bench import common, history

    old = {**entry("MFU", [item("lstm: MFU", 0.31, ">=", 0.45, "%")]), "date": "2020-01-01 00:00 UTC"}
    # ^ the earlier form: one entry per key, at the top level
    results_file.parent.mkdir(parents=True)
    results_file.write_text(json.dumps({"mfu": old}))
    common.compose(["model=lstm", "tracking.uri=sqlite:///x.db"])  # where outputs go is left out
    common.compose(["model=lstm"])  # the same config twice is listed once
    monkeypatch.setattr(history, "RUN_ID", "first")
    common.record("mfu", "MFU", "tiny", [item("lstm: MFU", 0.35, ">=", 0.45, "%")], {"x": 1.0})
    monkeypatch.setattr(history, "RUN_ID", "second")
    common.record("mfu", "MFU", "tiny", [item("lstm: MFU", 0.40, ">=", 0.45, "%")], {"x": 2.0},
                  overrides=["study s: 2 trials"])
    monkeypatch.setenv("LYRICSLAB_DEV_CSV", "/data/dev.csv")
    common.record("mfu", "MFU", "tiny", [item("lstm: MFU", 0.41, ">=", 0.45, "%")], {"x": 3.0},
                  overrides=["study s: 3 trials"])  # the same process again: replaces its own entry

    stored = json.loads(results_file.read_text())
    assert stored["format"] == history.FORMAT and set(stored) == {"format", "runs"}  # migrated in place
    runs = stored["runs"]
    assert [r["figures"].get("x") for r in runs] == [None, 1.0, 3.0]  # nothing written over but its own
    legacy, first, second = runs
    assert legacy["commit"] == history.UNKNOWN and legacy["checks"][0]["value"] == 0.31
    assert first["commit"] == second["commit"] == head()
    assert first["dirty"] == bool(first["dirty_files"])
    assert first["overrides"] == ["model=lstm"]
    assert second["overrides"] == ["study s: 2 trials", "study s: 3 trials"]  # what both recordings ran
    assert second["env"] == {"LYRICSLAB_DEV_CSV": "/data/dev.csv"}
    assert first["command"].startswith("python ") and first["machine"]["cores"] >= 1

    latest = history.latest(history.read(results_file))
    assert latest["mfu"][0]["run"] == "second" and latest["mfu"][1] == 2
    section = report.render(history.read(results_file)).split("## MFU", 1)[1]
    assert "| lstm: MFU | ≥ 45% | 41% | **no** |" in section and "| lstm: MFU | ≥ 45% | 35%" not in section
    assert f"at commit `{head()[:10]}`" in section
    assert "overrides: `study s: 2 trials`; `study s: 3 trials`" in section
    assert "2 earlier run(s) of this benchmark are kept in results.json." in section


def test_a_bench_started_before_the_history_form_still_adds_its_entry(tmp_path):
    """An older `python -m bench` writes its key at the top level of the new file: read as a run, not lost."""
    from bench import history

    path = tmp_path / "results.json"
    history.append(path, {"key": "mfu", "run": "a", "date": "2030-01-01 00:00 UTC", "commit": head(),
                          "overrides": [], "title": "MFU", "checks": [], "figures": {}})
    data = json.loads(path.read_text())
    data["ingest"] = entry("Ingest", [item("ingest ratio", 0.2, ">=", 0.3)])  # what the old record() does
    path.write_text(json.dumps(data))
    keys = [(r["key"], r["commit"]) for r in history.read(path)]
    assert keys == [("mfu", head()), ("ingest", history.UNKNOWN)]
    history.migrate(path)
    assert "ingest" not in json.loads(path.read_text()) and len(history.read(path)) == 2


def test_a_result_whose_benchmark_code_changed_since_its_commit_is_reported_stale(tmp_path, monkeypatch):
    from bench import history

    git_repo(tmp_path)
    measured = commit_file(tmp_path, "bench/mfu.py", '"""MFU."""\nPEAK = 1\n')
    prose = commit_file(tmp_path, "bench/mfu.py", '"""MFU, better worded."""\nPEAK = 1  # a comment\n')
    commit_file(tmp_path, "bench/mfu.py", '"""MFU, better worded."""\nPEAK = 2  # a comment\n')
    commit_file(tmp_path, "lyricslab/other.py", "X = 1\n")  # outside what the benchmark measures
    monkeypatch.setattr(history, "ROOT", tmp_path)
    paths = report.measured_paths("mfu", "mfu.py")
    at = {"commit": measured, "dirty_files": []}
    assert history.stale_reason(at, paths) == (f"stale: measured at {measured[:10]}, benchmark code changed since "
                                               "(bench/mfu.py)")
    assert history.stale_reason({"commit": prose}, paths).endswith("benchmark code changed since (bench/mfu.py)")
    now = commit_file(tmp_path, "bench/mfu.py", '"""MFU, reworded again."""\nPEAK = 2\n')
    assert history.stale_reason({"commit": now}, paths) is None
    assert history.stale_reason({"commit": now}, ["bench/mfu.py"]) is None  # docstrings and comments aside
    assert "uncommitted changes to bench/mfu.py" in history.stale_reason(
        {"commit": now, "dirty_files": ["bench/mfu.py", "README.md"]}, paths)
    assert "does not have" in history.stale_reason({"commit": "0" * 40}, paths)
    assert history.stale_reason({"commit": history.UNKNOWN}, paths).startswith("stale: measured at an unknown commit")

    # The report shows such a result under a stale line and marks it in the summary, never as current.
    results = [{**entry("MFU", [item("lstm: MFU", 0.5, ">=", 0.45, "%")]), "key": "mfu", "commit": measured},
               {**entry("Ingest", [item("ingest ratio", 0.4, ">=", 0.3)]), "key": "ingest", "commit": now}]
    text = report.render(results)
    mfu_section = text.split("## MFU (", 1)[1].split("\n## ", 1)[0]
    assert (f"**Stale: measured at {measured[:10]}, benchmark code changed since (bench/mfu.py).** Rerun "
            "`python -m bench mfu`") in mfu_section
    assert summary_rows(text)["lstm: MFU"][0] == "MFU (**stale**)"
    assert summary_rows(text)["ingest ratio"][0] == "Ingest"  # its code is unchanged: current
    assert "Stale" not in text.split("## Ingest (", 1)[1].split("\n## ", 1)[0]


def test_a_result_at_an_unknown_commit_is_shown_stale(markdown: str):
    section = markdown.split("## Training throughput", 1)[1].split("\n## ", 1)[0]
    assert "**Stale: measured at an unknown commit" in section
    assert summary_rows(markdown)["lstm: ratio"][0] == "Training throughput (**stale**)"


def test_a_result_measured_at_head_is_current():
    from bench import history

    for key, _, _, file, _ in report.SECTIONS:
        assert history.stale_reason({"commit": head(), "dirty_files": []}, report.measured_paths(key, file)) is None
        for path in report.measured_paths(key, file):  # every path it watches exists: no typo hides a change
            assert (Path(report.ROOT) / path).exists(), (key, path)


def test_results_only_benchmarks_md_still_shows_are_recovered_as_rendered(markdown: str, tmp_path):
    from bench import history

    keys = {title: key for key, title, *_ in report.SECTIONS}
    recovered = history.from_markdown(markdown, keys, "recovered")
    assert {e["key"] for e in recovered} == {"throughput", "sweep.overhead"}
    assert all(e["commit"] == history.UNKNOWN and e["note"] == "recovered" for e in recovered)
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    assert [line for line in report.render(recovered).splitlines() if line.startswith("|")] == tables
    history.migrate(tmp_path / "results.json", markdown, keys)
    assert len(history.read(tmp_path / "results.json")) == 2


# --- one MFU: one definition and one peak, in lyricslab.training.flops ---------------------------------------

def test_bench_mfu_is_flops_mfu_over_the_one_cached_peak(results_file, monkeypatch, tmp_path):
    """bench/mfu.py's checks are lyricslab.training.flops.mfu, i.e. 6 × the 2×256 LSTM's matmul weights per
    token (counted by hand here) × tokens/s ÷ the peak train() divides by."""
    from bench import common
    from lyricslab.training import flops

    bench_mfu = pytest.importorskip("bench.mfu")
    monkeypatch.setattr(flops, "peak_cache_path", lambda: tmp_path / "peak.json")
    monkeypatch.setattr(flops, "device_name", lambda: "Test CPU")
    measurements = iter([80e9, 100e9, 90e9])  # train() first, then the benchmark before and after its models
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda dtype: next(measurements))
    assert flops.matmul_peak("float32") == 80e9  # a run measures and caches the machine's peak
    cfg = common.compose(["model=lstm"])
    seconds = 0.5
    monkeypatch.setattr(bench_mfu, "default_vocab", lambda: ("char", 300, "float32"))
    monkeypatch.setattr(bench_mfu, "pair", lambda name, vocab: (cfg, None, None, lambda: seconds, None, 4096))
    monkeypatch.setattr(bench_mfu, "quick", lambda: False)
    result = bench_mfu.run()

    assert flops.matmul_peak("float32") == 100e9  # the highest measurement is the one peak, for runs too
    by_hand = {v: 3 * (2 * 4 * 256 * (128 + 256) + 2 * 4 * 256 * (256 + 256) + 2 * 256 * 128 + 2 * 128 * v)
               for v in (300, 8000)}  # two LSTM layers, the 256 -> 128 projection, the output head
    values = {c["name"]: c["value"] for c in result["checks"]}
    for vocab, per_token in by_hand.items():
        name = next(n for n in values if n.startswith(f"lstm, vocab {vocab} "))
        assert values[name] == pytest.approx(per_token * 4096 / seconds / 100e9)
        assert values[name] == flops.mfu(cfg, vocab, 4096 / seconds, 100e9)
    assert result["figures"]["matmul GFLOP/s measured now, before the models"] == 100
    assert result["figures"]["matmul GFLOP/s measured now, after the models"] == 90


def test_no_other_place_measures_a_peak_or_quotes_an_mfu():
    root = Path(report.ROOT)
    for path in [*root.glob("bench/*.py"), *root.glob("lyricslab/**/*.py")]:
        if path.name == "flops.py":
            continue
        text = path.read_text()
        assert "n**3" not in text and "tf.matmul(" not in text, f"{path}: a second matmul peak"
    for path in [root / "README.md", *root.glob("docs/*.md")]:
        text = path.read_text()
        assert not re.search(r"\d\s*GFLOP", text), f"{path}: a peak figure outside BENCHMARKS.md"
        assert not re.search(r"(?i)\bMFU\b[^.\n]{0,40}\d+(\.\d+)?\s*%", text), f"{path}: an MFU figure"
