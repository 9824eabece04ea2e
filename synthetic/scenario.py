"""Scenario prompts: a small config that says which world the world model should generate.

A scenario (``configs/scenario/<task>/<name>.yaml``) names its task, where branches start (real
states, or ranges of observation columns), which physics to imagine (ranges of the task's
domain-randomization context, e.g. ``friction_scale`` or ``actuator_strength/push``), kicks
during a branch, the horizon and how many branches. It is resolved against the task once, so
a misspelled column or an impossible range is refused before any model is loaded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from physai.core.errors import ConfigError

# Physics context values are scales of nominal quantities: 1.0 is nominal, 0 or below is not physical.
CONTEXT_MIN_SCALE = 1e-3


class ScenarioError(ConfigError):
    """A scenario that cannot apply to its task; the message names the scenario and the field."""


@dataclass(frozen=True)
class Perturbation:
    name: str
    columns: np.ndarray          # observation column indices the kick changes
    low: float
    high: float
    first_step: int              # 1-based branch steps between which the kick lands
    last_step: int


@dataclass(frozen=True)
class Scenario:
    """A scenario resolved against one task: names turned into column indices, ranges checked."""

    name: str
    task: str
    edge_case: bool
    start: str
    start_ranges: dict[int, tuple[float, float]]
    context_ranges: dict[int, tuple[float, float]]
    perturbations: tuple[Perturbation, ...]
    horizon: int
    branches: int
    max_disagreement: float
    description: str = ""
    context_names: tuple[str, ...] = field(default=())

    @classmethod
    def nominal(cls, task: str, horizon: int, branches: int, max_disagreement: float,
                context_names: Sequence[str] = ()) -> "Scenario":
        """MBPO's default: branch from real states under the physics they were collected with."""
        return cls(name="nominal", task=task, edge_case=False, start="real", start_ranges={}, context_ranges={},
                   perturbations=(), horizon=horizon, branches=branches, max_disagreement=max_disagreement,
                   context_names=tuple(context_names))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "edge_case": self.edge_case, "start": self.start,
                "horizon": self.horizon, "branches": self.branches, "max_disagreement": self.max_disagreement,
                "context": {self.context_names[i]: list(r) for i, r in self.context_ranges.items()},
                "perturbations": [p.name for p in self.perturbations]}


def resolve_scenario(config: Mapping[str, Any], task_id: str, observation_names: Sequence[str],
                     context_names: Sequence[str]) -> Scenario:
    """Check ``config`` (a ``scenario`` node) against the task and resolve its names."""
    name = str(config.get("name"))
    where = f"scenario {name!r}"
    if config.get("task") != task_id:
        raise ScenarioError(f"{where} is written for task {config.get('task')!r} but this run's env.id is "
                            f"{task_id!r}; pick a scenario from configs/scenario/ made for {task_id}")
    columns = {column: i for i, column in enumerate(observation_names)}
    start_ranges = {_lookup(where, "start_ranges", key, columns, "observation column"):
                    _checked_range(where, f"start_ranges.{key}", value)
                    for key, value in (config.get("start_ranges") or {}).items()}
    if config.get("start") == "ranges" and not start_ranges:
        raise ScenarioError(f"{where}: start=ranges needs start_ranges (observation column -> [low, high]); "
                            f"columns of this task: {list(observation_names)}")
    context_index = {context: i for i, context in enumerate(context_names)}
    context_ranges = {}
    for key, value in (config.get("context") or {}).items():
        if not context_names:
            raise ScenarioError(f"{where}: context.{key} names a physics parameter, but task {task_id} randomizes "
                                f"none (add a startup event to its config to give it one)")
        index = _lookup(where, "context", key, context_index, "physics context parameter")
        low, high = _checked_range(where, f"context.{key}", value)
        if low < CONTEXT_MIN_SCALE:
            raise ScenarioError(f"{where}: context.{key}={[low, high]} goes to {low}; context values scale a "
                                f"physical quantity (1.0 = nominal) and must stay above 0")
        context_ranges[index] = (low, high)
    horizon = int(config.get("horizon", 1))
    perturbations = tuple(_perturbation(where, item, columns, horizon)
                          for item in (config.get("perturbations") or []))
    return Scenario(name=name, task=task_id, edge_case=bool(config.get("edge_case", False)),
                    start=str(config.get("start", "real")), start_ranges=start_ranges,
                    context_ranges=context_ranges, perturbations=perturbations, horizon=horizon,
                    branches=int(config.get("branches", 1)), max_disagreement=float(config.get("max_disagreement")),
                    description=str(config.get("description", "")), context_names=tuple(context_names))


def scenario_of_run(config: Optional[Mapping[str, Any]], task: Any, stage: str) -> Scenario:
    """A run's ``scenario`` resolved against its task, for the stage that needs one."""
    if config is None:
        raise ScenarioError(f"pipeline.stages runs '{stage}' but no scenario is chosen; pick one with "
                            f"scenario=<task>/<name> (the library is configs/scenario/)")
    observation_names, context_names = task.signal_names()
    return resolve_scenario(config, task.id, observation_names, context_names)


def _lookup(where: str, field_name: str, key: str, known: Mapping[str, int], what: str) -> int:
    if key in known:
        return known[key]
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ScenarioError(f"{where}: {field_name}.{key} is not a {what} of this task.{hint} Known: {sorted(known)}")


def _checked_range(where: str, field_name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: {field_name}={value!r} must be a [low, high] pair of numbers") from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ScenarioError(f"{where}: {field_name}={[low, high]} must be finite")
    if low > high:
        raise ScenarioError(f"{where}: {field_name}={[low, high]} has low > high; swap them")
    return low, high


def _perturbation(where: str, item: Mapping[str, Any], columns: Mapping[str, int], horizon: int) -> Perturbation:
    name = str(item.get("name"))
    label = f"perturbations.{name}"
    indices = np.array([_lookup(where, f"{label}.observations", c, columns, "observation column")
                        for c in item.get("observations") or []], dtype=np.int64)
    if indices.size == 0:
        raise ScenarioError(f"{where}: {label}.observations is empty; name the columns the kick changes")
    low, high = _checked_range(where, f"{label}.delta_range", item.get("delta_range"))
    first, last = (int(v) for v in item.get("at_steps", (1, 1)))
    if not 1 <= first <= last <= horizon:
        raise ScenarioError(f"{where}: {label}.at_steps={[first, last]} must satisfy 1 <= first <= last <= "
                            f"horizon ({horizon})")
    return Perturbation(name=name, columns=indices, low=low, high=high, first_step=first, last_step=last)


@dataclass
class Starts:
    """Where each branch starts: observation, physics context and the real state it came from (-1: none)."""

    obs: np.ndarray
    context: Optional[np.ndarray]
    parent_state_id: np.ndarray


def sample_starts(scenario: Scenario, rng: np.random.Generator, real_obs: np.ndarray,
                  real_context: Optional[np.ndarray], real_state_ids: np.ndarray) -> Starts:
    """Draw ``scenario.branches`` start states and contexts.

    ``start=real`` picks real states (MBPO's branching) and keeps their ids as parents; ``start=ranges``
    draws the named columns uniformly and takes the rest from random real states, with no parent.
    Named context ranges replace the real draw; unnamed context keeps what the real state had.
    """
    n = scenario.branches
    picks = rng.integers(0, len(real_obs), size=n)
    obs = np.array(real_obs[picks], dtype=np.float32)
    for column, (low, high) in scenario.start_ranges.items():
        obs[:, column] = rng.uniform(low, high, size=n)
    context = None if real_context is None else np.array(real_context[picks], dtype=np.float32)
    if context is not None:
        for column, (low, high) in scenario.context_ranges.items():
            context[:, column] = rng.uniform(low, high, size=n)
    parents = (np.asarray(real_state_ids)[picks].astype(np.int64) if scenario.start == "real"
               else np.full(n, -1, dtype=np.int64))
    return Starts(obs=obs, context=context, parent_state_id=parents)


def kick_schedule(scenario: Scenario, rng: np.random.Generator, branches: int) -> list[tuple[Perturbation, np.ndarray,
                                                                                              np.ndarray]]:
    """For each perturbation: the branch step it lands on per branch, and its deltas per column."""
    schedule = []
    for kick in scenario.perturbations:
        steps = rng.integers(kick.first_step, kick.last_step, endpoint=True, size=branches)
        deltas = rng.uniform(kick.low, kick.high, size=(branches, kick.columns.size)).astype(np.float32)
        schedule.append((kick, steps, deltas))
    return schedule
