"""A tiny gymnasium env that emits one NaN (or infinity) where and when it is told to: the guard tests' input.

Used through the real command line as ``env=gym env._target_=tests.nonfinite_env.NonFiniteTask
env.id=physai_test/NonFinite-v0 +env.kwargs.bad=reward +env.kwargs.at=1500``: the target registers
the env (a subprocess has not imported this module otherwise) and is physai's own ``GymTask``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from physai.envs.gym_task import GymTask

ENV_ID = "physai_test/NonFinite-v0"


class NonFiniteEnv(gym.Env):
    """A point on a line pushed by the action; reward -x^2. Its ``at``-th step (counted over the env's
    life, across episodes) returns ``value`` as the reward or in observation column 1."""

    metadata = {"render_modes": []}

    def __init__(self, bad: str = "reward", at: int = 100, value: float = float("nan"), render_mode=None) -> None:
        if bad not in ("reward", "observation"):
            raise ValueError(f"bad={bad!r}: choose reward or observation")
        self.bad, self.at, self.value = bad, int(at), float(value)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.steps = 0
        self.x = 0.0
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.t / 50.0, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        self.x = float(np.clip(self.x + 0.1 * float(np.asarray(action).reshape(-1)[0]), -10, 10))
        obs, reward = self._obs(), -self.x ** 2
        if self.steps == self.at:
            if self.bad == "reward":
                reward = self.value
            else:
                obs[1] = self.value
        return obs, float(reward), False, self.t >= 50, {}


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=NonFiniteEnv, max_episode_steps=50)


class NonFiniteTask(GymTask):
    """physai's GymTask for the env above, registering it first."""

    def __init__(self, **kwargs) -> None:
        register()
        super().__init__(**kwargs)
