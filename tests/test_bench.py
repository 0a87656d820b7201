"""The benchmark report: results.json -> BENCHMARKS.md, with met / not met computed from the targets.

The one place a made-up results dict is right: the unit under test is the formatter, not a
measurement. No training here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

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
