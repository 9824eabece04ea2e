"""The training batch SB3 learns on: physai's engine behind SB3's ``VecEnv``, or single envs in a DummyVecEnv.

It lives with the trainer, not the simulator: ``physai.envs`` never imports torch or stable-baselines3.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from physai.envs.engine import DEFAULT_BACKEND, BatchedEngine
from physai.envs.single import task_spaces
from physai.envs.vector import final_observations
from physai.envs.spec import TaskSpec


def make_training_vec_env(task, num_envs: int, seed: int) -> VecEnv:
    """The training batch: the batched engine for physai tasks (with training-only events), else single
    envs of the gymnasium id in a DummyVecEnv."""
    if task.task is not None:
        return PhysaiSB3VecEnv(task.train_spec, num_envs, seed=seed, nthread=task.nthread, backend=task.backend)
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(task.env_fn(), n_envs=num_envs, seed=seed)


def batched_engine(venv) -> Optional[BatchedEngine]:
    """The batched engine under a training VecEnv and its wrappers (VecNormalize, checks); None for others."""
    inner = venv
    while inner is not None and not hasattr(inner, "engine"):
        inner = getattr(inner, "venv", None)
    return getattr(inner, "engine", None)


class PhysaiSB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` interface over the engine: PPO and SAC train on the batch directly.

    Finished envs carry ``terminal_observation``, ``TimeLimit.truncated`` and an ``episode``
    record (return, length, per-term reward sums) in their info, as SB3's Monitor would add.
    """

    def __init__(self, spec: TaskSpec, num_envs: int, seed: Optional[int] = None,
                 nthread: Optional[int] = None, backend: str = DEFAULT_BACKEND) -> None:
        self.engine = BatchedEngine(spec, num_envs, seed=seed, nthread=nthread, backend=backend)
        observation_space, action_space = task_spaces(self.engine)
        super().__init__(num_envs, observation_space, action_space)
        self._actions: Optional[np.ndarray] = None
        self.render_mode = None
        self.state_obs: Optional[np.ndarray] = None

    def reset(self):
        if self._seeds[0] is not None:
            self.engine.seed(self._seeds[0])
        self._reset_seeds()
        self.engine.reset_envs(np.arange(self.num_envs))
        self.state_obs = self.engine.observe()
        return self.engine.policy_observation(self.state_obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self):
        out = self.engine.step(self._actions)
        raw = out["info"]
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final = final_observations(self.engine, raw) if "done_ids" in raw else []
        for row, env_id in enumerate(raw.get("done_ids", [])):
            infos[env_id] = {
                "terminal_observation": final[row],
                "TimeLimit.truncated": bool(out["truncated"][env_id]),
                "episode": {"r": float(raw["episode_return"][row]), "l": int(raw["episode_length"][row]),
                            "terms": {k: float(v[row]) for k, v in raw["episode_terms"].items()}},
            }
        for env_id in np.flatnonzero(raw["exploded"]):
            infos[env_id]["exploded"] = True
        dones = out["terminated"] | out["truncated"]
        self.state_obs = out["obs"]  # every state term, after autoreset: what a state teacher acts on
        return self.engine.policy_observation(out["obs"]), out["reward"].astype(np.float32), dones, infos

    def close(self) -> None:
        self.engine.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.engine, attr_name, None)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.engine, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        return [getattr(self.engine, method_name)(*args, **kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
