"""Registers every physai task under ``physai/<Task>-v0`` so ``gymnasium.make`` finds it.

The task definitions are the ``task:`` sections of ``configs/env/*.yaml``: the same file a
Hydra run composes, so a task exists once.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import gymnasium as gym
import yaml

ENTRY_POINT = "physai.envs.single:PhysaiEnv"
# gym.make_vec(id, num_envs=N) builds the batched engine; vectorization_mode="sync" still wraps single envs.
VECTOR_ENTRY_POINT = "physai.envs.vector:make_vector_env"


def packaged_env_configs() -> dict[str, dict[str, Any]]:
    """Env option name (``cartpole_balance``, ``hopper``) -> its YAML config, for every file in configs/env.

    A file may extend another env option through its Hydra defaults list (``defaults: [cartpole_balance,
    _self_]``, as ``cartpole_balance_pixels`` does): its fields are merged over that option's, as Hydra does."""
    raw = {}
    for source in sorted((files("physai.configs") / "env").iterdir(), key=lambda p: p.name):
        if source.name.endswith(".yaml"):
            raw[source.name[:-len(".yaml")]] = yaml.safe_load(source.read_text()) or {}
    return {name: _extended(name, raw) for name in raw}


def _extended(name: str, raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entry in raw[name].get("defaults") or []:
        if isinstance(entry, str) and entry in raw and entry != name:
            merged = _merge(merged, _extended(entry, raw))
    own = {key: value for key, value in raw[name].items() if key != "defaults"}
    return _merge(merged, own)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def packaged_task_configs() -> dict[str, dict[str, Any]]:
    """The env options that define a physai task (MJCF + terms)."""
    return {name: config for name, config in packaged_env_configs().items() if config.get("task")}


def packaged_tasks() -> dict[str, dict[str, Any]]:
    """gymnasium id -> task definition, for every env config that defines a physai task."""
    return {config["id"]: config["task"] for config in packaged_task_configs().values()}


def register_tasks() -> None:
    for env_id, task in packaged_tasks().items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, vector_entry_point=VECTOR_ENTRY_POINT,
                         kwargs={"task": task})
