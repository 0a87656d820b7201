"""Sweeps across processes on real servers: PostgreSQL for the study, an MLflow server for runs and artifacts.

The servers come from scripts/services.sh (see tests/services.py); storage errors are one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import ROOT, tiny
from services import free_port, services  # noqa: F401  (the session fixture)

from lyricslab.sweeps.rdb import StorageError, check_connection
from lyricslab.sweeps.storage import make_storage

STUDY = "svc"
SWEEP = """study_name: {name}
n_trials: {n}
sampler: {{name: random, seed: 5}}
pruner: {{name: none}}
fixed: [{fixed}]
params:
  model: choice(lstm, gru)
  optimizer.learning_rate: tag(log, interval(0.003, 0.01))
"""
# `import psycopg` fails as it does where the driver was never installed.
NO_PSYCOPG = textwrap.dedent("""
    import runpy, sys
    class NoPsycopg:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("psycopg", "psycopg_binary", "psycopg_c"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoPsycopg())
    sys.argv = ["lyricslab.sweep", *sys.argv[1:]]
    runpy.run_module("lyricslab.sweep", run_name="__main__")
""")



def env() -> dict[str, str]:
    """This checkout's lyricslab first, whatever the working directory."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def write_sweep(folder: Path, name: str = STUDY, n: int = 2) -> Path:
    fixed = [o for o in tiny("lstm") if not o.startswith("model=")] + ["tracking.experiment=svc-sweeps"]
    path = folder / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, n=n, fixed=", ".join(json.dumps(o) for o in fixed)))
    return path


def sweep_cli(args: list[str], cwd: Path, timeout: int = 600, prefix: list[str] | None = None,
              extra_env: dict[str, str] | None = None):
    cmd = [sys.executable, *(prefix or ["-m", "lyricslab.sweep"]), *args]
    return subprocess.run(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def finished_sweep(services, tmp_path_factory):  # noqa: F811
    """A 2-trial sweep, 2 workers, study in PostgreSQL, runs and artifacts through the MLflow server."""
    work = tmp_path_factory.mktemp("sweep-host")
    out = sweep_cli([f"sweep={write_sweep(work)}", f"storage={services.db_url()}", f"tracking.uri={services.tracking_uri}",
                     f"tracking.artifact_root={work}/mlruns/artifacts", f"data.cache_dir={work}/cache", "workers=2"],
                    cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return work


def test_two_workers_share_a_postgres_study_and_log_through_the_server(services, finished_sweep):  # noqa: F811
    study = optuna.load_study(study_name=STUDY, storage=services.db_url())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 2 and len({t.number for t in complete}) == len(complete)

    mlflow.set_tracking_uri(services.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["svc-sweeps"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("lyricslab.role") == "sweep-parent"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(study.trials)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.run_id for c in children} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert all(c.info.status == "FINISHED" for c in children)

    best = mlflow.MlflowClient().get_model_version_by_alias(f"lyricslab-{STUDY}", "best")
    assert best.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    # Artifacts went through the server into its --artifacts-destination, not onto this host's disk.
    run = mlflow.get_run(best.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = services.artifacts / run.info.experiment_id / best.run_id / "artifacts" / "model"
    assert (stored / "model.keras").is_file() and (stored / "tokenizer").is_dir()
    assert not (finished_sweep / "mlruns" / "artifacts").exists() and not (finished_sweep / "mlartifacts").exists()


def test_generate_from_the_registry_on_another_empty_host_folder(services, finished_sweep, tmp_path):  # noqa: F811
    out = subprocess.run([sys.executable, "-m", "lyricslab.generate", f"model_uri=models:/lyricslab-{STUDY}@best",
                          f"tracking.uri={services.tracking_uri}", "max_tokens=10"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "=== song 1 (models:/lyricslab-svc@best) ===" in out.stdout


# --- one-line storage errors -------------------------------------------------------------------------------

def make(url: str):
    return make_storage(url, "t", Path("unused"), {"interval": 5, "grace": 10})


def test_storage_error_is_a_space_error_the_sweep_cli_prints():
    from lyricslab.sweeps.space import SpaceError

    assert issubclass(StorageError, SpaceError)


def test_unreachable_server_names_host_port_and_fix():
    port = free_port()
    with pytest.raises(StorageError, match=rf"cannot reach the database server at 127\.0\.0\.1:{port} \(connection "
                                           rf"refused\); start it \(make services\)") as err:
        make(f"postgresql+psycopg://u:secret@127.0.0.1:{port}/optuna")
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails
    with pytest.raises(StorageError, match=r"database driver is not installed .*pip install 'lyricslab\[postgres\]'"):
        make("postgresql://u:p@127.0.0.1:5432/optuna")


@pytest.mark.parametrize("url, message", [
    ("notaurl", "is neither a database URL nor journal:PATH"),
    ("postgres+nodriver://u@127.0.0.1/x", r"SQLAlchemy knows no database .postgres\+nodriver."),
])
def test_bad_urls_are_one_line(url, message):
    with pytest.raises(StorageError, match=message):
        check_connection(url)


def test_missing_database_and_bad_password_on_a_live_server(services):  # noqa: F811
    with pytest.raises(StorageError, match=r"database 'nosuchdb' does not exist on 127\.0\.0\.1:\d+; create it"):
        make(services.db_url("nosuchdb"))
    with pytest.raises(StorageError, match=r"refused user 'lyricslab' \(wrong user or password\)") as err:
        make(services.db_url(password="wrong-password"))
    assert "wrong-password" not in str(err.value)
    storage = make(services.db_url())
    pool = storage.engine.pool
    assert pool._pre_ping and pool._recycle == 300  # connections that survive long trials


def assert_one_line_error(out, *needles: str):
    assert out.returncode != 0
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last


@pytest.mark.parametrize("case", ["unreachable", "no database", "bad password", "no driver", "from the environment"])
def test_cli_storage_errors_are_one_line_and_never_print_the_password(case, services, tmp_path):  # noqa: F811
    url, prefix = services.db_url(), None
    if case == "unreachable":
        url, needle = url.replace(f":{services.pg_port}/", f":{free_port()}/"), "cannot reach the database server"
    elif case == "no database":
        url, needle = services.db_url("nosuchdb"), "database 'nosuchdb' does not exist"
    elif case == "bad password":
        url, needle = services.db_url(password="not-the-secret-4711"), "wrong user or password"
    elif case == "no driver":
        prefix, needle = ["-c", NO_PSYCOPG], "pip install 'lyricslab[postgres]'"
    else:  # LYRICSLAB_STORAGE instead of storage=: the same check, the same masking
        url, needle = services.db_url("nosuchdb"), "database 'nosuchdb' does not exist"
    args = [f"sweep={write_sweep(tmp_path, 'errs', n=1)}", f"data.cache_dir={tmp_path}/cache",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    extra_env = {}
    if case == "from the environment":
        extra_env = {"LYRICSLAB_STORAGE": url}
    else:
        args.append(f"storage={url}")
    out = sweep_cli(args, tmp_path, timeout=120, prefix=prefix, extra_env=extra_env)
    assert_one_line_error(out, needle)
    password = url.split(":")[2].split("@")[0]
    assert password not in out.stdout + out.stderr  # shown as ***, on every error path
