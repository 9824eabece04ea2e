"""The batched engine as a gymnasium 1.x ``VectorEnv`` (SB3's view of it is ``physai.train.vec_env``)."""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from physai.envs.engine import DEFAULT_BACKEND, BatchedEngine
from physai.envs.single import env_row, task_spaces
from physai.envs.spec import TaskError, TaskSpec, build_spec


class PhysaiVectorEnv(gym.vector.VectorEnv):
    """A gymnasium ``VectorEnv`` over the batched engine; finished envs reset in the same step."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, spec: TaskSpec, num_envs: int, seed: Optional[int] = None,
                 nthread: Optional[int] = None, backend: str = DEFAULT_BACKEND) -> None:
        self.engine = BatchedEngine(spec, num_envs, seed=seed, nthread=nthread, backend=backend)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = task_spaces(self.engine)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.metadata, "render_fps": 1.0 / self.engine.dt}

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self.engine.seed(seed)
        self.engine.reset_envs(np.arange(self.num_envs))
        return self.engine.policy_observation(self.engine.observe()), {}

    def step(self, actions):
        out = self.engine.step(np.asarray(actions))
        info = _vector_info(self.engine, out["info"], self.num_envs)
        obs = self.engine.policy_observation(out["obs"])
        return obs, out["reward"], out["terminated"], out["truncated"], info

    def close_extras(self, **kwargs: Any) -> None:
        self.engine.close()


def make_vector_env(num_envs: int, task: dict[str, Any], seed: Optional[int] = None, nthread: Optional[int] = None,
                    backend: str = DEFAULT_BACKEND, max_episode_steps: Optional[int] = None) -> PhysaiVectorEnv:
    """``gym.make_vec("physai/<Task>-v0", num_envs=N)``: N envs of the task stepped as one batch.

    ``reset(seed=s)`` fixes every env's randomized physics and trajectory, as a ``SyncVectorEnv`` would.
    The episode length is the task's own (``episode_steps``); gymnasium passes ``max_episode_steps`` from the
    registration, which must agree with it.
    """
    spec = build_spec(**task)
    if max_episode_steps is not None and int(max_episode_steps) != spec.episode_steps:
        raise TaskError(f"task {spec.name}: max_episode_steps={max_episode_steps} differs from the task's "
                        f"episode_steps={spec.episode_steps}; set task.episode_steps instead")
    return PhysaiVectorEnv(spec, num_envs, seed=seed, nthread=nthread, backend=backend)


def final_observations(engine: BatchedEngine, raw: dict[str, Any]) -> list[Any]:
    """The last observation of each env that finished this step, in ``done_ids`` order, as the policy sees it."""
    final = engine.policy_observation(raw["final_obs"], raw["done_ids"], images=raw.get("final_images"))
    return [env_row(final, row) for row in range(raw["done_ids"].size)]


def _vector_info(engine: BatchedEngine, raw: dict[str, Any], num_envs: int) -> dict[str, Any]:
    info: dict[str, Any] = {"exploded": raw["exploded"]}
    if "done_ids" in raw:
        mask = np.zeros(num_envs, dtype=bool)
        mask[raw["done_ids"]] = True
        final_obs = np.empty(num_envs, dtype=object)  # None where no episode ended
        if "final_obs" in raw:
            for env_id, row in zip(raw["done_ids"].tolist(), final_observations(engine, raw)):
                final_obs[env_id] = row
        info.update({"final_obs": final_obs, "_final_obs": mask})
        episode_return = np.zeros(num_envs)
        episode_return[raw["done_ids"]] = raw["episode_return"]
        info.update({"episode_return": episode_return, "_episode_return": mask})
        # gymnasium 1.x's record of finished episodes: arrays over the batch, valid where _final_info is set.
        length = np.zeros(num_envs, dtype=np.int64)
        length[raw["done_ids"]] = raw["episode_length"]
        terms = {}
        for name, values in raw["episode_terms"].items():
            terms[name] = np.zeros(num_envs)
            terms[name][raw["done_ids"]] = values
        info.update({"final_info": {"episode_return": episode_return, "episode_length": length,
                                    "reward_terms": terms}, "_final_info": mask})
    return info
