"""Terms of the lane-keeping car (``configs/env/car_lane.yaml``, ``envs/assets/car.xml``).

The road runs along +x; the lane center is y = 0. Obstacles and low-friction patches are
static bodies of the MJCF that reset events move in each env's own ``MjModel``, so contacts
and grip are MuJoCo's: a barrel stops the car, a patch's friction is the friction the tires
get. The layout of every env is mirrored in ``env.extras`` for the terms that read it:

- ``extras["obstacles"]``: (num_envs, k, 2) barrel centers (x, y); ``extras["obstacle_radius"]`` (num_envs, k)
- ``extras["patches"]``: (num_envs, m, 4) patch extents (x_low, x_high, y_low, y_high);
  ``extras["patch_friction"]`` (num_envs, m)

Conventions are those of ``physai.envs.mdp``: observation, reward and termination terms take
the engine and return one row per env; events take the engine and the ids of the envs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from physai.envs.mdp import _range, _scales

# Where an obstacle that is switched off for an episode is parked: far behind the start.
PARKED_X = -1000.0


# ----- helpers -------------------------------------------------------------------------------
def _yaw(env, quat_sensor: str) -> np.ndarray:
    """(num_envs,) heading about +z from a framequat sensor (w, x, y, z)."""
    w, x, y, z = env.sensordata[:, env.sensor(quat_sensor, "quat_sensor")].T
    return env.xp.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _planar_pose(env, pos_sensor: str, quat_sensor: str) -> tuple[np.ndarray, np.ndarray]:
    """(num_envs, 2) position in the road plane and (num_envs,) yaw, from frame sensors."""
    return env.sensordata[:, env.sensor(pos_sensor, "pos_sensor")][:, :2], _yaw(env, quat_sensor)


def _layout(env, key: str, term: str) -> np.ndarray:
    if key not in env.extras:
        raise ValueError(f"extras[{key!r}] is not set; add the reset event that places them "
                         f"(fn: physai.envs.driving.{term}) to the task's events")
    return env.extras[key]


def _body_geom(env, body: str, where: str) -> int:
    body_id = env.id_of("body", body, where)
    if env.model.body_geomnum[body_id] != 1:
        raise ValueError(f"{where}: body {body!r} must hold exactly one geom, it holds "
                         f"{int(env.model.body_geomnum[body_id])}")
    return int(env.model.body_geomadr[body_id])


# ----- observations --------------------------------------------------------------------------
def lane_offset(env, pos_sensor: str = "car_pos", center: float = 0.0) -> np.ndarray:
    """Lateral distance from the lane center, meters (left of center is positive)."""
    return env.sensordata[:, env.sensor(pos_sensor, "pos_sensor")][:, 1:2] - center


def heading(env, quat_sensor: str = "car_quat") -> np.ndarray:
    """(sin, cos) of the angle between the car's nose and the road direction."""
    yaw = _yaw(env, quat_sensor)
    return env.xp.stack([env.xp.sin(yaw), env.xp.cos(yaw)], axis=1)


def obstacles_ahead(env, pos_sensor: str = "car_pos", count: int = 2, sensing_range: float = 30.0,
                    behind: float = 2.0) -> np.ndarray:
    """Road-frame offsets (dx, dy) of the ``count`` nearest obstacles not yet passed, nearest first.

    What a perception stack's object list gives a planner. An obstacle further than
    ``sensing_range`` (or missing) reads as (sensing_range, 0).
    """
    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if sensing_range <= 0 or behind < 0:
        raise ValueError(f"sensing_range={sensing_range} must be > 0 and behind={behind} >= 0")
    xp = env.xp
    pos = env.sensordata[:, env.sensor(pos_sensor, "pos_sensor")][:, :2]
    rel = _layout(env, "obstacles", "place_obstacles") - pos[:, None, :]
    visible = (rel[..., 0] > -behind) & (rel[..., 0] < sensing_range)
    key = xp.where(visible, rel[..., 0], xp.inf)
    order = xp.argsort(key, axis=1)[:, :count]
    picked = xp.take_along_axis(rel, order[..., None], axis=1)
    seen = xp.take_along_axis(visible, order, axis=1)
    if picked.shape[1] < count:  # fewer obstacles in the model than asked for
        pad = count - picked.shape[1]
        picked = xp.concatenate([picked, xp.zeros((env.num_envs, pad, 2))], axis=1)
        seen = xp.concatenate([seen, xp.zeros((env.num_envs, pad), dtype=xp.bool)], axis=1)
    unseen = xp.astype(xp.asarray([sensing_range, 0.0]), picked.dtype)
    picked = xp.where(seen[..., None], picked, unseen)
    return picked.reshape(env.num_envs, 2 * count)


def patch_ahead(env, pos_sensor: str = "car_pos", sensing_range: float = 30.0) -> np.ndarray:
    """The nearest low-friction patch not yet left behind, relative to the car in the road frame:
    (x start, x end, y low, y high), clipped to the sensing range; none in range reads as
    (range, range, 0, 0). A camera sees a wet or icy surface; it does not read off its friction."""
    if sensing_range <= 0:
        raise ValueError(f"sensing_range={sensing_range} must be > 0")
    xp = env.xp
    pos = env.sensordata[:, env.sensor(pos_sensor, "pos_sensor")][:, :2]
    patches = _layout(env, "patches", "place_patches")
    rel = patches - xp.stack([pos[:, 0], pos[:, 0], pos[:, 1], pos[:, 1]], axis=1)[:, None, :]
    ahead = (rel[..., 1] > 0) & (rel[..., 0] < sensing_range)
    key = xp.where(ahead, rel[..., 0], xp.inf)
    nearest = xp.take_along_axis(rel, xp.argmin(key, axis=1)[:, None, None], axis=1)[:, 0]
    nearest = xp.concatenate([xp.clip(nearest[:, :2], -sensing_range, sensing_range), nearest[:, 2:]], axis=1)
    none_ahead = xp.astype(xp.asarray([sensing_range, sensing_range, 0.0, 0.0]), nearest.dtype)
    return xp.where(ahead.any(axis=1)[:, None], nearest, none_ahead)


# ----- rewards -------------------------------------------------------------------------------
def lane_progress(env, joint: str = "root") -> np.ndarray:
    """Meters advanced along the road this control step (negative when reversing)."""
    return env.qvel[:, env.joint_dof(joint, "joint")] * env.dt


def lane_offset_l2(env, pos_sensor: str = "car_pos", center: float = 0.0) -> np.ndarray:
    return env.xp.square(lane_offset(env, pos_sensor, center)[:, 0])


# ----- rewards and terminations --------------------------------------------------------------
def obstacle_collision(env, pos_sensor: str = "car_pos", quat_sensor: str = "car_quat",
                       chassis_geom: str = "chassis", margin: float = 0.05) -> np.ndarray:
    """True where the chassis footprint (a rectangle in the road plane, sized from the base model)
    is within ``margin`` of a barrel.

    The barrels are contacts in the physics, so the car is stopped by them; this term only
    reads off that it happened (a contact keeps the footprint within a few mm of the barrel).
    """
    if margin < 0:
        raise ValueError(f"margin={margin} must be >= 0")
    xp = env.xp
    geom = env.id_of("geom", chassis_geom, "chassis_geom")
    half = xp.asarray(env.model.geom_size[geom, :2])
    offset = xp.asarray(env.model.geom_pos[geom, :2])
    pos, yaw = _planar_pose(env, pos_sensor, quat_sensor)
    rel = _layout(env, "obstacles", "place_obstacles") - pos[:, None, :]
    cos, sin = xp.cos(yaw)[:, None], xp.sin(yaw)[:, None]
    local = xp.stack([cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1]], axis=-1)
    local -= offset
    outside = xp.abs(local) - half
    distance = xp.linalg.norm(xp.maximum(outside, 0.0), axis=-1)
    return (distance <= env.extras["obstacle_radius"] + margin).any(axis=1)


def off_road(env, pos_sensor: str = "car_pos", half_width: float = 3.5) -> np.ndarray:
    """True where the car's center has left the road (|y| > half_width)."""
    if half_width <= 0:
        raise ValueError(f"half_width={half_width} must be > 0")
    return env.xp.abs(env.sensordata[:, env.sensor(pos_sensor, "pos_sensor")][:, 1]) > half_width


# ----- events: startup -----------------------------------------------------------------------
def randomize_actuator_forcerange(env, env_ids: np.ndarray, actuators: Sequence[str],
                                  scale_range: Sequence[float]) -> None:
    """Weak or strong motors: scales the force (torque) limit of torque-limited servos."""
    ids = np.array([env.id_of("actuator", a, "actuators") for a in actuators])
    if not env.model.actuator_forcelimited[ids].all():
        raise ValueError(f"actuators={list(actuators)}: every actuator needs a forcerange in the MJCF")
    scales = _scales(env, env_ids, scale_range, [f"force_limit_scale/{a}" for a in actuators])
    for row, i in enumerate(env_ids):
        env.models[i].actuator_forcerange[ids] = env.model.actuator_forcerange[ids] * scales[row][:, None]


# ----- events: reset -------------------------------------------------------------------------
def reset_car_pose(env, env_ids: np.ndarray, joint: str = "root", y_range: Sequence[float] = (0.0, 0.0),
                   yaw_range: Sequence[float] = (0.0, 0.0)) -> None:
    """Start at a random lateral offset and heading, at rest, on the free joint ``joint``."""
    y_low, y_high = _range("y_range", y_range)
    yaw_low, yaw_high = _range("yaw_range", yaw_range)
    if env.model.jnt_type[env.id_of("joint", joint, "joint")] != 0:  # mjJNT_FREE
        raise ValueError(f"joint={joint!r} must be a free joint")
    q = env.joint_qpos(joint, "joint")
    yaw = env.rng.uniform(yaw_low, yaw_high, env_ids.size)
    env.qpos[env_ids, q + 1] += env.rng.uniform(y_low, y_high, env_ids.size)
    env.qpos[env_ids, q + 3:q + 7] = np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw),
                                               np.sin(yaw / 2)], axis=1)


def place_obstacles(env, env_ids: np.ndarray, bodies: Sequence[str], x_range: Sequence[float],
                    y_range: Sequence[float], min_gap: float = 0.0, present: float = 1.0) -> None:
    """Scatter the obstacle bodies along the road: one per equal stretch of ``x_range`` (so they
    never pile up into a wall), at least ``min_gap`` m apart, uniform in ``y_range``; each is
    on the road with probability ``present`` (else parked far behind the start)."""
    x_bounds = _range("x_range", x_range)
    y_low, y_high = _range("y_range", y_range)
    if min_gap < 0:
        raise ValueError(f"min_gap={min_gap} must be >= 0")
    if not 0.0 <= present <= 1.0:
        raise ValueError(f"present={present} is a probability; use a value in [0, 1]")
    body_ids = np.array([env.id_of("body", b, "bodies") for b in bodies])
    geoms = np.array([_body_geom(env, b, "bodies") for b in bodies])
    count = body_ids.size
    width = (x_bounds[1] - x_bounds[0]) / count
    if width < min_gap:
        raise ValueError(f"x_range={list(x_range)} is too short for {count} obstacles {min_gap} m apart; "
                         f"widen it or lower min_gap")
    if "obstacles" not in env.extras:
        env.extras["obstacles"] = np.zeros((env.num_envs, count, 2))
        env.extras["obstacle_radius"] = np.zeros((env.num_envs, count))
    starts = x_bounds[0] + width * np.arange(count) + min_gap / 2
    xs = starts + env.rng.uniform(0.0, width - min_gap, size=(env_ids.size, count))
    ys = env.rng.uniform(y_low, y_high, size=(env_ids.size, count))
    on_road = env.rng.uniform(size=(env_ids.size, count)) < present
    xs = np.where(on_road, xs, PARKED_X)
    for row, i in enumerate(env_ids):
        model = env.models[i]
        model.body_pos[body_ids, 0] = xs[row]
        model.body_pos[body_ids, 1] = ys[row]
        env.extras["obstacle_radius"][i] = model.geom_size[geoms, 0]
    env.extras["obstacles"][env_ids] = np.stack([xs, ys], axis=-1)


def place_patches(env, env_ids: np.ndarray, bodies: Sequence[str], x_range: Sequence[float],
                  y_range: Sequence[float], friction: Sequence[float]) -> None:
    """Lay the low-friction patches (box bodies) on the road, one per equal stretch of ``x_range``,
    centered uniformly in ``y_range``, each with its own sliding friction drawn from ``friction``."""
    x_low, x_high = _range("x_range", x_range)
    y_low, y_high = _range("y_range", y_range)
    mu_low, mu_high = _range("friction", friction, nonnegative=True)
    body_ids = np.array([env.id_of("body", b, "bodies") for b in bodies])
    geoms = np.array([_body_geom(env, b, "bodies") for b in bodies])
    count = body_ids.size
    half = env.model.geom_size[geoms, :2]
    width = (x_high - x_low) / count
    if width < 2 * half[:, 0].max():
        raise ValueError(f"x_range={list(x_range)} is too short for {count} patches "
                         f"{2 * half[:, 0].max():g} m long; widen it")
    if "patches" not in env.extras:
        env.extras["patches"] = np.zeros((env.num_envs, count, 4))
        env.extras["patch_friction"] = np.zeros((env.num_envs, count))
    starts = x_low + width * np.arange(count) + half[:, 0]
    xs = starts + env.rng.uniform(0.0, 1.0, size=(env_ids.size, count)) * (width - 2 * half[:, 0])
    ys = env.rng.uniform(y_low, y_high, size=(env_ids.size, count))
    mu = env.rng.uniform(mu_low, mu_high, size=(env_ids.size, count))
    for row, i in enumerate(env_ids):
        model = env.models[i]
        model.body_pos[body_ids, 0] = xs[row]
        model.body_pos[body_ids, 1] = ys[row]
        model.geom_friction[geoms, 0] = mu[row]
    env.extras["patches"][env_ids] = np.stack([xs - half[:, 0], xs + half[:, 0], ys - half[:, 1], ys + half[:, 1]],
                                              axis=-1)
    env.extras["patch_friction"][env_ids] = mu


# Layout events move bodies in each env's own MjModel: the engine gives every env its own copy.
place_obstacles.edits_model = True
place_patches.edits_model = True
