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


def packaged_tasks() -> dict[str, dict[str, Any]]:
    """gymnasium id -> task definition, for every env config that defines a physai task."""
    tasks = {}
    for source in sorted((files("physai.configs") / "env").iterdir(), key=lambda p: p.name):
        if not source.name.endswith(".yaml"):
            continue
        config = yaml.safe_load(source.read_text()) or {}
        if config.get("task"):
            tasks[config["id"]] = config["task"]
    return tasks


def register_tasks() -> None:
    for env_id, task in packaged_tasks().items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"task": task})
