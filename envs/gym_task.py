"""A task: any registered gymnasium id (``HalfCheetah-v5``) or a physai task (``physai/Cartpole-v0``).

The pipeline only talks to a task through this small surface: make one env, make a gymnasium
vector env, and say its control rate and solved threshold. The training batch is built from a
task by ``physai.train.vec_env`` (physai tasks train on the batched MuJoCo engine).
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np

import physai.envs  # noqa: F401  registers physai/<Task>-v0 ids
from physai.core.errors import ConfigError
from physai.envs.spec import DEFAULT_BACKEND, build_spec
from physai.envs.vector import PhysaiVectorEnv


class GymTask:
    def __init__(self, id: str, kwargs: Optional[dict[str, Any]] = None,
                 max_episode_steps: Optional[int] = None, solved_threshold: Optional[float] = None,
                 control_rate_hz: Optional[float] = None, task: Optional[dict[str, Any]] = None,
                 nthread: Optional[int] = None, backend: Optional[str] = None,
                 train_events: Optional[dict[str, Any]] = None, twin_of: Optional[str] = None) -> None:
        self.id = id
        self.twin_of = twin_of  # the gymnasium id this physai task re-declares, if any
        self.kwargs = dict(kwargs or {})
        # A physai task definition applies only to its own id (env.id=Hopper-v5 leaves it unused).
        self.task = dict(task) if task and self.id.startswith("physai/") else None
        if self.task is not None:
            self.kwargs["task"] = self.task
            self.task_spec = build_spec(**self.task)  # refuses a bad task definition now, not mid-run
        self.train_spec = self._training_spec(dict(train_events or {}))
        self.nthread = nthread
        self.backend = backend or DEFAULT_BACKEND
        self.max_episode_steps = max_episode_steps
        self.spec = _lookup_spec(id)
        self._solved_threshold = solved_threshold
        self._control_rate_hz = control_rate_hz

    def _training_spec(self, train_events: dict[str, Any]) -> Any:
        """The task the training batch steps: the task plus ``train_events``, events only training should see.

        Action-delay randomization belongs here: evaluation, export parity and delay_eval then run the
        nominal control loop, and delay_eval alone imposes each target's modeled delay.
        """
        if not train_events:
            return getattr(self, "task_spec", None)
        if self.task is None:
            raise ConfigError(f"env.train_events applies to physai tasks (physai/<Task>-v0), not {self.id}; "
                              f"remove env.train_events")
        events = dict(self.task.get("events") or {})
        clash = sorted(set(events) & set(train_events))
        if clash:
            raise ConfigError(f"env.train_events.{clash[0]} has the name of an event of env.task.events; give the "
                              f"training-only event another name")
        return build_spec(**{**self.task, "events": {**events, **train_events}})

    def with_task_changes(self, **fields: Any) -> "GymTask":
        """This task with some fields of its definition replaced (a staged scenario's events and physics);
        id, threshold, control rate and backend stay, training-only events do not carry over."""
        if self.task is None:
            raise ConfigError(f"{self.id} has no physai task definition to change")
        changed = copy.copy(self)
        changed.task = {**self.task, **fields}
        changed.kwargs = {**self.kwargs, "task": changed.task}
        changed.task_spec = changed.train_spec = build_spec(**changed.task)
        return changed

    def make(self, render_mode: Optional[str] = None) -> gym.Env:
        try:
            return gym.make(self.id, max_episode_steps=self.max_episode_steps,
                            render_mode=render_mode, **self.kwargs)
        except TypeError as exc:
            raise ConfigError(f"env.kwargs {self.kwargs} were refused by {self.id}: {exc}; "
                              f"fix or remove the offending env.kwargs entry") from exc

    def env_fn(self) -> Callable[[], gym.Env]:
        return lambda: self.make()

    @property
    def batched(self) -> bool:
        return self.task is not None

    def make_vector_env(self, num_envs: int, seed: Optional[int] = None) -> gym.vector.VectorEnv:
        """A gymnasium 1.x ``VectorEnv``: batched engine for physai tasks, ``SyncVectorEnv`` otherwise."""
        if self.task is not None:
            return PhysaiVectorEnv(self.task_spec, num_envs, seed=seed, nthread=self.nthread, backend=self.backend)
        return gym.vector.SyncVectorEnv([self.env_fn() for _ in range(num_envs)])

    def signal_names(self) -> tuple[list[str], list[str]]:
        """Names of the observation columns and of the physics context (domain-randomization draws).

        physai tasks name columns after their terms (``velocities[0]``); other envs get ``obs[i]``
        and no context. World models, scenarios and datasets address signals by these names.
        """
        env = self.make()
        try:
            engine = getattr(env.unwrapped, "engine", None)
            if engine is not None:
                return list(engine.observation_names), list(engine.context_names)
            size = int(np.prod(env.observation_space.shape or (1,)))
            return [f"obs[{i}]" for i in range(size)], []
        finally:
            env.close()

    @property
    def solved_threshold(self) -> Optional[float]:
        if self._solved_threshold is not None:
            return float(self._solved_threshold)
        if self.task is not None and self.task_spec.solved_threshold is not None:
            return float(self.task_spec.solved_threshold)
        threshold = self.spec.reward_threshold
        return None if threshold is None else float(threshold)

    def control_rate_hz(self, env: Optional[gym.Env] = None) -> Optional[float]:
        """The rate at which the policy acts: configured, or 1/dt of a MuJoCo env."""
        if self._control_rate_hz is not None:
            return float(self._control_rate_hz)
        owned = env is None
        env = env or self.make()
        try:
            dt = getattr(env.unwrapped, "dt", None)
            fps = env.metadata.get("render_fps")
            if dt:
                return 1.0 / float(dt)
            return float(fps) if fps else None
        finally:
            if owned:
                env.close()


def _lookup_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error as exc:
        known = list(gym.registry.keys())
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"env.id={env_id!r} is not a registered gymnasium environment.{hint} "
            f"Pass a registered id, e.g. env.id=InvertedPendulum-v5, or pick a preset with env=<name>."
        ) from exc
