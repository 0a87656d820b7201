"""A sweep file (`sweeps/<name>.yaml`): what to search, how, and for how long; validated up front."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lyricslab.config.paths import CONF_DIR, SWEEPS_DIR
from lyricslab.sweeps import objectives as objective_names
from lyricslab.sweeps.space import (
    Param,
    SpaceError,
    group_options,
    parse_space,
    parse_value,
    to_overrides,
)
from lyricslab.sweeps.warm_start import check_entries

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class Objective:
    metric: str
    direction: str = "minimize"

    @property
    def per_epoch(self) -> str | None:
        """The per-epoch log a pruner watches for this objective."""
        return objective_names.per_epoch_name(self.metric)


@dataclass
class SweepSpec:
    name: str
    study_name: str
    path: Path
    n_trials: int = 10
    timeout: float | None = None  # seconds; `budget_minutes` (the whole sweep) replaces it when set (sweeps/deadline.py)
    budget_minutes: float | None = None
    objectives: list[Objective] = field(default_factory=lambda: [Objective("val_bpc")])
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 42})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    fixed: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    space: list[Param] = field(default_factory=list)
    max_failed_share: float = 0.5
    storage: str | None = None
    heartbeat: dict[str, Any] = field(default_factory=lambda: {"interval": 10, "grace": 60, "max_retry": 2})
    pinned: dict[str, Any] = field(default_factory=dict)  # command-line overrides of searched keys
    warm_start: list[dict[str, Any]] = field(default_factory=list)  # configs to try first (sweeps/warm_start.py)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def fixed_values(self) -> dict[str, Any]:
        """The fixed overrides as key -> value, so conditions can test them (`when: {model: transformer}`)."""
        out = {}
        for item in self.fixed:
            key, _, value = item.partition("=")
            out[key.lstrip("+~")] = parse_value(value) if value else None
        return out


def sweep_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
        raise SpaceError(f"no sweep named {name!r}; choose one of {known} or pass sweep=path/to/file.yaml")
    return path


def _objectives(raw: Any) -> list[Objective]:
    """`[val_bpc, train_seconds:minimize]` or `[{metric: .., direction: ..}]`; directions inferred and checked."""
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if isinstance(item, str):
            metric, _, direction = item.partition(":")
        elif isinstance(item, dict) and "metric" in item:
            metric, direction = str(item["metric"]), item.get("direction")
        else:
            raise SpaceError(f"objectives: {item!r} is neither `metric[:direction]` nor {{metric: .., direction: ..}}")
        metric, direction = metric.strip(), (str(direction).strip() or None) if direction else None
        if not metric:
            raise SpaceError("objectives: empty objective name")
        try:
            out.append(Objective(metric, objective_names.check(metric, direction)))
        except objective_names.ObjectiveError as err:
            raise SpaceError(str(err)) from None
    if not out:
        raise SpaceError("objectives: name at least one metric, e.g. [val_bpc]")
    if len({o.metric for o in out}) < len(out):
        raise SpaceError(f"objectives: {[o.metric for o in out]} names a metric twice")
    return out


def split_pins(params: dict[str, Any], extra_fixed: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Command-line overrides of searched keys pin them (key -> value); the rest stay fixed overrides.

    Applying them as fixed overrides would not work: the trial's sampled value comes later and
    wins, and a key that exists only under a condition (model.units, for RNNs) breaks the
    trials where the condition does not hold.
    """
    fixed, pinned = [], {}
    for item in extra_fixed:
        key, eq, value = item.partition("=")
        if eq and key.lstrip("+") in params and not key.startswith("~"):
            pinned[key.lstrip("+")] = parse_value(value) if value else None
        else:
            fixed.append(item)
    return fixed, pinned


def load_spec(name: str, overrides: dict[str, Any] | None = None, extra_fixed: list[str] | None = None) -> SweepSpec:
    """Read a sweep file; `overrides` replace its top-level keys (n_trials=.., storage=..); `extra_fixed`
    (command-line Hydra overrides) apply to every trial, and pin the keys the sweep searches."""
    path = sweep_path(name)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    except Exception as err:  # YAML syntax, interpolation: one line naming the file
        raise SpaceError(f"{path.name} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path.name} must be a mapping of sweep keys (study_name, n_trials, params, ...), "
                         f"not a {type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(raw) - {"study_name", "n_trials", "timeout", "budget_minutes", "objectives", "sampler", "pruner",
                          "fixed", "params", "max_failed_share", "storage", "heartbeat", "warm_start"}
    if unknown:
        raise SpaceError(f"{path.name}: unknown keys {sorted(unknown)}")
    params = dict(raw.get("params") or {})
    extra_fixed, pinned = split_pins(params, list(extra_fixed or []))
    try:
        numbers = {"n_trials": int(raw.get("n_trials", 10)), "max_failed_share": float(raw.get("max_failed_share", 0.5))}
    except (TypeError, ValueError):
        raise SpaceError(f"{path.name}: n_trials must be a whole number and max_failed_share a number in [0, 1] "
                         f"(got {raw.get('n_trials')!r}, {raw.get('max_failed_share')!r})") from None
    budget = raw.get("budget_minutes")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise SpaceError(f"{path.name}: budget_minutes must be a number of minutes above 0, not {budget!r}")
    spec = SweepSpec(
        name=path.stem, path=path, study_name=str(raw.get("study_name") or path.stem),
        n_trials=numbers["n_trials"], budget_minutes=budget,
        timeout=_timeout(raw.get("timeout"), path) if budget is None else 60.0 * float(budget),
        objectives=_objectives(raw.get("objectives", ["val_bpc"])),
        sampler=dict(raw.get("sampler") or {"name": "tpe", "seed": 42}),
        pruner=dict(raw.get("pruner") or {"name": "median"}),
        fixed=[*(raw.get("fixed") or []), *extra_fixed], params=params, pinned=pinned,
        max_failed_share=numbers["max_failed_share"], storage=raw.get("storage"),
        heartbeat={"interval": 10, "grace": 60, "max_retry": 2, **(raw.get("heartbeat") or {})},
        warm_start=check_entries(raw.get("warm_start")),
    )
    if not params:
        raise SpaceError(f"{path.name} has no params to search, so every trial would train the same config; "
                         f"add some (params: {{model.units: 'choice(128, 256)'}}) or train once with python -m "
                         f"lyricslab.run")
    spec.space = parse_space(spec.params, spec.fixed_values, spec.pinned)
    if all(p.pinned for p in spec.space):
        raise SpaceError(f"{path.name}: the command line pins every searched key ({', '.join(sorted(spec.pinned))}), "
                         f"so every trial would train the same config; leave at least one unpinned")
    check_choices(spec)
    if spec.n_trials < 1:
        raise SpaceError(f"{path.name}: n_trials must be at least 1")
    return spec


def _timeout(value: Any, path: Path) -> float | None:
    """Seconds, or None for no limit; checked here because Optuna reads it only once trials run."""
    if value is None:
        return None
    try:
        seconds = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        seconds = None
    # 0 is allowed: a replacement worker started as the sweep's time runs out is passed timeout=0.0.
    if seconds is None or not seconds >= 0:
        raise SpaceError(f"{path.name}: timeout must be a number of seconds >= 0, or null for no limit (got "
                         f"{value!r}); e.g. timeout=900")
    return seconds


def check_choices(spec: SweepSpec) -> None:
    """Sampler and pruner names (again after command-line overrides such as sampler.name=...)."""
    path = spec.path
    if spec.sampler.get("name") not in SAMPLERS:
        raise SpaceError(f"{path.name}: sampler.name must be one of {SAMPLERS}, not {spec.sampler.get('name')!r}")
    if spec.sampler.get("name") == "cmaes" and importlib.util.find_spec("cmaes") is None:
        # Optuna imports it only when the first CMA-ES trial starts: every trial would fail instead.
        raise SpaceError(f"{path.name}: sampler cmaes needs the cmaes package (pip install cmaes, or make install)")
    if spec.pruner.get("name") not in PRUNERS:
        raise SpaceError(f"{path.name}: pruner.name must be one of {PRUNERS}, not {spec.pruner.get('name')!r}")


def validate(spec: SweepSpec) -> None:
    """Compose one config per parameter value family before any trial runs.

    Catches unknown groups, options and keys (Hydra refuses to override a missing key), so a
    typo fails in a second instead of after an hour of trials.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            compose("config", overrides=spec.fixed)
        except HydraException as err:
            raise SpaceError(f"{spec.path.name}: fixed overrides do not compose: {err}".splitlines()[0]) from None
        for param in spec.space:
            choices = getattr(param.distribution, "choices", None)
            options = group_options(CONF_DIR, param.name)
            if options is not None and choices is not None:
                bad = [c for c in choices if str(c) not in options]
                if bad:
                    raise SpaceError(f"params.{param.name}: unknown option(s) {bad}; {param.name} has {options}")
                continue
            # A representative assignment in which this parameter applies.
            pins = {p.name: p.value for p in spec.space if p.pinned}
            assignment = {parent: pins.get(parent, allowed[0]) for parent, allowed in param.when.items()}
            value = choices[0] if choices is not None else getattr(param.distribution, "low")
            assignment[param.name] = value
            try:
                compose("config", overrides=[*spec.fixed, *to_overrides(assignment)])
            except HydraException as err:
                where = f" (when {param.when})" if param.when else ""
                raise SpaceError(f"params.{param.name}{where}: not a key of the composed config; check the name "
                                 f"({str(err).splitlines()[0]})") from None
        if not spec.multi_objective and objective_names.per_epoch_name(spec.objectives[0].metric) is None \
                and spec.pruner.get("name") != "none":
            raise SpaceError(f"{spec.path.name}: pruning needs a per-epoch objective "
                             f"({', '.join(objective_names.PER_EPOCH)}, or their best_ forms); "
                             f"set pruner.name: none for {spec.objectives[0].metric}")
