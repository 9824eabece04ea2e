"""Does the exported graph compute what the trained policy computes? Checked on random observations, or for a
camera policy on the frames it met driving the task (random pixels are not what a camera sees)."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_observations(space: Any, n: int, seed: int) -> np.ndarray:
    """Samples within finite bounds; unbounded dimensions get wide normal draws (exercising clipping too)."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    wide = rng.normal(0.0, 3.0, size=(n, *space.shape))
    bounded = np.isfinite(low) & np.isfinite(high)
    uniform = rng.uniform(np.where(bounded, low, 0.0), np.where(bounded, high, 1.0), size=(n, *space.shape))
    return np.where(bounded, uniform, wide).astype(np.float32)


def parity_report(trained: Any, exported: Any, n: int, seed: int) -> dict:
    """Max/mean |bundle - SB3| over ``n`` observations; SB3 normalizes with its own VecNormalize."""
    observations = random_observations(trained.model.observation_space, n, seed)
    expected = trained.predict(observations)
    actual = exported.act(observations)
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    return {"samples": int(n), "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
            "reference": "stable-baselines3 predict(deterministic=True) after VecNormalize.normalize_obs"}


def parity_on_observations(trained: Any, observations: list[Any], actions: list[Any], n: int) -> dict:
    """Max/mean |bundle - SB3| on up to ``n`` recorded observations (dicts of arrays) and the bundle's actions
    on them, sampled evenly over the recording."""
    rows = np.unique(np.linspace(0, len(observations) - 1, min(n, len(observations))).astype(int))
    batch = {key: np.stack([observations[i][key] for i in rows]) for key in observations[0]}
    expected = trained.predict(batch)
    actual = np.stack([actions[i] for i in rows])
    error = np.abs(np.asarray(actual, np.float64).reshape(expected.shape) - np.asarray(expected, np.float64))
    return {"samples": int(rows.size), "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
            "reference": "stable-baselines3 predict(deterministic=True) on frames of the bundle's closed-loop "
                         "evaluation"}
