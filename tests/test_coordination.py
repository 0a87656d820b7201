"""What workers agree on through the study's storage: worker numbers, the trial count, the sweep's end.

On a journal storage (one host); tests/test_two_hosts.py runs the same on PostgreSQL from two hosts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest

from lyricslab.sweeps.coordination import (
    StudyLock,
    claim_worker_number,
    lock_key,
    study_deadline,
)
from lyricslab.sweeps.space import SpaceError
from lyricslab.sweeps.spec import load_spec
from lyricslab.sweeps.trial_count import BudgetedStudy, BudgetSpent


def journal_study(tmp_path: Path) -> tuple[optuna.Study, StudyLock]:
    url = f"journal:{tmp_path}/study.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(f"{tmp_path}/study.log"))
    study = optuna.create_study(study_name="s", storage=storage)
    return study, StudyLock(url, "s", tmp_path)


def test_worker_numbers_are_handed_out_once_each_even_when_claimed_at_once(tmp_path):
    study, lock = journal_study(tmp_path)
    numbers: list[int] = []
    threads = [threading.Thread(target=lambda: numbers.append(claim_worker_number(study, lock))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(6))
    assert lock.file_lock.lock_file != f"{tmp_path}/study.log.lock"  # not the journal backend's own lock file


def test_the_sweeps_end_is_stored_once_and_renewed_only_after_it_passed(tmp_path):
    study, lock = journal_study(tmp_path)
    now = [1000.0]
    first = study_deadline(study, lock, 60, clock=lambda: now[0])
    now[0] = 1030.0
    assert study_deadline(study, lock, 60, clock=lambda: now[0]) == first == 1060.0  # a late worker: the same end
    now[0] = 2000.0  # the sweep is over and nothing runs: starting it again is a resume with a new end
    assert study_deadline(study, lock, 60, clock=lambda: now[0]) == 2060.0
    assert study_deadline(study, lock, None) == 2060.0


def test_n_trials_holds_across_studies_that_share_only_the_storage(tmp_path):
    study, lock = journal_study(tmp_path)
    other = optuna.load_study(study_name="s", storage=study._storage)
    a, b = BudgetedStudy(study, 3, lock), BudgetedStudy(other, 3, StudyLock(f"journal:{tmp_path}/study.log", "s",
                                                                            tmp_path))
    a.ask(), b.ask(), a.ask()
    with pytest.raises(BudgetSpent):
        b.ask()
    late = BudgetedStudy(study, 10, lock, can_start=lambda: False)
    with pytest.raises(BudgetSpent, match="time is up"):
        late.ask()


def test_lock_keys_differ_by_study_and_fit_a_signed_64_bit_integer():
    keys = {lock_key(f"study-{i}") for i in range(100)}
    assert len(keys) == 100 and all(-2**63 <= k < 2**63 for k in keys)


def test_a_sweep_file_with_nothing_to_search_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("n_trials: 3\nparams: {}\n")
    with pytest.raises(SpaceError, match="no params to search"):
        load_spec(str(empty))
    one = tmp_path / "one.yaml"
    one.write_text("n_trials: 3\nparams:\n  model.units: choice(16, 32)\n")
    with pytest.raises(SpaceError, match="pins every searched key"):
        load_spec(str(one), extra_fixed=["model.units=16"])
