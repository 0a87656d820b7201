"""A running study: Optuna sampler and pruner from the sweep file, the objective (one train() per
trial), a worker's loop over trials, the failure guard and the console summary."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import optuna
import sqlalchemy
from hydra import compose, initialize_config_dir
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from optuna_integration.keras import KerasPruningCallback

from lyricslab.config.paths import CONF_DIR
from lyricslab.sweeps.coordination import StudyLock, claim_worker_number, study_deadline
from lyricslab.sweeps.deadline import SweepDeadline, rounds_per_trial
from lyricslab.sweeps.objectives import value as objective_value
from lyricslab.sweeps.parent_run import RUN_ATTR, best_trials, close_orphan_runs
from lyricslab.sweeps.space import SpaceError, grid_values, sample, to_overrides
from lyricslab.sweeps.storage import make_storage
from lyricslab.sweeps.trial_count import BudgetedStudy, BudgetSpent
from lyricslab.sweeps.warm_start import WARM_ATTR
from lyricslab.sweeps.workers import (
    DIED_ATTR,
    RetryDeadWorkerTrial,
    fail_dead_worker_trials,
    record_worker,
)
from lyricslab.training import (
    train as training,  # looked up at call time: tests swap train()
)


def compose_trial(spec, values: dict[str, Any]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*spec.fixed, *to_overrides(values)])


def make_sampler(spec, worker: int = 0):
    """The sweep's sampler; worker K draws from seed + K, so parallel workers never share a random
    stream (identical streams would make every worker propose the same trials) while a rerun
    with the same seed and worker count proposes the same ones."""
    s = spec.sampler
    seed = None if s.get("seed") is None else int(s["seed"]) + worker
    name = s.get("name", "tpe")
    if spec.multi_objective and name not in ("random", "nsga2"):
        name = "nsga2"  # NSGA-II for Pareto fronts
    if name == "tpe":
        # multivariate+group model the conditional (per-family) parameters jointly; constant_liar keeps
        # parallel workers from sampling the same point.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=int(s.get("n_startup_trials", 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=int(s.get("population_size", 8)))

    grid = {}
    for p in (p for p in spec.space if not p.pinned):
        values = None if p.when else grid_values(p.distribution)
        if values is None:
            raise SpaceError(f"sampler grid needs unconditional choice() or range() parameters; {p.name} is not one")
        grid[p.name] = values
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(spec, rounds: int):
    """Median or Hyperband pruning over evaluation rounds; `rounds` is the most a trial runs."""
    p = spec.pruner
    if spec.multi_objective or p.get("name") == "none":
        return optuna.pruners.NopPruner()
    if p.get("name") == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(p.get("min_resource", 1)), max_resource=rounds,
                                              reduction_factor=int(p.get("reduction_factor", 3)))
    return optuna.pruners.MedianPruner(n_startup_trials=int(p.get("n_startup_trials", 3)),
                                       n_warmup_steps=int(p.get("n_warmup_steps", 1)))


class FailureGuard:
    """Stops the study when too many trials fail, with a message that says why.

    Trials failed because their worker process died are left out: they say nothing about the
    configurations, and they are re-queued anyway.
    """

    def __init__(self, max_share: float, min_trials: int = 3):
        self.max_share, self.min_trials, self.message = max_share, min_trials, None

    def check(self, study) -> str | None:
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                and not t.user_attrs.get(DIED_ATTR)]
        failed = [t for t in done if t.state == optuna.trial.TrialState.FAIL]
        if len(done) >= self.min_trials and len(failed) / len(done) > self.max_share:
            last = failed[-1].user_attrs.get("error", "see the trial's MLflow run")
            self.message = (f"stopping the sweep: {len(failed)} of {len(done)} trials failed (more than "
                            f"max_failed_share={self.max_share}); last error: {last}")
        return self.message

    def __call__(self, study, trial) -> None:
        if self.check(study):
            study.stop()


def progress_line(study, trial) -> None:
    """One console line per finished trial."""
    value = "-" if trial.values is None else ", ".join(f"{v:.4f}" for v in trial.values)
    secs = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    note = trial.user_attrs.get("error", "")
    print(f"[trial {trial.number:>3}] {trial.state.name:<8} value={value:<10} {secs:6.1f}s  {params}"
          + (f"  ({note[:120]})" if note else ""), flush=True)


def objective_factory(spec, parent_run_id: str, worker: int = 0, deadline=None):
    """The Optuna objective: one train() per trial. `deadline` (a SweepDeadline) cuts each trial's
    `trainer.budget_minutes` to what is left of the sweep's budget."""
    monitor = spec.objectives[0].per_epoch  # val_nll for a best_val_nll objective

    def objective(trial: optuna.Trial):
        record_worker(trial, worker)
        close_orphan_runs(trial.study)
        frozen = trial.storage.get_trial(trial._trial_id)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        tags = {"sweep": spec.study_name, "trial": str(trial.number), "mlflow.runName": f"trial-{trial.number}"}
        if retried is not None:
            tags["retry_of_trial"] = str(retried)
        if trial.user_attrs.get(WARM_ATTR):  # queued from a warm start: where its config came from
            tags[WARM_ATTR] = str(trial.user_attrs[WARM_ATTR])[:5000]
        run_ids: list[str] = []

        def on_start(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr(RUN_ATTR, run_id)

        def tag_state(state: str) -> None:
            if run_ids:
                mlflow.MlflowClient().set_tag(run_ids[0], "trial_state", state)

        try:
            values = sample(trial, spec.space, spec.fixed_values)
            cfg = compose_trial(spec, values)
            if deadline is not None and cfg.trainer.get("budget_minutes"):
                cfg.trainer.budget_minutes = deadline.trial_minutes(cfg.trainer.budget_minutes)
            # Reports every epoch (NopPruner just never prunes): curves for the intermediate-values plot.
            callbacks = [] if spec.multi_objective or monitor is None else [KerasPruningCallback(trial, monitor=monitor)]
            metrics = training.train(cfg, callbacks=callbacks, parent_run_id=parent_run_id, tags=tags, on_run_start=on_start)
        except optuna.TrialPruned:
            steps = trial.storage.get_trial(trial._trial_id).intermediate_values
            if run_ids and steps:
                mlflow.MlflowClient().set_tag(run_ids[0], "pruned_at_round", str(max(steps) + 1))
            tag_state("PRUNED")
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
            tag_state("FAIL")
            raise
        finally:
            keras.backend.clear_session()  # memory must not grow from trial to trial (this also runs gc.collect)
        try:
            values_out = [objective_value(o.metric, metrics) for o in spec.objectives]
        except KeyError as err:
            trial.set_user_attr("error", str(err)[:1000])
            tag_state("FAIL")
            raise
        tag_state("COMPLETE")
        trial.set_user_attr("train_seconds", metrics.get("train_seconds"))
        return values_out if spec.multi_objective else values_out[0]

    return objective


def mlruns_root():
    return Path(os.environ.get("LYRICSLAB_MLRUNS", "mlruns"))


def open_study(spec, attempts: int = 8):
    """The study, created if new. Several hosts starting at the same instant on an empty database all
    try to create Optuna's tables and the study; the losers of that race see a unique violation and
    simply try again (the winner's tables and study are there by then)."""
    rounds = rounds_per_trial(compose_trial(spec, {}).trainer)
    for attempt in range(attempts):
        try:
            storage = make_storage(spec.storage, spec.study_name, mlruns_root(), spec.heartbeat,
                                   retry_dead_trial(spec))
            return optuna.create_study(study_name=spec.study_name, storage=storage, load_if_exists=True,
                                       directions=[o.direction for o in spec.objectives],
                                       sampler=make_sampler(spec), pruner=make_pruner(spec, rounds))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def retry_dead_trial(spec):
    """Re-queues a trial whose worker died, up to heartbeat.max_retry times."""
    max_retry = spec.heartbeat.get("max_retry", 2)
    return RetryDeadWorkerTrial(None if max_retry is None else int(max_retry))


def run_worker(spec, study, parent_run_id: str, callbacks=()) -> FailureGuard:
    """Run trials until the study has n_trials, its end has come or too many failed; any host, any time.

    The worker takes a number from the study (its sampler's stream: seed + number) and the sweep's
    end stored with the study (lyricslab.sweeps.coordination), so workers on several hosts neither
    replay each other's trials nor outlast the sweep.
    """
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    guard = FailureGuard(spec.max_failed_share)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    retry = retry_dead_trial(spec)
    lock = StudyLock(spec.storage, spec.study_name, mlruns_root())
    number = claim_worker_number(study, lock)
    deadline = SweepDeadline.until(study_deadline(study, lock, spec.timeout))
    per_trial = compose_trial(spec, {}).trainer.get("budget_minutes")
    # Parallel workers would each start one trial past n_trials; this study hands out exactly n_trials.
    study = BudgetedStudy(study, spec.n_trials, lock, before_count=lambda s: fail_dead_worker_trials(s, retry),
                          sampler=make_sampler(spec, number), can_start=lambda: deadline.room_for(per_trial))

    def stop_when_no_room(study, trial) -> None:  # the next trial would get too little of its budget
        if not deadline.room_for(per_trial):
            study.stop()

    while len(study.get_trials(deepcopy=False, states=counted)) < spec.n_trials and not guard.message:
        left = deadline.minutes_left()
        if not deadline.room_for(per_trial):
            break
        try:
            # gc_after_trial=False: the objective's keras clear_session() has just run a full collection.
            study.optimize(objective_factory(spec, parent_run_id, number, deadline), n_trials=None,
                           timeout=None if left is None else 60.0 * left, catch=(Exception,), gc_after_trial=False,
                           callbacks=[MaxTrialsCallback(spec.n_trials, states=counted), guard, progress_line,
                                      stop_when_no_room, *callbacks])
        except BudgetSpent:  # the other workers hold the remaining trials, or the sweep's time is up
            pass
        except UpdateFinishedTrialError as err:
            # Another process failed this trial while it ran (its heartbeat looked stale): it has been
            # re-queued already, so this worker just goes on with the next one.
            print(f"warning: {err}", file=sys.stderr, flush=True)
            continue
        break
    return guard


def summary(study, spec) -> None:
    states = [t.state.name for t in study.trials]
    print("\n" + "=" * 72)
    print(f"study {spec.study_name}: {len(states)} trials | " +
          ", ".join(f"{s.lower()} {states.count(s)}" for s in ("COMPLETE", "PRUNED", "FAIL") if s in states))
    frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "duration"))
    if len(frame):
        frame["duration"] = frame["duration"].dt.total_seconds().round(1)
        frame.columns = [c.replace("params_", "") for c in frame.columns]
        print(frame.to_string(index=False, max_colwidth=24))
    for t in best_trials(study, spec):
        print(f"\nbest trial {t.number}: {', '.join(f'{o.metric}={v:.4f}' for o, v in zip(spec.objectives, t.values))}")
        print("  " + " ".join(f"{k}={v}" for k, v in t.params.items()))
