"""Observation/return normalization statistics stored as plain arrays (no pickles).

The same numbers are folded into the exported ONNX graph, so the robot sees exactly
the normalization the policy was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physai.core.io import atomic_path

NORMALIZATION_FILE = "normalization.npz"


@dataclass
class ObsNormalization:
    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float

    def apply(self, obs: np.ndarray) -> np.ndarray:
        scaled = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip)


def save_vecnormalize(venv, path: Path) -> None:
    """Write the running statistics of an SB3 ``VecNormalize`` as an ``.npz`` file."""
    arrays = {
        "obs_mean": venv.obs_rms.mean, "obs_var": venv.obs_rms.var, "obs_count": np.float64(venv.obs_rms.count),
        "ret_mean": venv.ret_rms.mean, "ret_var": venv.ret_rms.var, "ret_count": np.float64(venv.ret_rms.count),
        "clip_obs": np.float64(venv.clip_obs), "clip_reward": np.float64(venv.clip_reward),
        "epsilon": np.float64(venv.epsilon), "norm_obs": np.bool_(venv.norm_obs),
        "norm_reward": np.bool_(venv.norm_reward),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def restore_vecnormalize(venv, path: Path) -> None:
    with np.load(path, allow_pickle=False) as data:
        venv.obs_rms.mean, venv.obs_rms.var = data["obs_mean"].copy(), data["obs_var"].copy()
        venv.obs_rms.count = float(data["obs_count"])
        venv.ret_rms.mean, venv.ret_rms.var = data["ret_mean"].copy(), data["ret_var"].copy()
        venv.ret_rms.count = float(data["ret_count"])


def load_obs_normalization(path: Path) -> ObsNormalization | None:
    """The observation transform a checkpoint was trained with, or None if it used raw observations."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        if not bool(data["norm_obs"]):
            return None
        return ObsNormalization(mean=data["obs_mean"].astype(np.float64), var=data["obs_var"].astype(np.float64),
                                clip=float(data["clip_obs"]), epsilon=float(data["epsilon"]))
