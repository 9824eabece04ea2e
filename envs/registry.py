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
    """Env option name (``cartpole_balance``, ``hopper``) -> its YAML config, for every file in configs/env."""
    configs = {}
    for source in sorted((files("physai.configs") / "env").iterdir(), key=lambda p: p.name):
        if source.name.endswith(".yaml"):
            configs[source.name[:-len(".yaml")]] = yaml.safe_load(source.read_text()) or {}
    return configs


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
