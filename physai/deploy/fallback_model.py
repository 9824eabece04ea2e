"""A fallback controller's physical parameters, read from the task's own MJCF when the bundle is made.

A guard file names the parts (``from_model: {cart_body: cart, pole_body: pole, pole_joint: hinge,
actuator: push}``) instead of copying masses, gear and control period out of the model, so a changed
MJCF cannot leave its fallback tuned for the old robot. The bundle carries the resolved numbers: the
robot builds its fallback without MuJoCo.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physai.core.errors import ConfigError
from physai.envs.engine import load_model

PARTS = {"cart_body": "body", "pole_body": "body", "pole_joint": "joint", "actuator": "actuator"}


def _part_id(model, kind: str, name: str, key: str, task_name: str) -> int:
    import mujoco

    obj = {"body": mujoco.mjtObj.mjOBJ_BODY, "joint": mujoco.mjtObj.mjOBJ_JOINT,
           "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR}[kind]
    index = mujoco.mj_name2id(model, obj, str(name))
    if index < 0:
        raise ConfigError(f"guard.fallback.from_model.{key}={name!r}: task {task_name}'s MJCF has no {kind} of "
                          f"that name; name one of its {kind}s")
    return index


def cart_pole_parameters(model, frame_skip: int, parts: dict[str, str], task_name: str) -> dict[str, float]:
    """Nominal cart and pole masses, the pole's centre of mass and inertia about its hinge axis, the motor's
    force per unit action, the control period and gravity, as ``CartPoleLQR`` takes them."""
    import mujoco

    missing = sorted(set(PARTS) - set(parts))
    if missing:
        raise ConfigError(f"guard.fallback.from_model lacks {missing}; name the MJCF's parts: {sorted(PARTS)}")
    cart, pole = (_part_id(model, "body", parts[k], k, task_name) for k in ("cart_body", "pole_body"))
    joint = _part_id(model, "joint", parts["pole_joint"], "pole_joint", task_name)
    actuator = _part_id(model, "actuator", parts["actuator"], "actuator", task_name)
    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, model.body_iquat[pole])
    rotation = rotation.reshape(3, 3)
    inertia = rotation @ np.diag(model.body_inertia[pole]) @ rotation.T  # about the COM, in the body frame
    axis = np.asarray(model.jnt_axis[joint], dtype=np.float64)
    low, high = model.actuator_ctrlrange[actuator]
    limited = bool(model.actuator_ctrllimited[actuator])
    return {"cart_mass": float(model.body_mass[cart]), "pole_mass": float(model.body_mass[pole]),
            "pole_com": float(np.linalg.norm(model.body_ipos[pole] - model.jnt_pos[joint])),
            "pole_inertia": float(axis @ inertia @ axis / (axis @ axis)),
            "gear": float(model.actuator_gear[actuator][0]),
            "ctrl_half_range": float((high - low) / 2.0) if limited else 1.0,
            "control_period_s": float(model.opt.timestep * frame_skip),
            "gravity": float(-model.opt.gravity[2])}


def resolve_fallback(fallback: dict[str, Any], task) -> dict[str, Any]:
    """``fallback`` with its ``from_model`` block replaced by the numbers it names (explicit keys win)."""
    fallback = dict(fallback)
    parts = fallback.pop("from_model", None)
    if parts is None:
        return fallback
    spec = getattr(task, "task_spec", None)
    if spec is None:
        raise ConfigError(f"guard.fallback.from_model reads a physai task's MJCF, but {task.id} is not a physai "
                          f"task; give the fallback's parameters explicitly")
    measured = cart_pole_parameters(load_model(spec), spec.frame_skip, dict(parts), spec.name)
    return {**measured, **fallback}
