"""Terms of gymnasium's planar MuJoCo locomotion tasks (HalfCheetah, Hopper, Walker2d, v5).

They re-declare gymnasium's ``*_v5.py`` semantics term by term, so ``physai/HalfCheetah-v5`` and
its siblings step the same MDP as gymnasium's own envs, batched: the observation is ``qpos``
without the x position plus ``qvel`` (clipped for Hopper and Walker2d), the forward reward is
the x displacement over the control step divided by ``dt``, "healthy" is a strict range test
on z, the torso angle and (Hopper) the rest of the state, and reset noise is added to the
model's ``qpos0`` and zero velocity. Referenced from task files as ``physai.envs.locomotion.<fn>``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

NOISE_KINDS = ("uniform", "normal")


# ----- observations ------------------------------------------------------------------------
def qpos_obs(env, exclude: int = 1) -> np.ndarray:
    """``qpos`` without its first ``exclude`` coordinates (gymnasium drops the x position)."""
    return env.qpos[:, exclude:]


def qvel_obs(env, clip: Optional[float] = None) -> np.ndarray:
    """``qvel``, clipped to [-clip, clip] when given (Hopper-v5 and Walker2d-v5 clip at 10)."""
    return env.qvel if clip is None else env.xp.clip(env.qvel, -clip, clip)


# ----- rewards -----------------------------------------------------------------------------
def forward_velocity(env, joint: str = "rootx") -> np.ndarray:
    """(x after - x before) / dt over the control step: gymnasium's ``x_velocity``, not qvel."""
    column = env.joint_qpos(joint, "joint")
    return (env.qpos[:, column] - env.qpos_before_step[:, column]) / env.dt


def healthy(env, z_range: Sequence[float], angle_range: Sequence[float],
            state_range: Optional[Sequence[float]] = None, z_index: int = 1, angle_index: int = 2) -> np.ndarray:
    """1.0 where the body is healthy, else 0.0; ranges are open intervals, as in gymnasium.

    ``state_range`` (Hopper) bounds every coordinate of ``concat(qpos, qvel)[2:]``.
    """
    return env.xp.astype(_is_healthy(env, z_range, angle_range, state_range, z_index, angle_index), env.xp.float64)


# ----- terminations ------------------------------------------------------------------------
def unhealthy(env, z_range: Sequence[float], angle_range: Sequence[float],
              state_range: Optional[Sequence[float]] = None, z_index: int = 1, angle_index: int = 2) -> np.ndarray:
    """gymnasium's ``terminate_when_unhealthy``; switch it off with ``terminations.unhealthy=null``."""
    return ~_is_healthy(env, z_range, angle_range, state_range, z_index, angle_index)


def _is_healthy(env, z_range, angle_range, state_range, z_index, angle_index) -> np.ndarray:
    z_low, z_high = _bounds("z_range", z_range)
    angle_low, angle_high = _bounds("angle_range", angle_range)
    z = env.qpos[:, z_index]
    angle = env.qpos[:, angle_index]
    ok = (z_low < z) & (z < z_high) & (angle_low < angle) & (angle < angle_high)
    if state_range is not None:
        low, high = _bounds("state_range", state_range)
        qpos_rest = env.qpos[:, 2:]
        qvel_rest = env.qvel[:, max(0, 2 - env.model.nq):]
        ok &= ((low < qpos_rest) & (qpos_rest < high)).all(axis=1)
        ok &= ((low < qvel_rest) & (qvel_rest < high)).all(axis=1)
    return ok


def _bounds(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    if len(bounds) != 2 or float(bounds[0]) > float(bounds[1]):
        raise ValueError(f"{name}={list(bounds)} must be [low, high] with low <= high (.inf for no bound)")
    return float(bounds[0]), float(bounds[1])


# ----- events ------------------------------------------------------------------------------
def reset_noise(env, env_ids: np.ndarray, scale: float, qpos: str = "uniform", qvel: str = "uniform") -> None:
    """qpos = qpos0 + noise, qvel = noise: ``uniform`` on [-scale, scale] or ``normal`` with std ``scale``.

    Draws all qpos noise, then all qvel noise, so a single env seeded like gymnasium's gets
    gymnasium's start state.
    """
    for field_name, kind in (("qpos", qpos), ("qvel", qvel)):
        if kind not in NOISE_KINDS:
            raise ValueError(f"{field_name}={kind!r} must be one of {list(NOISE_KINDS)}")
    if scale < 0:
        raise ValueError(f"scale={scale} must be >= 0")
    count = len(env_ids)
    env.qpos[env_ids] = env.model.qpos0 + _noise(env.rng, qpos, scale, (count, env.model.nq))
    env.qvel[env_ids] = _noise(env.rng, qvel, scale, (count, env.model.nv))


def _noise(rng: np.random.Generator, kind: str, scale: float, size: tuple[int, int]) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(low=-scale, high=scale, size=size)
    return scale * rng.standard_normal(size)
