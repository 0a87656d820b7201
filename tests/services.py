"""Real PostgreSQL and MLflow servers for tests, started by scripts/services.sh (the `make services` code).

`services` (session-scoped) starts a throwaway cluster and tracking server on free ports in a
temporary folder and stops them at the end. Without the PostgreSQL binaries or psycopg the tests
that use it skip with the reason, so a developer without them still runs the rest; under CI
(`CI` set) they fail instead, because .ci/run installs PostgreSQL and the test extra installs psycopg.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"


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

    def db_url(self, database: str = "optuna", user: str = "lyricslab", password: str | None = None) -> str:
        return f"postgresql+psycopg://{user}:{password or self.password}@{self.host}:{self.pg_port}/{database}"


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


def require_services() -> None:
    reason = missing_requirement()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL/MLflow tests: {reason}")
    if reason:
        pytest.skip(reason)


def script(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def services():
    require_services()
    # Not pytest's tmp_path: its folders are private to root, and the cluster runs as `postgres` under root.
    folder = Path(tempfile.mkdtemp(prefix="lyricslab-services-"))
    folder.chmod(0o755)
    env = {**os.environ, "SERVICES_DIR": str(folder), "PYTHON": sys.executable,
           "PG_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    try:
        up = script("up", env=env)
        if up.returncode != 0:
            pytest.fail(f"scripts/services.sh up failed:\n{up.stdout}\n{up.stderr}")
        # What the script tells the user to pass to every sweep.
        printed = dict(line.split("=", 1) for line in up.stdout.splitlines() if line.startswith(("storage=", "tracking.uri=")))
        from sqlalchemy.engine import make_url

        url = make_url(printed["storage"])
        assert url.drivername == "postgresql+psycopg" and url.database == "optuna", printed
        yield Services(folder, url.host, url.port, url.password, printed["tracking.uri"])
    finally:
        script("down", env=env, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
