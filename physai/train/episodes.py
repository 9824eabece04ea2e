"""A finished episode as a row of the learning curve, shared by every trainer (imports no training library)."""

from __future__ import annotations

from typing import Any

TERM_PREFIX = "reward_term/"


def curve_row(timesteps: int, episode_return: float, episode_length: int, terms: dict[str, float]) -> dict[str, Any]:
    """One finished episode of the learning curve; physai tasks report each reward term's episode sum (the
    curves users tune rewards from)."""
    return {"timesteps": int(timesteps), "episode_return": float(episode_return), "episode_length": int(episode_length),
            **{f"{TERM_PREFIX}{name}": float(value) for name, value in terms.items()}}
