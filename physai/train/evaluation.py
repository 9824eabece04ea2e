"""Closed-loop evaluation: run a policy for n episodes on fresh, recorded seeds."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, TypedDict

import numpy as np

from physai.core.stats import mean_ci95

ActFn = Callable[[np.ndarray], np.ndarray]


class ReturnFigures(TypedDict):
    """Deterministic returns on recorded seeds, with a Student-t 95% CI: every evaluation's record."""

    mean_return: float
    std_return: float
    ci95_low: float
    ci95_high: float
    n_episodes: int
    solved_threshold: Optional[float]
    solved: Optional[bool]
    episode_returns: list[float]
    seeds: list[int]


def evaluation_seeds(base_seed: int, offset: int, n_episodes: int) -> list[int]:
    """Seeds disjoint from training seeds and reproducible from the config."""
    start = offset + base_seed * 10_000
    return list(range(start, start + n_episodes))


def episode_returns(task, act: ActFn, seeds: Sequence[int]) -> list[float]:
    env = task.make()
    returns = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def summarize_returns(returns: Sequence[float], seeds: Sequence[int],
                      solved_threshold: float | None) -> ReturnFigures:
    stats = mean_ci95(returns)
    figures: ReturnFigures = {"mean_return": stats["mean"], "std_return": stats["std"], "ci95_low": stats["ci95_low"],
               "ci95_high": stats["ci95_high"], "n_episodes": stats["n"], "solved_threshold": solved_threshold,
               "solved": None if solved_threshold is None else bool(stats["mean"] >= solved_threshold),
               "episode_returns": [float(r) for r in returns], "seeds": [int(s) for s in seeds]}
    return figures
