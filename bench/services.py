"""Throwaway PostgreSQL + MLflow servers, started by scripts/services.sh (the `make services` code).

Shared by the test fixture (tests/services.py) and the sweep load benchmark (bench/sweep_load.py):
both need a real cluster and a real `mlflow server --serve-artifacts` on free ports in a
temporary folder, stopped and removed afterwards. No pytest here, so the benchmark can use it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"


class ServicesError(RuntimeError):
    """scripts/services.sh could not start the servers; the message holds its output."""


@dataclass
class Services:
    folder: Path
    host: str
    pg_port: int
    password: str
    tracking_uri: str

    @property
    def artifacts(self) -> Path:
        """The server's --artifacts-destination."""
        return self.folder / "artifacts"

    @property
    def pg_data(self) -> Path:
        """The cluster's data directory (its postmaster.pid names the server process)."""
        return self.folder / "pg"

    @property
    def mlflow_pid_file(self) -> Path:
        """The MLflow server's pid, which leads its own process group (services.sh starts it with setsid)."""
        return self.folder / "mlflow.pid"

    def db_url(self, database: str = "optuna", user: str = "lyricslab", password: str | None = None) -> str:
        return f"postgresql+psycopg://{user}:{password or self.password}@{self.host}:{self.pg_port}/{database}"

    def to_env(self) -> str:
        """These running servers as the value of BENCH_SERVICES (see running_services)."""
        return json.dumps({**self.__dict__, "folder": str(self.folder)})


SERVICES_ENV = "BENCH_SERVICES"


@contextmanager
def running_services() -> Iterator[Services]:
    """The servers named by BENCH_SERVICES (Services.to_env(): the test suite passes its own, already
    running, to the quick run), left running on exit; else new throwaway ones."""
    given = os.environ.get(SERVICES_ENV)
    if not given:
        with throwaway_services() as services:
            yield services
        return
    fields = json.loads(given)
    yield Services(**{**fields, "folder": Path(fields["folder"])})


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_requirement() -> str | None:
    """Why the servers cannot start here, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")
    if not found:
        return "PostgreSQL binaries not found (Debian: apt-get install postgresql; .ci/run installs them)"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "running as root without a 'postgres' user to run the cluster as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'lyricslab[postgres]'"
    return None


def script(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def throwaway_services() -> Iterator[Services]:
    """Start both servers on free ports in a new temporary folder; stop them and delete it on exit."""
    # Not a private temp folder: the cluster runs as `postgres` when we are root, and must reach it.
    folder = Path(tempfile.mkdtemp(prefix="lyricslab-services-"))
    folder.chmod(0o755)
    env = {**os.environ, "SERVICES_DIR": str(folder), "PYTHON": sys.executable,
           "PG_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    try:
        up = script("up", env=env)
        if up.returncode != 0:
            raise ServicesError(f"scripts/services.sh up failed:\n{up.stdout}\n{up.stderr}")
        # What the script tells the user to pass to every sweep.
        printed = dict(line.split("=", 1) for line in up.stdout.splitlines()
                       if line.startswith(("storage=", "tracking.uri=")))
        from sqlalchemy.engine import make_url

        url = make_url(printed["storage"])
        if url.drivername != "postgresql+psycopg" or url.database != "optuna":
            raise ServicesError(f"scripts/services.sh printed an unexpected storage URL: {printed}")
        yield Services(folder, url.host, url.port, url.password, printed["tracking.uri"])
    finally:
        script("down", env=env, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
