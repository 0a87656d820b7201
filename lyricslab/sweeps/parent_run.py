"""The sweep's MLflow parent run: created once per study, reopened on resume, filled in at the end."""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import RunStatus
from omegaconf import OmegaConf

from lyricslab.sweeps.coordination import StudyLock
from lyricslab.sweeps.spec import SweepSpec
from lyricslab.tracking import runs as tracking

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"


def ensure_parent(study: optuna.Study, spec: SweepSpec, tracking_cfg: Any, lock: StudyLock | None = None) -> str:
    """The study's parent run id, creating the run the first time; reopened (RUNNING) on resume.

    Under the study's lock: hosts starting together must not each create a parent run."""
    experiment_id = tracking.setup(tracking_cfg)
    client = mlflow.MlflowClient()
    with lock.held() if lock is not None else contextlib.nullcontext():
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id:
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            tag_pins(client, run_id, spec)
            return run_id
        run = client.create_run(experiment_id, run_name=f"sweep:{spec.study_name}",
                                tags={"sweep": spec.study_name, "lyricslab.role": "sweep-parent",
                                      **{k: v for k, v in tracking.run_tags_base().items()}})
        run_id = run.info.run_id
        study.set_user_attr(PARENT_ATTR, run_id)
    params = {"sweep.file": spec.path.name, "sweep.study_name": spec.study_name, "sweep.n_trials": spec.n_trials,
              "sweep.timeout": spec.timeout, "sweep.budget_minutes": spec.budget_minutes,
              "sweep.objectives": [f"{o.metric}:{o.direction}" for o in spec.objectives],
              "sweep.sampler": json.dumps(spec.sampler), "sweep.pruner": json.dumps(spec.pruner),
              "sweep.fixed": " ".join(spec.fixed)}
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:6000])
    client.log_artifact(run_id, str(spec.path))
    space = {p.name: {"pinned": p.value} if p.pinned else {"distribution": repr(p.distribution)} for p in spec.space}
    for p in spec.space:
        space[p.name]["when"] = p.when
    client.log_dict(run_id, space, "search_space.json")
    tag_pins(client, run_id, spec)
    return run_id


def tag_pins(client: mlflow.MlflowClient, run_id: str, spec: SweepSpec) -> None:
    """Searched keys pinned on the command line, as tags (a resume may pin differently; params cannot change)."""
    for key, value in spec.pinned.items():
        client.set_tag(run_id, f"pinned.{key}", str(value))


def close_orphan_runs(study: optuna.Study) -> None:
    """Trials failed because their worker died (seen by a parent, a resume or the heartbeat) leave
    their MLflow child runs RUNNING: end them FAILED, with the reason."""
    client = None
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = trial.user_attrs.get(RUN_ATTR)
        if not run_id:
            continue
        client = client or mlflow.MlflowClient()
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            continue
        if run.info.status == "RUNNING":
            error = trial.user_attrs.get("error") or "worker died mid-trial (heartbeat lost)"
            client.set_tag(run_id, "error", error[:5000])
            client.set_tag(run_id, "trial_state", "FAIL")
            client.set_terminated(run_id, status="FAILED")


def _plots(study: optuna.Study, spec: SweepSpec, out: Path) -> list[str]:
    """optuna.visualization figures as HTML (plotly) and PNG (the matplotlib twins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" is said by the summary
    names = [o.metric for o in spec.objectives]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures = {"pareto_front": "plot_pareto_front"} if spec.multi_objective else {
        "optimization_history": "plot_optimization_history", "param_importances": "plot_param_importances",
        "parallel_coordinate": "plot_parallel_coordinate", "slice": "plot_slice",
        "intermediate_values": "plot_intermediate_values"}
    made = []
    for name, fn in figures.items():
        kwargs = {"target_names": names} if spec.multi_objective else {"target_name": names[0]}
        if fn == "plot_intermediate_values":
            kwargs = {}
        if fn == "plot_param_importances" and (len(complete) < 2 or len(study.best_trial.params) < 2):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                getattr(vis, fn)(study, **kwargs).write_html(out / f"{name}.html", include_plotlyjs="cdn")
                made.append(f"{name}.html")
            except Exception as err:  # a plot that cannot be drawn for this study is skipped, not fatal
                print(f"  (skipped {name}.html: {err})")
            try:
                ax = getattr(vis_mpl, fn)(study, **kwargs)
                fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
                fig.set_size_inches(10, 6)
                fig.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight")
                plt.close(fig)
                made.append(f"{name}.png")
            except Exception as err:
                print(f"  (skipped {name}.png: {err})")
    return made


def registered_name(spec: SweepSpec) -> str:
    return f"lyricslab-{spec.study_name}"


def register_best(spec: SweepSpec, run_id: str) -> str:
    """Register the best trial's model folder; the `best` alias moves only when the best trial changes."""
    client = mlflow.MlflowClient()
    name = registered_name(spec)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"Best model of the lyricslab sweep {spec.study_name!r}")
    try:
        current = client.get_model_version_by_alias(name, "best")
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and current.run_id == run_id:
        return current.version
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    version = client.create_model_version(name, source=source, run_id=run_id, tags={"sweep": spec.study_name})
    client.set_registered_model_alias(name, "best", version.version)
    return version.version


def best_config_path(spec: SweepSpec, cfg: Any) -> Path:
    """A copy of best_config.yaml beside the tracking store, so re-running needs no download."""
    root = Path(str(cfg.tracking.artifact_root)).parent
    return root / "sweeps" / spec.study_name / "best_config.yaml"


def best_trials(study: optuna.Study, spec: SweepSpec) -> list[optuna.trial.FrozenTrial]:
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return []
    return list(study.best_trials) if spec.multi_objective else [study.best_trial]


def finish_parent(study: optuna.Study, spec: SweepSpec, run_id: str, best_config: Any | None,
                  interrupted: bool = False) -> dict[str, Any]:
    """Best values and params, trial counts, the trials table, best_config.yaml and plots."""
    client = mlflow.MlflowClient()
    states = [t.state for t in study.trials]
    counts = {f"trials_{s.name.lower()}": float(states.count(s)) for s in
              (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)}
    metrics: dict[str, float] = dict(counts)
    best = best_trials(study, spec)
    if best and not spec.multi_objective:
        metrics[f"best_{spec.objectives[0].metric}"] = float(best[0].value)
        metrics["best_trial"] = float(best[0].number)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if best and not spec.multi_objective:
        for key, value in best[0].params.items():
            client.set_tag(run_id, f"best.{key}", str(value))
        best_run = best[0].user_attrs.get(RUN_ATTR)
        if best_run:
            client.set_tag(run_id, "best_run_id", best_run)
            version = register_best(spec, best_run)
            client.set_tag(run_id, "registered_model", f"models:/{registered_name(spec)}@best (version {version})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "user_attrs", "duration"))
        frame.to_csv(out / "trials.csv", index=False)
        if best_config is not None:
            # Re-runs as one training: python -m lyricslab.run -cp <folder> -cn best_config
            text = OmegaConf.to_yaml(best_config, resolve=True)
            text += "hydra:\n  run:\n    dir: .\n  output_subdir: null\n"
            # As conf/config.yaml: log to the console, not to a run.log in the current folder.
            text += "defaults:\n  - _self_\n  - override hydra/job_logging: stdout\n"
            (out / "best_config.yaml").write_text(text)
            local = best_config_path(spec, best_config)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
        if spec.multi_objective and best:
            (out / "pareto_front.json").write_text(json.dumps(
                [{"trial": t.number, "values": t.values, "params": t.params} for t in best], indent=2))
        _plots(study, spec, out)
        client.log_artifacts(run_id, tmp)
    if not interrupted and study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        return metrics  # another host still runs trials: the last one to finish ends the parent run
    status = RunStatus.KILLED if interrupted else RunStatus.FINISHED
    client.set_terminated(run_id, status=RunStatus.to_string(status))
    return metrics
