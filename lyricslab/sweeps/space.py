"""Search spaces in the Hydra Optuna sweeper's grammar, parsed by Hydra's own override parser.

    params:
      model: choice(lstm, gru, transformer)
      optimizer.learning_rate: tag(log, interval(1e-4, 1e-2))
      model.units:                       # conditional: sampled only for RNN trials
        space: int(interval(64, 256))
        when: {model: [lstm, gru]}

choice() -> categorical, interval() -> float (int() -> integer), tag(log, ...) -> log scale,
range(a, b[, step]) -> integer (or float) steps from a up to, not including, b: Hydra's meaning of
range(), where the Hydra Optuna sweeper plugin includes b. shuffle(range(..)) -> categorical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException


class SpaceError(ValueError):
    """The search space is invalid; the message names the parameter and the fix."""


@dataclass
class Param:
    name: str
    distribution: optuna.distributions.BaseDistribution
    when: dict[str, list[Any]] = field(default_factory=dict)
    pinned: bool = False  # set on the command line: not searched; its one value is the distribution's only choice

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        return all(key in chosen and chosen[key] in allowed for key, allowed in self.when.items())

    @property
    def value(self) -> Any:
        """A pinned parameter's value."""
        return self.distribution.choices[0]


_parser = OverridesParser.create()


def parse_value(text: str) -> Any:
    """A plain override value ('lstm', '3', '0.1') as Hydra would read it."""
    return _parser.parse_override(f"x={text}").value()


def to_distribution(name: str, text: str) -> optuna.distributions.BaseDistribution:
    try:
        override = _parser.parse_override(f"{name}={text}")
        value = override.value()
    except HydraException as err:
        raise SpaceError(f"params.{name}: cannot parse {text!r} ({err}); use choice(...), interval(a, b), "
                         f"int(interval(a, b)) or tag(log, interval(a, b))") from None
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise SpaceError(f"params.{name}: choice() needs at least one value")
        return optuna.distributions.CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        items = list(override.sweep_iterator())  # Hydra's own expansion: the stop is excluded
        if not items:
            raise SpaceError(f"params.{name}: range({value.start}, {value.stop}, {value.step}) is empty")
        if value.shuffle:  # asked to be unordered
            return optuna.distributions.CategoricalDistribution(items)
        # Ordered steps, not a categorical: TPE and CMA-ES can then use that 3 lies between 2 and 4.
        step, low = abs(value.step), min(items)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return optuna.distributions.IntDistribution(low, max(items), step=step)
        high = round(low + step * (len(items) - 1), 12)  # from the count: no float drift in the last item
        return optuna.distributions.FloatDistribution(float(low), high, step=float(step))
    if isinstance(value, IntervalSweep):
        lo, hi, log = value.start, value.end, "log" in value.tags
        if not lo < hi:
            raise SpaceError(f"params.{name}: interval({lo}, {hi}) is empty; the lower bound must be below the upper")
        if log and lo <= 0:
            raise SpaceError(f"params.{name}: tag(log, interval({lo}, {hi})) needs a lower bound above 0")
        if isinstance(lo, int) and isinstance(hi, int):
            return optuna.distributions.IntDistribution(lo, hi, log=log)
        return optuna.distributions.FloatDistribution(float(lo), float(hi), log=log)
    raise SpaceError(f"params.{name}: {text!r} is a single value, not a search space; put it under `fixed:` "
                     f"or write choice({text})")


def parse_space(params: Mapping[str, Any] | None, fixed: Mapping[str, Any] | None = None,
                pinned: Mapping[str, Any] | None = None) -> list[Param]:
    """Ordered parameters; a condition may name a parameter declared above it or a fixed key.

    `pinned` (command-line overrides of searched keys) take those keys out of the search: each
    keeps its condition but always takes its one value. A condition on a fixed key, or on an
    unconditionally pinned one, is settled here: the parameter is kept without it, or dropped.
    """
    space: list[Param] = []
    settled = dict(fixed or {})
    pinned = dict(pinned or {})
    for name, spec in (params or {}).items():
        name = str(name)
        when: dict[str, list[Any]] = {}
        never = None
        if isinstance(spec, Mapping):
            if "space" not in spec:
                raise SpaceError(f"params.{name}: a conditional parameter needs `space:` and `when:`")
            for parent, allowed in (spec.get("when") or {}).items():
                allowed = list(allowed) if isinstance(allowed, (list, tuple)) else [allowed]
                above = next((p for p in space if p.name == parent), None)
                if above is None and parent in settled:
                    if settled[parent] not in allowed:
                        never = f"only when {parent} is one of {allowed}, and {parent}={settled[parent]}"
                    continue
                if above is None:
                    raise SpaceError(f"params.{name}: `when` names {parent!r}, which is not a parameter declared "
                                     f"above it nor a fixed key")
                parent_choices = grid_values(above.distribution)
                if parent_choices is not None and not set(allowed) & set(parent_choices):
                    if not above.pinned:
                        raise SpaceError(f"params.{name}: `when: {parent}: {allowed}` can never hold; "
                                         f"{parent} takes {list(parent_choices)}")
                    never = f"only when {parent} is one of {allowed}, and {parent}={above.value}"
                when[parent] = allowed
            spec = spec["space"]
        if never is not None:
            if name in pinned:
                raise SpaceError(f"{name}={pinned[name]} is never used: the sweep sets {name} {never}; "
                                 f"drop one of the two overrides")
            continue  # cannot apply with these fixed values: nothing to search
        if name in pinned:
            value = pinned[name]
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise SpaceError(f"{name}={value!r}: a searched key can only be pinned to a single value")
            space.append(Param(name, optuna.distributions.CategoricalDistribution([value]), when, pinned=True))
            if not when:
                settled[name] = value
            continue
        space.append(Param(name, to_distribution(name, str(spec)), when))
    return space


def suggest(trial: optuna.trial.BaseTrial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def grid_values(dist: optuna.distributions.BaseDistribution) -> list[Any] | None:
    """Every value of a choice() or range() parameter, for the grid sampler; None for a continuous one
    (or one with more values than a grid could ever run)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if dist.step is None or dist.log:
        return None
    count = int(round((dist.high - dist.low) / dist.step)) + 1
    if count > 10_000:
        return None
    return [dist.low + i * dist.step if isinstance(dist.low, int) else round(dist.low + i * dist.step, 12)
            for i in range(count)]


def sample(trial: optuna.trial.BaseTrial, space: list[Param], fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sample the parameters that apply to this trial, in order (parents before children)."""
    chosen: dict[str, Any] = dict(fixed or {})
    values: dict[str, Any] = {}
    for param in space:
        if param.applies(chosen):
            values[param.name] = param.value if param.pinned else suggest(trial, param.name, param.distribution)
            chosen[param.name] = values[param.name]
    return values


def to_overrides(values: Mapping[str, Any]) -> list[str]:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return repr(v)
        return str(v)

    return [f"{k}={fmt(v)}" for k, v in values.items()]


def group_options(conf_dir: Path, group: str) -> list[str] | None:
    folder = conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None
