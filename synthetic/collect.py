"""Real transitions from the simulator: what the world model learns from.

Works with any task (physai tasks and any gymnasium id) through its single-env view, so the
recorded episodes are exactly what a policy sees. physai tasks also record each episode's
physics context (the domain-randomization draws), which the world model can condition on.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from physai.core.errors import ConfigError
from physai.edge.runtime import EdgePolicy
from physai.synthetic.dataset import Episode

ActionFn = Callable[[np.ndarray], np.ndarray]


def make_action_fn(kind: str, action_space, rng: np.random.Generator, bundle: Optional[str] = None,
                   noise: float = 0.0) -> tuple[ActionFn, str]:
    """A batched policy ``obs (n, d) -> actions (n, a)`` and a description for the dataset's provenance.

    ``random`` draws uniformly from the action space; ``bundle`` runs an exported policy (numpy and
    onnxruntime only, checksums verified) with optional Gaussian exploration noise.
    """
    low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
    if kind == "random":
        return (lambda obs: rng.uniform(low, high, size=(len(obs), *low.shape)).astype(np.float32),
                "uniform random actions")
    if kind == "bundle":
        if not bundle:
            raise ConfigError("policy=bundle needs the bundle directory: set ...bundle=<run_dir>/bundle")
        policy = EdgePolicy.load(bundle)

        def act(obs: np.ndarray) -> np.ndarray:
            action = policy.act(np.asarray(obs, np.float32).reshape(len(obs), -1))
            if noise > 0:
                action = action + rng.normal(0.0, noise, size=action.shape) * (high - low) / 2
            return np.clip(action, low, high).astype(np.float32)

        return act, f"exported policy bundle ({policy.manifest.get('config_hash', '?')}) + Gaussian noise {noise}"
    raise ConfigError(f"unknown policy kind {kind!r}; use random or bundle")


def collect_episodes(task, steps: int, act: ActionFn, seed: int, progress: bool = True) -> list[Episode]:
    """Run ``act`` in the task's single env until ``steps`` transitions are recorded.

    Each episode is reset with its own seed (seed, seed + 1, ...), stored with the episode so any one
    can be replayed. The last episode is cut at the budget and marked truncated.
    """
    env = task.make()
    episodes: list[Episode] = []
    recorded = 0
    columns = (TextColumn("collect"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn())
    try:
        with Progress(*columns, disable=not progress) as bar:
            job = bar.add_task("collect", total=steps)
            while recorded < steps:
                episode_seed = seed + len(episodes)
                obs, _ = env.reset(seed=episode_seed)
                engine = getattr(env.unwrapped, "engine", None)
                context = engine.context_matrix()[0].astype(np.float32) if engine is not None else None
                observations, actions, rewards, terminations, truncations = [np.asarray(obs)], [], [], [], []
                done = False
                while not done and recorded < steps:
                    action = np.asarray(act(np.asarray(obs)[None])[0])
                    obs, reward, terminated, truncated, _ = env.step(action)
                    recorded += 1
                    truncated = truncated or recorded >= steps
                    observations.append(np.asarray(obs))
                    actions.append(action)
                    rewards.append(float(reward))
                    terminations.append(bool(terminated))
                    truncations.append(bool(truncated and not terminated))
                    done = terminated or truncated
                length = len(rewards)
                episodes.append(Episode.real(
                    np.asarray(observations, np.float32), np.asarray(actions, np.float32), np.asarray(rewards),
                    np.asarray(terminations), np.asarray(truncations), env_index=0, seed=episode_seed,
                    context=None if context is None or context.size == 0 else np.tile(context, (length, 1))))
                bar.update(job, completed=recorded)
    finally:
        env.close()
    return episodes


def random_action_episodes(task, steps: int, seed: int) -> tuple[list[Episode], object, object]:
    """``steps`` env steps of uniformly random actions on ``task``, with its spaces: the smallest real dataset
    (fixtures, format checks, world-model smoke fits)."""
    env = task.make()
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    act, _ = make_action_fn("random", action_space, np.random.default_rng(0))
    return collect_episodes(task, steps, act, seed=seed, progress=False), observation_space, action_space
