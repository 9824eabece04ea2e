"""The two replay buffers MBPO samples from: real transitions (SB3's own buffer) and model rollouts.

``MixedReplayBuffer`` is SB3's ``ReplayBuffer`` with one change: ``sample`` draws ``real_ratio`` of each
batch from its own real rows and the rest from a ``ModelBuffer`` of synthetic rows, which keeps the
last ``retain_rounds`` rounds of model rollouts. SAC's ``train()`` calls ``sample`` as usual.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from physai.core.errors import ConfigError


class ModelBuffer:
    """Synthetic transitions kept by round: the newest ``retain_rounds`` rounds, the oldest dropped whole."""

    FIELDS = ("obs", "act", "next_obs", "reward", "done")

    def __init__(self, obs_dim: int, act_dim: int, retain_rounds: int, device: th.device | str = "cpu") -> None:
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.retain_rounds = int(retain_rounds)
        self.device = th.device(device)
        self.rounds: deque[dict[str, np.ndarray]] = deque()
        self._flat: dict[str, np.ndarray] = self._empty()

    def _empty(self) -> dict[str, np.ndarray]:
        return {"obs": np.zeros((0, self.obs_dim), np.float32), "act": np.zeros((0, self.act_dim), np.float32),
                "next_obs": np.zeros((0, self.obs_dim), np.float32), "reward": np.zeros(0, np.float32),
                "done": np.zeros(0, np.float32)}

    def __len__(self) -> int:
        return int(self._flat["reward"].shape[0])

    def add_round(self, obs, act, next_obs, reward, done) -> int:
        """Append one round of rows (dropping the oldest round beyond ``retain_rounds``); returns rows added."""
        block = {"obs": np.asarray(obs, np.float32).reshape(-1, self.obs_dim),
                 "act": np.asarray(act, np.float32).reshape(-1, self.act_dim),
                 "next_obs": np.asarray(next_obs, np.float32).reshape(-1, self.obs_dim),
                 "reward": np.asarray(reward, np.float32).reshape(-1),
                 "done": np.asarray(done, np.float32).reshape(-1)}
        rows = block["reward"].shape[0]
        if any(block[name].shape[0] != rows for name in self.FIELDS):
            raise ValueError(f"model buffer: a round's columns disagree on the row count "
                             f"{ {name: block[name].shape[0] for name in self.FIELDS} }")
        self.rounds.append(block)
        while len(self.rounds) > self.retain_rounds:
            self.rounds.popleft()
        self._flat = {name: np.concatenate([r[name] for r in self.rounds]) for name in self.FIELDS} \
            if self.rounds else self._empty()
        return rows

    def sample(self, batch_size: int, env: Optional[VecNormalize] = None) -> ReplayBufferSamples:
        index = np.random.randint(0, len(self), size=batch_size)
        flat = self._flat
        obs, next_obs, reward = flat["obs"][index], flat["next_obs"][index], flat["reward"][index].reshape(-1, 1)
        if env is not None:
            obs = env.normalize_obs(obs).astype(np.float32)
            next_obs = env.normalize_obs(next_obs).astype(np.float32)
            reward = env.normalize_reward(reward).astype(np.float32)
        data = (obs, flat["act"][index], next_obs, flat["done"][index].reshape(-1, 1), reward)
        return ReplayBufferSamples(*(th.as_tensor(a, device=self.device) for a in data))


class MixedReplayBuffer(ReplayBuffer):
    """SB3's real replay buffer whose ``sample`` mixes in ``1 - real_ratio`` synthetic rows.

    Real rows live in this buffer's own arrays (plus each row's physics context when the task has one),
    synthetic rows in ``model_buffer``; the two are sampled separately and concatenated (real rows
    first), so a batch's real and synthetic counts are exact. With an empty (or no) model buffer the
    whole batch is real. The model buffer is not pickled with this buffer.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: th.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, real_ratio: float = 0.05, context_dim: int = 0) -> None:
        if optimize_memory_usage:
            raise ConfigError("MBPO's real replay buffer needs every next observation stored: leave "
                              "optimize_memory_usage=False")
        super().__init__(buffer_size, observation_space, action_space, device=device, n_envs=n_envs,
                         optimize_memory_usage=False, handle_timeout_termination=handle_timeout_termination)
        self.real_ratio = float(real_ratio)
        self.context_dim = int(context_dim)
        self.contexts = np.zeros((self.buffer_size, self.n_envs, self.context_dim), dtype=np.float32)
        self.pending_context: Optional[np.ndarray] = None
        self.model_buffer: Optional[ModelBuffer] = None
        self.last_batch_counts = (0, 0)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["model_buffer"] = None  # synthetic rows are regenerated, never pickled with the real ones
        return state

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        if self.context_dim:
            context = self.pending_context
            self.contexts[self.pos] = 0.0 if context is None else np.asarray(context).reshape(self.n_envs, -1)
        super().add(obs, next_obs, action, reward, done, infos)

    def add_rows(self, obs, act, next_obs, reward, terminated, truncated, context=None) -> int:
        """Append flat transitions (warm start). With several envs, rows fill whole buffer positions
        (``n_envs`` at a time) and a remainder of fewer than ``n_envs`` rows is dropped; returns rows added."""
        n = (len(reward) // self.n_envs) * self.n_envs
        if n == 0:
            return 0

        def shape(values):
            values = np.asarray(values)
            return values[:n].reshape(n // self.n_envs, self.n_envs, *values.shape[1:])

        obs, act, next_obs = shape(obs), shape(act), shape(next_obs)
        reward, terminated, truncated = shape(reward), shape(terminated).astype(bool), shape(truncated).astype(bool)
        context = shape(context) if context is not None and self.context_dim else None
        for i in range(n // self.n_envs):
            if context is not None:
                self.contexts[self.pos] = context[i]
            done = terminated[i] | truncated[i]
            infos = [{"TimeLimit.truncated": bool(truncated[i, e] and not terminated[i, e])}
                     for e in range(self.n_envs)]
            super().add(obs[i], next_obs[i], act[i], reward[i], done, infos)
        return n

    def real_transitions(self) -> dict[str, Optional[np.ndarray]]:
        """Every stored real transition, flat: obs, act, next_obs, reward, terminated (timeouts are not
        terminations), context (None without one)."""
        upper = self.buffer_size if self.full else self.pos
        flat = lambda a: a[:upper].reshape(upper * self.n_envs, *a.shape[2:])  # noqa: E731
        terminated = self.dones[:upper] * (1.0 - self.timeouts[:upper])
        return {"obs": flat(self.observations).astype(np.float32), "act": flat(self.actions).astype(np.float32),
                "next_obs": flat(self.next_observations).astype(np.float32),
                "reward": flat(self.rewards), "terminated": flat(terminated) > 0.5,
                "context": flat(self.contexts) if self.context_dim else None}

    def sample(self, batch_size: int, env: Optional[VecNormalize] = None) -> ReplayBufferSamples:
        synthetic = self.model_buffer if self.model_buffer is not None and len(self.model_buffer) else None
        n_real = batch_size if synthetic is None else int(round(self.real_ratio * batch_size))
        if self.size() == 0:
            n_real = 0
        n_synthetic = batch_size - n_real
        parts = []
        if n_real:
            parts.append(super().sample(n_real, env=env))
        if n_synthetic:
            if synthetic is None:
                raise RuntimeError("MBPO replay buffer: no real and no synthetic rows to sample")
            parts.append(synthetic.sample(n_synthetic, env=env))
        self.last_batch_counts = (n_real, n_synthetic)
        if len(parts) == 1:
            return parts[0]
        return ReplayBufferSamples(*(th.cat([p[i] for p in parts]) for i in range(5)))
