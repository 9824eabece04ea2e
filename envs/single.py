"""A single-env ``gymnasium.Env`` view of a physai task (``physai/<Task>-v0``)."""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym
import mujoco
import numpy as np

from physai.envs.engine import BatchedEngine
from physai.envs.spec import build_spec


def task_spaces(engine: BatchedEngine) -> tuple[gym.spaces.Space, gym.spaces.Box]:
    """One env's spaces: unbounded float32 observations (for a camera task a ``Dict`` of uint8 ``pixels``,
    ``depth`` in metres and the kept ``state`` terms), actions in [-1, 1] per actuator."""
    act = gym.spaces.Box(-1.0, 1.0, shape=(engine.num_actions,), dtype=np.float32)
    if engine.camera is None:
        return gym.spaces.Box(-np.inf, np.inf, shape=(engine.observation_dim,), dtype=np.float32), act
    camera = engine.camera.spec
    image = (camera.height, camera.width)
    spaces = {"pixels": gym.spaces.Box(0, 255, shape=(*image, 3 * camera.frame_stack), dtype=np.uint8)}
    if camera.depth:
        spaces["depth"] = gym.spaces.Box(0.0, engine.camera.far, shape=(*image, camera.frame_stack), dtype=np.float32)
    if engine.policy_state_columns.size:
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, shape=(engine.policy_state_columns.size,),
                                         dtype=np.float32)
    return gym.spaces.Dict(spaces), act


def env_row(obs: Any, row: int) -> Any:
    """Row ``row`` of a batch of observations, flat or a dict of arrays."""
    if isinstance(obs, dict):
        return {key: value[row] for key, value in obs.items()}
    return obs[row]


class PhysaiEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: dict[str, Any], render_mode: Optional[str] = None, width: int = 320,
                 height: int = 240) -> None:
        self.spec_ = build_spec(**task)
        self.engine = BatchedEngine(self.spec_, num_envs=1, nthread=1)
        self.observation_space, self.action_space = task_spaces(self.engine)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.engine.dt))}
        self.dt = self.engine.dt
        self.render_mode = render_mode
        self._size = (width, height)
        self._renderer = None
        self._render_data = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is not None:
            self.engine.reseed(self.np_random)  # a seed fixes the env's randomized physics too
        else:
            self.engine.rng = self.np_random
        self.engine.reset_envs(np.arange(1))
        return env_row(self.engine.policy_observation(self.engine.observe()), 0), {}

    def step(self, action):
        out = self.engine.step(np.asarray(action, dtype=np.float64).reshape(1, -1), autoreset=False)
        raw = out["info"]
        info: dict[str, Any] = {"exploded": bool(raw["exploded"][0])}
        if "episode_terms" in raw:
            info["episode_terms"] = {k: float(v[0]) for k, v in raw["episode_terms"].items()}
        # ``item()`` gives the Python float/bool of a one-element array, as float(x[0])/bool(x[0]) would.
        obs = env_row(self.engine.policy_observation(out["obs"]), 0)
        return obs, out["reward"].item(), out["terminated"].item(), out["truncated"].item(), info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.engine.model, height=self._size[1], width=self._size[0])
            self._render_data = mujoco.MjData(self.engine.model)
        mujoco.mj_setState(self.engine.models[0], self._render_data, self.engine.state[0],
                           mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(self.engine.models[0], self._render_data)
        camera = self.spec_.camera if self.spec_.camera is not None else -1
        self._renderer.update_scene(self._render_data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.engine.close()
