"""Does the exported graph compute what the trained policy computes? Checked on random observations."""

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
