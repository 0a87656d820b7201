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
import time
import warnings
from typing import Any

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


def load(sweep: str, spec_over: dict[str, Any], hydra_over: list[str], check: bool = True):
    """The sweep spec; `check` composes the space against the configs (a worker skips it: its parent did)."""
    from lyricslab.sweeps.spec import check_choices, load_spec, validate

    nested = {k: v for k, v in spec_over.items() if isinstance(v, dict)}
    flat = {k: v for k, v in spec_over.items() if not isinstance(v, dict)}
    spec = load_spec(sweep, flat, extra_fixed=hydra_over)
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


def compose_trial(spec, values: dict[str, Any]):
    from hydra import compose, initialize_config_dir

    from lyricslab.sweeps.space import to_overrides
    from lyricslab.sweeps.spec import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*spec.fixed, *to_overrides(values)])


def make_sampler(spec, worker: int = 0):
    """The sweep's sampler; worker K draws from seed + K, so parallel workers never share a random
    stream (identical streams would make every worker propose the same trials) while a rerun
    with the same seed and worker count proposes the same ones."""
    import optuna

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
    from lyricslab.sweeps.space import SpaceError, grid_values

    grid = {}
    for p in (p for p in spec.space if not p.pinned):
        values = None if p.when else grid_values(p.distribution)
        if values is None:
            raise SpaceError(f"sampler grid needs unconditional choice() or range() parameters; {p.name} is not one")
        grid[p.name] = values
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(spec, rounds: int):
    """Median or Hyperband pruning over evaluation rounds; `rounds` is the most a trial runs."""
    import optuna

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
        import optuna

        from lyricslab.sweeps.workers import DIED_ATTR

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
    import keras
    import mlflow
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna_integration.keras import KerasPruningCallback

    from lyricslab.sweeps.objectives import value as objective_value
    from lyricslab.sweeps.parent_run import RUN_ATTR, close_orphan_runs
    from lyricslab.sweeps.space import sample
    from lyricslab.sweeps.warm_start import WARM_ATTR
    from lyricslab.sweeps.workers import record_worker
    from lyricslab.training.train import train

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
            metrics = train(cfg, callbacks=callbacks, parent_run_id=parent_run_id, tags=tags, on_run_start=on_start)
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
    from pathlib import Path

    return Path(os.environ.get("LYRICSLAB_MLRUNS", "mlruns"))


def open_study(spec, worker: int = 0):
    import optuna

    from lyricslab.sweeps.storage import make_storage

    storage = make_storage(spec.storage, spec.study_name, mlruns_root(), spec.heartbeat, retry_dead_trial(spec))
    from lyricslab.sweeps.deadline import rounds_per_trial

    rounds = rounds_per_trial(compose_trial(spec, {}).trainer)
    return optuna.create_study(study_name=spec.study_name, storage=storage, load_if_exists=True,
                               directions=[o.direction for o in spec.objectives],
                               sampler=make_sampler(spec, worker), pruner=make_pruner(spec, rounds))


def retry_dead_trial(spec):
    """Re-queues a trial whose worker died, up to heartbeat.max_retry times."""
    from lyricslab.sweeps.workers import RetryDeadWorkerTrial

    max_retry = spec.heartbeat.get("max_retry", 2)
    return RetryDeadWorkerTrial(None if max_retry is None else int(max_retry))


def run_worker(spec, study, parent_run_id: str, callbacks=(), worker: int = 0) -> FailureGuard:
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from lyricslab.sweeps.deadline import SweepDeadline
    from lyricslab.sweeps.storage import trials_lock_path
    from lyricslab.sweeps.trial_count import BudgetedStudy, BudgetSpent
    from lyricslab.sweeps.workers import fail_dead_worker_trials

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    guard = FailureGuard(spec.max_failed_share)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Parallel workers would each start one trial past n_trials; this study hands out exactly n_trials.
    retry = retry_dead_trial(spec)
    study = BudgetedStudy(study, spec.n_trials, trials_lock_path(spec.storage, spec.study_name, mlruns_root()),
                          before_count=lambda s: fail_dead_worker_trials(s, retry))
    started = time.monotonic()
    deadline = SweepDeadline(None if spec.timeout is None else float(spec.timeout) / 60.0)
    per_trial = compose_trial(spec, {}).trainer.get("budget_minutes")

    def stop_when_no_room(study, trial) -> None:  # the next trial would get too little of its budget
        if not deadline.room_for(per_trial):
            study.stop()

    while len(study.get_trials(deepcopy=False, states=counted)) < spec.n_trials and not guard.message:
        left = None if spec.timeout is None else float(spec.timeout) - (time.monotonic() - started)
        if (left is not None and left <= 0) or not deadline.room_for(per_trial):
            break
        try:
            # gc_after_trial=False: the objective's keras clear_session() has just run a full collection.
            study.optimize(objective_factory(spec, parent_run_id, worker, deadline), n_trials=None, timeout=left,
                           catch=(Exception,), gc_after_trial=False,
                           callbacks=[MaxTrialsCallback(spec.n_trials, states=counted), guard, progress_line,
                                      stop_when_no_room, *callbacks])
        except BudgetSpent:  # the other workers hold the remaining trials
            pass
        except UpdateFinishedTrialError as err:
            # Another process failed this trial while it ran (its heartbeat looked stale): it has been
            # re-queued already, so this worker just goes on with the next one.
            print(f"warning: {err}", file=sys.stderr, flush=True)
            continue
        break
    return guard


def summary(study, spec) -> None:
    from lyricslab.sweeps.parent_run import best_trials

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
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    from lyricslab.sweeps import parent_run as report
    from lyricslab.sweeps.workers import Supervisor, fail_dead_worker_trials
    from lyricslab.tracking import runs as tracking

    try:
        study = open_study(spec, worker or 0)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # an unusable storage URL: Optuna/SQLAlchemy raise many kinds
        print(f"error: cannot open the study in storage={spec.storage} ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''}); use journal, journal:PATH or a SQLAlchemy URL such as "
              f"postgresql+psycopg://user:pass@host/db", file=sys.stderr)
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
        run_worker(spec, study, study.user_attrs[report.PARENT_ATTR], worker=worker)
        return 0

    from lyricslab.sweeps import warm_start

    try:  # known-good configs to try first, checked against the space before anything starts
        warm, warm_notes = warm_start.resolve(spec, mlruns_root())
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parent = report.ensure_parent(study, spec, base_cfg.tracking)
    for line in warm_start.queue(study, spec, warm, warm_notes, parent):  # queued before any worker starts
        print(line, flush=True)
    pins = "".join(f", pinned {k}={v}" for k, v in spec.pinned.items())
    print(f"sweep {spec.study_name}: {spec.n_trials} trials, sampler {spec.sampler.get('name')}, pruner "
          f"{spec.pruner.get('name')}, {workers} worker(s){pins}; MLflow parent run {parent}", flush=True)
    interrupted, guard, supervisor = False, FailureGuard(spec.max_failed_share), None
    try:
        if workers > 1:
            supervisor = Supervisor(study, [sys.executable, "-m", "lyricslab.sweep", *argv], workers, spec.n_trials,
                                    retry, spec.timeout, stop=lambda: guard.check(study) is not None)
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
