"""Warm start: known-good configs become a study's first trials (Optuna's `enqueue_trial`).

    warm_start:                                    # in a sweep file, tried in this order
      - {study: demo, best: 3}                     # the best 3 trials of another study (same storage)
      - {leaderboard: lyricslab, top: 2}           # the top 2 runs of an experiment's leaderboard
      - {params: {model: gru, optimizer.learning_rate: 0.003}}
      - {overrides: [model=lstm, model.units=256]} # an explicit override list

On the command line: `warm_start.study=demo warm_start.best=3` adds one entry, `warm_start=[...]`
replaces the file's list. Each config is checked against the search space first: keys the space
does not search and values outside it are an error for an explicit entry and skipped (with a note)
for one taken from a study or the leaderboard, whose space may differ. Optuna runs queued trials
before it samples new ones; each carries its source as the `warm_start` user attribute, its MLflow
run as the `warm_start` tag, and the sweep's parent run lists them all (tags and warm_start.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna

from lyricslab.config.paths import CONF_DIR
from lyricslab.sweeps.space import Param, SpaceError, group_options, parse_value
from lyricslab.sweeps.storage import make_storage
from lyricslab.tracking.leaderboard import COLUMNS, HIGHER_IS_BETTER, sort_column
from lyricslab.tracking.runs import flatten

WARM_ATTR = "warm_start"
KINDS = ("study", "leaderboard", "params", "overrides")


@dataclass
class WarmConfig:
    params: dict[str, Any]
    source: str


def check_entries(raw: Any) -> list[dict[str, Any]]:
    """The `warm_start` list, its shape checked at load time (one line per problem)."""
    if raw is None:
        return []
    entries = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        raise SpaceError(f"warm_start must be a list of entries such as {{study: demo, best: 3}}, not {raw!r}")
    out = []
    for i, entry in enumerate(entries, 1):
        kinds = [k for k in KINDS if isinstance(entry, Mapping) and k in entry]
        if len(kinds) != 1:
            raise SpaceError(f"warm_start entry {i} ({entry!r}) must name exactly one of {', '.join(KINDS)}, e.g. "
                             f"{{study: demo, best: 3}}, {{leaderboard: lyricslab, top: 2}} or {{params: {{model: gru}}}}")
        entry = dict(entry)
        kind = kinds[0]
        count_key = {"study": "best", "leaderboard": "top"}.get(kind)
        if count_key:
            count = entry.setdefault(count_key, 1)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise SpaceError(f"warm_start entry {i}: {count_key} must be a whole number >= 1, not {count!r}")
        if kind == "params" and not isinstance(entry["params"], Mapping):
            raise SpaceError(f"warm_start entry {i}: params must be a mapping such as {{model: gru}}")
        if kind == "overrides":
            items = entry["overrides"]
            if not isinstance(items, list) or not all(isinstance(o, str) and "=" in o for o in items):
                raise SpaceError(f"warm_start entry {i}: overrides must be a list of key=value strings, "
                                 f"e.g. [model=gru, optimizer.learning_rate=0.003]")
        out.append(entry)
    return out


# ---- fitting a config to the space ----------------------------------------------------------------------

def coerce(param: Param, value: Any) -> Any:
    """`value` as the parameter's distribution holds it (MLflow params are strings); ValueError if outside."""
    dist = param.distribution
    if isinstance(value, str):
        value = parse_value(value) if value else value
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
        raise ValueError(f"{param.name}={value!r} is not one of {list(dist.choices)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{param.name}={value!r} is not a number")
    if isinstance(dist, optuna.distributions.IntDistribution):
        if float(value) != int(value):
            raise ValueError(f"{param.name}={value!r} is not a whole number")
        value = int(value)
    else:
        value = float(value)
    if not dist._contains(dist.to_internal_repr(value)):  # bounds and step, as Optuna checks them
        raise ValueError(f"{param.name}={value!r} is outside {dist}")
    return value


def fit_space(space: list[Param], fixed: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """(the values the space takes from `params`, keys of `params` it does not search).

    Walks the space in order like `sample`: a conditional parameter is taken only where its
    condition holds, a pinned one keeps its pin. A value outside its distribution raises ValueError.
    """
    chosen: dict[str, Any] = dict(fixed)
    out: dict[str, Any] = {}
    names = {p.name for p in space}
    for param in space:
        if param.when and not all(key in chosen for key in param.when):
            # A parent left to the sampler: the condition is unknown, so keep the value if one is given.
            if param.name in params and not param.pinned:
                out[param.name] = coerce(param, params[param.name])
            continue
        if not param.applies(chosen):
            continue
        if param.pinned:
            chosen[param.name] = param.value
        elif param.name in params:
            out[param.name] = chosen[param.name] = coerce(param, params[param.name])
    return out, [k for k in params if k not in names]


# ---- sources ------------------------------------------------------------------------------------------

def from_study(entry: Mapping[str, Any], spec: Any, root: Any) -> list[WarmConfig]:
    """The `best` best finished trials of another study (best first; a Pareto front by its first objective)."""
    name = str(entry["study"])
    storage = make_storage(entry.get("storage", spec.storage), name, root, spec.heartbeat)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SpaceError(f"warm_start: no study named {name!r} in storage={entry.get('storage', spec.storage) or 'journal'}; "
                         f"name a study that has run (or give its storage: {{study: {name}, storage: URL}})") from None
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    sign = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    done.sort(key=lambda t: sign[0] * t.values[0])
    return [WarmConfig(dict(t.params), f"study {name} trial {t.number} (value {t.values[0]:.4g})")
            for t in done[: int(entry["best"])]]


def _group_matcher(group: str) -> Callable[[Mapping[str, str]], str | None] | None:
    """For a config-group parameter (`model`, `embedding`): the option whose composed values match a run's
    logged params best (runs log the composed config, not the option names)."""
    from hydra import compose, initialize_config_dir


    options = group_options(CONF_DIR, group)
    if options is None:
        return None
    values: dict[str, dict[str, str]] = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for option in options:
            values[option] = flatten(compose("config", overrides=[f"{group}={option}"])[group], f"{group}.")

    def match(logged: Mapping[str, str]) -> str | None:
        scores = {o: sum(logged.get(k) == v for k, v in kv.items()) for o, kv in values.items()}
        best = max(scores.values())
        winners = [o for o, s in scores.items() if s == best]
        return winners[0] if best and len(winners) == 1 else None

    return match


def from_leaderboard(entry: Mapping[str, Any], spec: Any) -> list[WarmConfig]:
    """The top `top` finished runs of an experiment (or `all`), ranked like `python -m lyricslab.compare`."""
    import mlflow


    experiment = str(entry["leaderboard"])
    try:
        column, _ = sort_column(str(entry.get("sort", "best_val_bpc")))
    except ValueError as err:
        raise SpaceError(f"warm_start: {err}") from None
    kwargs = {"search_all_experiments": True} if experiment == "all" else {"experiment_names": [experiment]}
    if experiment != "all" and mlflow.get_experiment_by_name(experiment) is None:
        raise SpaceError(f"warm_start: no experiment named {experiment!r} in {mlflow.get_tracking_uri()}; "
                         f"name one with runs (python -m lyricslab.compare lists them) or `all`")
    field = COLUMNS[column]
    order = "DESC" if column in HIGHER_IS_BETTER else "ASC"
    runs = mlflow.search_runs(filter_string="attributes.status = 'FINISHED'", order_by=[f"{field} {order}"],
                              output_format="list", **kwargs)
    runs = [r for r in runs if r.data.tags.get("lyricslab.role") != "sweep-parent"
            and field.removeprefix("metrics.") in r.data.metrics][: int(entry["top"])]
    matchers = {p.name: _group_matcher(p.name) for p in spec.space}
    out = []
    for rank, run in enumerate(runs, 1):
        logged = run.data.params
        params = {}
        for name, matcher in matchers.items():
            value = matcher(logged) if matcher is not None else logged.get(name)
            if value is not None:
                params[name] = value
        metric = run.data.metrics[field.removeprefix("metrics.")]
        out.append(WarmConfig(params, f"leaderboard {experiment} #{rank} run {run.info.run_id[:8]} "
                                      f"({column} {metric:.4g})"))
    return out


def explicit(entry: Mapping[str, Any], index: int) -> WarmConfig:
    if "params" in entry:
        return WarmConfig(dict(entry["params"]), f"explicit #{index}")
    params = {}
    for item in entry["overrides"]:
        key, _, value = item.partition("=")
        params[key.strip().lstrip("+")] = value
    return WarmConfig(params, f"explicit #{index}")


def resolve(spec: Any, root: Any) -> tuple[list[WarmConfig], list[str]]:
    """Every configured warm start, fitted to the space; notes say what was skipped and why."""
    configs: list[WarmConfig] = []
    notes: list[str] = []
    for index, entry in enumerate(check_entries(spec.warm_start), 1):
        if "study" in entry:
            found, strict = from_study(entry, spec, root), False
        elif "leaderboard" in entry:
            found, strict = from_leaderboard(entry, spec), False
        else:
            found, strict = [explicit(entry, index)], True
        if not found:
            notes.append(f"warm_start entry {index} ({entry!r}) found no finished trials or runs")
        for config in found:
            try:
                values, unknown = fit_space(spec.space, spec.fixed_values, config.params)
            except ValueError as err:
                if strict:
                    raise SpaceError(f"warm_start {config.source}: {err}; change the value or the space") from None
                notes.append(f"skipped warm start {config.source}: {err}")
                continue
            if unknown and strict:
                raise SpaceError(f"warm_start {config.source}: {', '.join(unknown)} not searched by this sweep "
                                 f"(it searches {', '.join(p.name for p in spec.space)}); put fixed keys under `fixed:`")
            if not values:
                notes.append(f"skipped warm start {config.source}: none of its values is searched here")
                continue
            configs.append(WarmConfig(values, config.source))
    return configs, notes


def enqueue(study: optuna.Study, configs: list[WarmConfig], room: int) -> list[tuple[int, WarmConfig]]:
    """Queue up to `room` configs (skipping any the study already holds); returns (trial number, config)."""
    queued = []
    for config in configs[:max(room, 0)]:
        before = {t.number for t in study.get_trials(deepcopy=False)}
        study.enqueue_trial(config.params, user_attrs={WARM_ATTR: config.source}, skip_if_exists=True)
        new = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
        queued += [(t.number, config) for t in new]
    return queued


def record(client: Any, parent_run_id: str, queued: list[tuple[int, WarmConfig]]) -> None:
    """The parent run lists each warm-started trial and where it came from."""
    if not queued:
        return
    for number, config in queued:
        client.set_tag(parent_run_id, f"warm_start.trial_{number}", config.source[:5000])
    client.log_dict(parent_run_id, [{"trial": n, "source": c.source, "params": c.params} for n, c in queued],
                    "warm_start.json")


def queue(study: optuna.Study, spec: Any, configs: list[WarmConfig], notes: list[str],
          parent_run_id: str) -> list[str]:
    """Queue and record the resolved warm starts (see `resolve`); console lines to print."""
    import mlflow

    if not configs and not notes:
        return []
    notes = list(notes)
    finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                             optuna.trial.TrialState.PRUNED)))
    room = spec.n_trials - finished
    if len(configs) > room:
        notes.append(f"{len(configs)} warm starts but room for {room} more trial(s) (n_trials={spec.n_trials}): "
                     f"queued the first {max(room, 0)}")
    queued = enqueue(study, configs, room)
    record(mlflow.MlflowClient(), parent_run_id, queued)
    lines = [f"note: {n}" for n in notes]
    lines += [f"warm start: trial {n} <- {c.source}: " + " ".join(f"{k}={v}" for k, v in c.params.items())
              for n, c in queued]
    return lines
