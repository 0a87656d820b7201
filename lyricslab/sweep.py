"""Optuna search over Hydra config groups: `python -m lyricslab.sweep sweep=demo [n_trials=..] [workers=N] [overrides]`.

Arguments are key=value. Keys of the sweep file (n_trials, timeout, storage, study_name,
sampler.seed, pruner.name, max_failed_share, heartbeat.grace, warm_start, ...) change the sweep
(`warm_start.study=demo warm_start.best=3` adds a warm start, see lyricslab/sweeps/warm_start.py); `workers`
starts that many processes on the same study; anything else is a Hydra override applied to
every trial (e.g. data=genius data.path=...).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from lyricslab.config.cli import compose_command
from lyricslab.config.errors import ConfigError, UsageError
from lyricslab.config.runtime import start_keras
from lyricslab.sweeps.rdb import hide_passwords, shown_url

STORAGE_ENV = "LYRICSLAB_STORAGE"  # the storage URL, kept out of argv (and so out of `ps`)
SPEC_KEYS = {"study_name", "n_trials", "timeout", "budget_minutes", "storage", "sampler", "pruner", "max_failed_share",
             "heartbeat", "objectives", "warm_start"}


USAGE = ("usage: python -m lyricslab.sweep sweep=<name> [n_trials=N] [workers=N] [storage=URL] [timeout=S] "
         "[study_name=..] [Hydra overrides...]")


def parse_args(argv: list[str]) -> tuple[str, int, int | None, dict[str, Any], list[str]]:
    """(sweep, workers, worker index or None in the parent, sweep-file overrides, Hydra overrides)."""
    from lyricslab.sweeps.space import SpaceError, parse_value

    sweep, workers, worker, spec_over, hydra_over = "demo", 1, None, {}, []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\n" + USAGE)
            sys.exit(0)
        key, eq, value = arg.partition("=")
        if not eq:
            raise SystemExit(f"error: {arg!r} is not key=value; {USAGE}")
        if key == "sweep":
            sweep = value
        elif key in ("workers", "_worker"):  # _worker=K: set by the parent on the worker processes it starts
            if not value.isdigit() or (key == "workers" and int(value) < 1):
                raise SpaceError(f"{key} must be a whole number of at least 1, not {value!r}")
            workers, worker = (int(value), worker) if key == "workers" else (workers, int(value))
        elif key.split(".")[0] in SPEC_KEYS:
            head, _, sub = key.partition(".")
            parsed = parse_value(value) if value else None
            if sub:
                spec_over.setdefault(head, {})[sub] = parsed
            else:
                spec_over[head] = parsed
        else:
            hydra_over.append(arg)
    return sweep, workers, worker, spec_over, hydra_over


def without_secrets(argv: list[str], storage: str | None) -> tuple[list[str], dict[str, str]]:
    """argv for a worker process without storage= or tracking.uri= (they may hold passwords), and the
    environment that carries them instead."""
    env = dict(os.environ)
    kept = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "tracking.uri":
            env["MLFLOW_TRACKING_URI"] = value
        elif key != "storage":
            kept.append(arg)
    if storage:
        env[STORAGE_ENV] = storage
    return kept, env


def load(sweep: str, spec_over: dict[str, Any], hydra_over: list[str], check: bool = True):
    """The sweep spec; `check` composes the space against the configs (a worker skips it: its parent did)."""
    from lyricslab.sweeps.spec import check_choices, load_spec, validate

    nested = {k: v for k, v in spec_over.items() if isinstance(v, dict)}
    flat = {k: v for k, v in spec_over.items() if not isinstance(v, dict)}
    spec = load_spec(sweep, flat, extra_fixed=hydra_over)
    if "storage" not in flat and os.environ.get(STORAGE_ENV):  # the command line, then the environment, then the file
        spec.storage = os.environ[STORAGE_ENV]
    for head, values in nested.items():
        if head == "warm_start":  # warm_start.study=demo warm_start.best=3: one more entry
            from lyricslab.sweeps.warm_start import check_entries

            spec.warm_start += check_entries([values])
        else:
            getattr(spec, head).update(values)
    check_choices(spec)
    if check:
        validate(spec)
    return spec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    from lyricslab.data import DataError
    from lyricslab.sweeps.space import SpaceError

    try:
        sweep, workers, worker, spec_over, hydra_over = parse_args(argv)
        spec = load(sweep, spec_over, hydra_over, check=worker is None)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # the study module imports keras (the objective trains): the backend is chosen first, the one
        # the trials' fixed config names (backend=..., or the experiment's: experiment=lyrics_lstm is JAX)
        start_keras(spec.fixed_values.get("backend") or compose_command("config", spec.fixed).get("backend"))
    except (ConfigError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import optuna

    from lyricslab.sweeps.study import (
        FailureGuard,
        compose_trial,
        mlruns_root,
        open_study,
        retry_dead_trial,
        run_worker,
        summary,
    )

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    from lyricslab.sweeps import parent_run as report
    from lyricslab.sweeps.coordination import StudyLock
    from lyricslab.sweeps.workers import Supervisor, fail_dead_worker_trials
    from lyricslab.tracking import runs as tracking

    try:
        study = open_study(spec)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # an unusable storage URL: Optuna/SQLAlchemy raise many kinds
        first = hide_passwords(str(err).splitlines()[0] if str(err) else "", spec.storage)
        print(f"error: cannot open the study in storage={shown_url(spec.storage)} ({type(err).__name__}: {first}); "
              f"use journal, journal:PATH or a SQLAlchemy URL such as postgresql+psycopg://user:pass@host/db",
              file=sys.stderr)
        return 2
    base_cfg = compose_trial(spec, {})
    try:
        from lyricslab.data.prepare import load_splits

        load_splits(base_cfg.data, base_cfg.data_size.songs)  # read the data once, before any worker or trial
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tracking.setup(base_cfg.tracking)
    retry = retry_dead_trial(spec)
    # A resume (or a replacement worker) first fails the trials of workers that died on this host.
    fail_dead_worker_trials(study, retry)

    if worker is not None:
        run_worker(spec, study, study.user_attrs[report.PARENT_ATTR])
        return 0

    from lyricslab.sweeps import warm_start

    try:  # known-good configs to try first, checked against the space before anything starts
        warm, warm_notes = warm_start.resolve(spec, mlruns_root())
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lock = StudyLock(spec.storage, spec.study_name, mlruns_root())  # shared with every host of this study
    parent = report.ensure_parent(study, spec, base_cfg.tracking, lock)
    for line in warm_start.queue(study, spec, warm, warm_notes, parent):  # queued before any worker starts
        print(line, flush=True)
    pins = "".join(f", pinned {k}={v}" for k, v in spec.pinned.items())
    print(f"sweep {spec.study_name}: {spec.n_trials} trials, sampler {spec.sampler.get('name')}, pruner "
          f"{spec.pruner.get('name')}, {workers} worker(s){pins}; MLflow parent run {parent}", flush=True)
    interrupted, guard, supervisor = False, FailureGuard(spec.max_failed_share), None
    try:
        if workers > 1:
            # Workers inherit the storage URL and tracking URI through the environment, never argv.
            argv_safe, env = without_secrets(argv, spec.storage)
            supervisor = Supervisor(study, [sys.executable, "-m", "lyricslab.sweep", *argv_safe], workers,
                                    spec.n_trials, retry, spec.timeout, stop=lambda: guard.check(study) is not None,
                                    env=env)
            supervisor.run()
            guard.check(study)
        else:
            guard = run_worker(spec, study, parent)
    except KeyboardInterrupt:
        interrupted = True
        if supervisor is not None:
            supervisor.interrupt()
        print("\ninterrupted: writing the sweep summary to the parent run", file=sys.stderr)
    fail_dead_worker_trials(study, retry)
    report.close_orphan_runs(study)
    best = report.best_trials(study, spec)
    best_cfg = None
    if best:
        from lyricslab.sweeps.space import sample

        fixed = optuna.trial.FixedTrial(best[0].params)
        best_cfg = compose_trial(spec, sample(fixed, spec.space, spec.fixed_values))
    with lock.held():  # hosts that end together write the parent run's summary one after the other
        report.finish_parent(study, spec, parent, best_cfg, interrupted=interrupted)
    summary(study, spec)
    if guard.message:
        print(f"\n{guard.message}", file=sys.stderr)
    print(f"\nParent run {parent} holds trials.csv, best_config.yaml and the plots.")
    if best_cfg is not None:
        folder = report.best_config_path(spec, best_cfg).parent.resolve()
        print(f"Re-run the best config: python -m lyricslab.run -cp {folder} -cn best_config")
    import mlflow

    from lyricslab.tracking.runs import ui_hint

    print(ui_hint(str(base_cfg.tracking.uri), mlflow.get_run(parent).info.experiment_id))
    return 130 if interrupted else (1 if guard.message else 0)


if __name__ == "__main__":
    sys.exit(main())
