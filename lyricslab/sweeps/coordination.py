"""What every worker of one study agrees on through the study's storage, on any host: a lock, a worker
number each, and the sweep's end.

Workers on several hosts share nothing but the storage (and the MLflow server), so nothing here may
live in a local file when the storage is a database server. On PostgreSQL the lock is a session-level
advisory lock (`pg_advisory_lock`) keyed on the study name: the server serialises it for every host.
SQLite and journal storages are files on one host's disk, so a file lock beside them does the same job
(a journal on a network filesystem is outside what this promises). Optuna has no lock of its own to
offer (its storages serialise single calls only), which is why this module exists.

Under that lock a worker
- takes the next worker number (stored on the study), so its sampler's random stream differs from
  every other worker's on every host, and a study started again with the same workers in the same
  order replays the same streams;
- counts the trials and creates the next one (lyricslab.sweeps.trial_count), so n_trials holds
  across hosts;
- reads the sweep's end, which the first worker stores with the study: a worker that joins late
  fits its trials into that end instead of starting a deadline of its own. Once that end has passed
  and no trial runs, the sweep is over; starting it again (a resume) stores a new end.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Iterator

import optuna
import sqlalchemy
from filelock import FileLock
from sqlalchemy.pool import NullPool

from lyricslab.sweeps.rdb import is_rdb_url
from lyricslab.sweeps.storage import journal_path

NEXT_WORKER_ATTR = "lyricslab:next_worker"
DEADLINE_ATTR = "lyricslab:deadline"  # seconds since the epoch: the sweep's end, shared by every host


def lock_key(study_name: str) -> int:
    """A signed 64-bit key for pg_advisory_lock, the same on every host for the same study."""
    digest = hashlib.sha256(f"lyricslab:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class StudyLock:
    """A lock that every worker of `study_name` takes, whatever host it runs on."""

    def __init__(self, url: str | None, study_name: str, root: Path):
        self.url, self.key = url, lock_key(study_name)
        self.engine = None
        if is_rdb_url(url) and url.split(":", 1)[0].split("+", 1)[0] == "postgresql":
            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool)
            self.file_lock = None
        else:
            journal = journal_path(url, study_name, root)
            # Not `{journal}.lock`: Optuna's journal backend locks that file itself, call by call.
            path = Path(f"{journal}.study.lock") if journal else root / "optuna" / f"{study_name}.study.lock"
            if journal is None and is_rdb_url(url) and url.startswith("sqlite:///"):
                path = Path(f"{url[len('sqlite:///'):]}.{study_name}.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file_lock = FileLock(str(path))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self.file_lock is not None:
            with self.file_lock:
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                conn.commit()


def claim_worker_number(study: optuna.Study, lock: StudyLock) -> int:
    """0 for the study's first worker on any host, then 1, 2, ...: handed out under the study's lock."""
    storage = study._storage
    with lock.held():
        number = int(storage.get_study_system_attrs(study._study_id).get(NEXT_WORKER_ATTR, 0))
        storage.set_study_system_attr(study._study_id, NEXT_WORKER_ATTR, number + 1)
    return number


def study_deadline(study: optuna.Study, lock: StudyLock, seconds: float | None,
                   clock=time.time) -> float | None:
    """The sweep's end (epoch seconds), stored with the study by its first worker; None without a budget.

    A worker that joins later reads the stored end, so the sweep ends once for every host. When the
    stored end has passed and no trial is running, this is a resume: a new end is stored.
    """
    storage = study._storage
    with lock.held():
        stored = storage.get_study_system_attrs(study._study_id).get(DEADLINE_ATTR)
        over = stored is not None and float(stored) <= clock() and not study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if (stored is None or over) and seconds is not None:
            stored = clock() + float(seconds)
            storage.set_study_system_attr(study._study_id, DEADLINE_ATTR, stored)
    return None if stored is None else float(stored)
