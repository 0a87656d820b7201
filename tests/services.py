"""Real PostgreSQL and MLflow servers for tests, started by scripts/services.sh (the `make services` code).

`services` (session-scoped) starts a throwaway cluster and tracking server on free ports in a
temporary folder and stops them at the end (bench/services.py, shared with the load benchmark).
Without the PostgreSQL binaries or psycopg the tests that use it skip with the reason, so a
developer without them still runs the rest; under CI (`CI` set) they fail instead, because
.ci/run installs PostgreSQL and the test extra installs psycopg.
"""

from __future__ import annotations

import os

import pytest

from bench.services import (
    Services,
    ServicesError,
    free_port,
    missing_requirement,
    throwaway_services,
)

__all__ = ["Services", "free_port", "services"]


def require_services() -> None:
    reason = missing_requirement()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL/MLflow tests: {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def services():
    require_services()
    try:
        with throwaway_services() as running:
            yield running
    except ServicesError as err:  # only `up` raises it: a test's own failure never reaches a fixture
        pytest.fail(str(err))
