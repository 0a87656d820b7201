"""Optuna storage for a study: a journal file under mlruns/optuna/ by default, or any storage URL.

Optuna's heartbeat (which fails the trials of dead workers so RetryHeartbeatStaleTrialCallback can
re-queue them) exists only for RDB storages. `HeartbeatJournalStorage` adds the same three
hooks to the journal storage, so Optuna's own heartbeat thread and `fail_stale_trials` run
unchanged on the default file storage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lyricslab.sweeps.rdb import open_storage

HEARTBEAT_ATTR = "lyricslab:heartbeat"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    def __init__(self, path: Path, interval: int, grace: int,
                 stale_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None):
        super().__init__(JournalFileBackend(str(path)))
        self.interval, self.grace, self.stale_callback = interval, grace, stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:  # another process already failed this trial: nothing left to beat for
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > self.grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_callback


def journal_path(url: str | None, study_name: str, root: Path) -> Path | None:
    """The journal file of a journal storage (None for an RDB URL)."""
    if not url or url == "journal" or url.startswith("journal:"):
        return Path(url.split(":", 1)[1]) if url and ":" in url else root / "optuna" / f"{study_name}.log"
    return None


def make_storage(url: str | None, study_name: str, root: Path, heartbeat: dict[str, Any],
                 retry: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> Any:
    """`None`/`journal` -> mlruns/optuna/<study>.log; `journal:PATH`; or an RDB URL (sqlite, postgresql, ...).

    `retry` is called with each trial the heartbeat fails (it re-queues the trial).
    """
    interval, grace = int(heartbeat.get("interval", 10)), int(heartbeat.get("grace", 60))
    path = journal_path(url, study_name, root)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(path, interval, grace, retry)

    return open_storage(url, heartbeat_interval=interval, grace_period=grace, heartbeat_stale_trial_callback=retry)
