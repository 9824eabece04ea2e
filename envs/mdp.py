"""The term library: observations, rewards, terminations, commands and events for task configs.

Observation, reward and termination terms take the engine and return one row per env.
Commands and events take the engine and the ids of the envs they apply to. Everything is
vectorized over envs; names (joints, sensors, bodies) are resolved once and cached.

Per-step terms compute with ``env.xp``, the array namespace of the engine's state (numpy on the CPU,
torch where the state lives on a device: ``physai.envs.array_api``), so each is written once. Commands
and events draw from the engine's numpy random stream.
"""

from __future__ import annotations

from typing import Optional, Sequence

import mujoco
import numpy as np

from physai.envs.array_api import on_device


def _range(name: str, bounds: Sequence[float], nonnegative: bool = False) -> tuple[float, float]:
    low, high = float(bounds[0]), float(bounds[1])
    if low > high:
        raise ValueError(f"{name}={list(bounds)} has low > high; write it as [low, high]")
    if nonnegative and low < 0:
        raise ValueError(f"{name}={list(bounds)} would make a physical quantity negative; use values >= 0")
    return low, high


def _qpos_ids(env, joints: Optional[Sequence[str]]) -> np.ndarray:
    if joints is None:
        return np.arange(env.model.nq)
    return env.qpos_indices(tuple(joints))


def _dof_ids(env, joints: Optional[Sequence[str]]) -> np.ndarray:
    if joints is None:
        return np.arange(env.model.nv)
    return env.dof_indices(tuple(joints))


# ----- observations ------------------------------------------------------------------------
def joint_pos(env, joints: Optional[Sequence[str]] = None) -> np.ndarray:
    return _bind_joint_pos(env, joints)()


def joint_pos_sincos(env, joints: Sequence[str]) -> np.ndarray:
    """Angles as (sin, cos) pairs: continuous across the +-pi wrap of a free-spinning hinge."""
    return _bind_joint_pos_sincos(env, joints)()


def joint_vel(env, joints: Optional[Sequence[str]] = None, scale: float = 1.0) -> np.ndarray:
    return _bind_joint_vel(env, joints, scale)()


def sensor(env, name: str, scale: float = 1.0) -> np.ndarray:
    return env.sensordata[:, env.sensor(name, "name")] * scale


def command(env, name: str) -> np.ndarray:
    return env.commands[name]


def sensor_minus_command(env, sensor_name: str, command_name: str) -> np.ndarray:
    """E.g. fingertip position relative to the target: what a reaching policy needs to see."""
    return env.sensordata[:, env.sensor(sensor_name, "sensor_name")] - env.commands[command_name]


def last_action(env) -> np.ndarray:
    return env.action


# ----- rewards -----------------------------------------------------------------------------
def alive(env) -> np.ndarray:
    return env.xp.ones(env.num_envs)


def joint_cos(env, joint: str) -> np.ndarray:
    """cos of a hinge angle: 1 upright, -1 hanging; the swing-up shaping term."""
    return _bind_joint_cos(env, joint)()


def balance_product(env, pole: str, cart: str, cart_margin: float = 1.0, spin_margin: float = 5.0) -> np.ndarray:
    """dm_control's cart-pole reward: upright x centered x small control x small spin, in [0, 1].

    A product pays only for the whole skill, so whirling the pole (upright on average, half the
    time) earns a fraction of holding it, unlike a sum of the same terms.
    """
    xp = env.xp
    upright = (xp.cos(env.qpos[:, env.joint_qpos(pole, "pole")]) + 1.0) / 2.0
    centered = (1.0 + xp.exp(-xp.square(env.qpos[:, env.joint_qpos(cart, "cart")] / cart_margin))) / 2.0
    small_control = (4.0 + (1.0 - xp.square(env.action).mean(axis=1))) / 5.0
    small_spin = (1.0 + xp.exp(-xp.square(env.qvel[:, env.joint_dof(pole, "pole")] / spin_margin))) / 2.0
    return upright * centered * small_control * small_spin


# Per-step sums use the array's ``sum`` method: numpy's and torch's take ``axis``, and numpy's has less
# Python around it than ``np.sum``.
def joint_pos_l2(env, joints: Sequence[str], target: float = 0.0) -> np.ndarray:
    return _bind_joint_pos_l2(env, joints, target)()


def joint_vel_l2(env, joints: Optional[Sequence[str]] = None) -> np.ndarray:
    return _bind_joint_vel_l2(env, joints)()


def action_l2(env) -> np.ndarray:
    return env.xp.square(env.action).sum(axis=1)


def action_rate_l2(env) -> np.ndarray:
    return env.xp.square(env.action - env.last_action).sum(axis=1)


def distance_to_command(env, sensor_name: str, command_name: str) -> np.ndarray:
    delta = env.sensordata[:, env.sensor(sensor_name, "sensor_name")] - env.commands[command_name]
    return env.xp.linalg.norm(delta, axis=1)


def within_distance(env, sensor_name: str, command_name: str, radius: float) -> np.ndarray:
    return env.xp.astype(distance_to_command(env, sensor_name, command_name) < radius, env.xp.float64)


def tracking_exp(env, sensor_name: str, command_name: str, sigma: float, dims: Optional[Sequence[int]] = None):
    """exp(-|measured - commanded|^2 / sigma^2): Isaac Lab's velocity-tracking reward."""
    return _bind_tracking_exp(env, sensor_name, command_name, sigma, dims)()


def progress_along_command(env, sensor_name: str, command_name: str, dims: Sequence[int] = (0, 1)) -> np.ndarray:
    """Velocity along the commanded direction as a fraction of the commanded speed, clipped to [-1, 1].

    Linear in speed, so it rewards the first steps of a gait, where an exp-tracking term is still flat.
    """
    return _bind_progress_along_command(env, sensor_name, command_name, dims)()


def sensor_value(env, name: str, index: int = 0) -> np.ndarray:
    return env.sensordata[:, env.sensor(name, "name")][:, index]


def sensor_abs(env, name: str, index: int = 0) -> np.ndarray:
    return env.xp.abs(sensor_value(env, name, index))


def sensor_l2(env, name: str) -> np.ndarray:
    return env.xp.square(env.sensordata[:, env.sensor(name, "name")]).sum(axis=1)


# ----- terminations ------------------------------------------------------------------------
def joint_out_of_bounds(env, joint: str, low: float, high: float) -> np.ndarray:
    return _bind_joint_out_of_bounds(env, joint, low, high)()


def sensor_out_of_bounds(env, name: str, low: float, high: float, index: int = 0) -> np.ndarray:
    low, high = _range("low/high", (low, high))
    value = sensor_value(env, name, index)
    return (value < low) | (value > high)


# ----- bound forms --------------------------------------------------------------------------
# ``fn.bind(env, **params)`` returns a no-argument function that computes what ``fn(env, **params)``
# does, with the joint columns resolved once: the engine calls it every step, and the plain term is
# its one-off call, so each term's arithmetic is written once. Consecutive columns
# become a slice, so a step reads a view of the state where the plain term copies it by index;
# other columns are an index array where the state lives.
def _columns(env, ids: np.ndarray):
    if ids.size and np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
        return slice(int(ids[0]), int(ids[0]) + ids.size)
    return on_device(env, ids)


def _bind_joint_pos(env, joints: Optional[Sequence[str]] = None):
    columns = _columns(env, _qpos_ids(env, joints))
    return lambda: env.qpos[:, columns]


def _bind_joint_pos_sincos(env, joints: Sequence[str]):
    columns = _columns(env, _qpos_ids(env, joints))

    def bound() -> np.ndarray:
        angles = env.qpos[:, columns]
        return env.xp.concatenate([env.xp.sin(angles), env.xp.cos(angles)], axis=1)
    return bound


def _bind_joint_vel(env, joints: Optional[Sequence[str]] = None, scale: float = 1.0):
    columns = _columns(env, _dof_ids(env, joints))
    return lambda: env.qvel[:, columns] * scale


def _bind_joint_cos(env, joint: str):
    column = env.joint_qpos(joint, "joint")
    return lambda: env.xp.cos(env.qpos[:, column])


def _bind_joint_pos_l2(env, joints: Sequence[str], target: float = 0.0):
    columns = _columns(env, _qpos_ids(env, joints))
    return lambda: env.xp.square(env.qpos[:, columns] - target).sum(axis=1)


def _bind_joint_out_of_bounds(env, joint: str, low: float, high: float):
    low, high = _range("low/high", (low, high))
    column = env.joint_qpos(joint, "joint")

    def bound() -> np.ndarray:
        q = env.qpos[:, column]
        return (q < low) | (q > high)
    return bound


def _sensor_columns(env, sensor_name: str, dims: Optional[Sequence[int]]):
    """Columns of ``sensordata`` a term reads: the sensor's own, or the chosen ``dims`` of them."""
    columns = env.sensor(sensor_name, "sensor_name")
    if dims is None:
        return columns
    return _columns(env, np.arange(columns.start, columns.stop)[list(dims)])


def _bind_joint_vel_l2(env, joints: Optional[Sequence[str]] = None):
    columns = _columns(env, _dof_ids(env, joints))
    return lambda: env.xp.square(env.qvel[:, columns]).sum(axis=1)


def _bind_tracking_exp(env, sensor_name: str, command_name: str, sigma: float,
                       dims: Optional[Sequence[int]] = None):
    columns = _sensor_columns(env, sensor_name, dims)

    def bound() -> np.ndarray:
        error = env.xp.square(env.sensordata[:, columns] - env.commands[command_name]).sum(axis=1)
        return env.xp.exp(-error / sigma**2)
    return bound


def _bind_progress_along_command(env, sensor_name: str, command_name: str, dims: Sequence[int] = (0, 1)):
    columns = _sensor_columns(env, sensor_name, dims)

    def bound() -> np.ndarray:
        xp, measured, commanded = env.xp, env.sensordata[:, columns], env.commands[command_name]
        speed = xp.linalg.norm(commanded, axis=1)
        along = xp.einsum("ij,ij->i", measured, commanded) / xp.maximum(speed, 1e-6) ** 2
        return xp.clip(along, -1.0, 1.0)
    return bound


joint_pos.bind = _bind_joint_pos
joint_pos_sincos.bind = _bind_joint_pos_sincos
joint_vel.bind = _bind_joint_vel
joint_cos.bind = _bind_joint_cos
joint_pos_l2.bind = _bind_joint_pos_l2
joint_out_of_bounds.bind = _bind_joint_out_of_bounds
joint_vel_l2.bind = _bind_joint_vel_l2
tracking_exp.bind = _bind_tracking_exp
progress_along_command.bind = _bind_progress_along_command


# ----- commands ----------------------------------------------------------------------------
def uniform_command(env, env_ids: np.ndarray, ranges: Sequence[Sequence[float]]) -> np.ndarray:
    bounds = np.array([_range("ranges", r) for r in ranges])
    return env.rng.uniform(bounds[:, 0], bounds[:, 1], size=(env_ids.size, len(bounds)))


def disc_command(env, env_ids: np.ndarray, radius: Sequence[float], z: float = 0.0) -> np.ndarray:
    """A target uniformly placed in an annulus of the plane at height z (planar reach)."""
    r_low, r_high = _range("radius", radius, nonnegative=True)
    angle = env.rng.uniform(-np.pi, np.pi, env_ids.size)
    r = np.sqrt(env.rng.uniform(r_low**2, r_high**2, env_ids.size))
    return np.stack([r * np.cos(angle), r * np.sin(angle), np.full(env_ids.size, z)], axis=1)


def ball_command(env, env_ids: np.ndarray, center: Sequence[float], radius: Sequence[float]) -> np.ndarray:
    """A target uniformly placed in a spherical shell around ``center`` (3D reach)."""
    r_low, r_high = _range("radius", radius, nonnegative=True)
    direction = env.rng.normal(size=(env_ids.size, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    r = np.cbrt(env.rng.uniform(r_low**3, r_high**3, env_ids.size))[:, None]
    return np.asarray(center, dtype=np.float64) + r * direction


# ----- events: reset -----------------------------------------------------------------------
def reset_joints_uniform(env, env_ids: np.ndarray, joints: Optional[Sequence[str]] = None,
                         pos_range: Sequence[float] = (0.0, 0.0), vel_range: Sequence[float] = (0.0, 0.0)) -> None:
    """Offsets around the model's default pose and velocity, per joint, per env."""
    qpos_ids, dof_ids = _qpos_ids(env, joints), _dof_ids(env, joints)
    low, high = _range("pos_range", pos_range)
    rows = env_ids[:, None]
    env.qpos[rows, qpos_ids] += env.rng.uniform(low, high, size=(env_ids.size, qpos_ids.size))
    low, high = _range("vel_range", vel_range)
    env.qvel[rows, dof_ids] = env.rng.uniform(low, high, size=(env_ids.size, dof_ids.size))


def reset_joint_choice(env, env_ids: np.ndarray, joint: str, values: Sequence[float], noise: float = 0.0) -> None:
    """Start a joint at one of several values (cartpole: upright for balance, down for swing-up)."""
    q = env.joint_qpos(joint, "joint")
    picks = env.rng.choice(np.asarray(values, dtype=np.float64), size=env_ids.size)
    env.qpos[env_ids, q] = picks + env.rng.uniform(-noise, noise, size=env_ids.size)


# ----- events: startup (per-env physics) ---------------------------------------------------
def _scales(env, env_ids: np.ndarray, scale_range: Sequence[float], names: Sequence[str]) -> np.ndarray:
    """Draw one scale per env and per named quantity, and record it as the env's physics context.

    The recorded scales (``env.physics_context``, 1.0 = nominal) are what collected transitions
    carry, so a world model can be conditioned on them and a scenario can ask for them by name.
    """
    low, high = _range("scale_range", scale_range, nonnegative=True)
    if low <= 0:
        raise ValueError(f"scale_range={list(scale_range)} must stay above 0 (a zero mass or gain is not physical)")
    # A staged scenario sets some names' range (context_ranges); the stream of draws stays the same either way.
    bounds = np.array([env.spec.context_ranges.get(name, (low, high)) for name in names], dtype=np.float64)
    unit = env.rng.uniform(size=(env_ids.size, len(names)))
    scales = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * unit
    for column, name in enumerate(names):
        env.set_physics_context(name, env_ids, scales[:, column])
    env.scaled_context.update({name: (low, high) for name in names})
    return scales


def randomize_body_mass(env, env_ids: np.ndarray, bodies: Sequence[str], scale_range: Sequence[float]) -> None:
    ids = np.array([env.id_of("body", b, "bodies") for b in bodies])
    scales = _scales(env, env_ids, scale_range, [f"mass_scale/{b}" for b in bodies])
    for row, i in enumerate(env_ids):
        env.models[i].body_mass[ids] = env.model.body_mass[ids] * scales[row]
        env.models[i].body_inertia[ids] = env.model.body_inertia[ids] * scales[row][:, None]


def randomize_friction(env, env_ids: np.ndarray, scale_range: Sequence[float],
                       geoms: Optional[Sequence[str]] = None) -> None:
    ids = np.arange(env.model.ngeom) if geoms is None else np.array([env.id_of("geom", g, "geoms") for g in geoms])
    scales = _scales(env, env_ids, scale_range, ["friction_scale"])
    for row, i in enumerate(env_ids):
        env.models[i].geom_friction[ids, 0] = env.model.geom_friction[ids, 0] * scales[row, 0]


def randomize_joint_damping(env, env_ids: np.ndarray, joints: Sequence[str], scale_range: Sequence[float]) -> None:
    dofs = _dof_ids(env, joints)
    scales = _scales(env, env_ids, scale_range, [f"damping_scale/{j}" for j in joints])
    for row, i in enumerate(env_ids):
        env.models[i].dof_damping[dofs] = env.model.dof_damping[dofs] * scales[row]


def randomize_actuator_gain(env, env_ids: np.ndarray, scale_range: Sequence[float],
                            actuators: Optional[Sequence[str]] = None) -> None:
    """Weak or strong motors: scales gain (and the matching bias of position servos).

    Velocity servos (bias on velocity) would change their set point, not their strength: refused.
    """
    ids = (np.arange(env.model.nu) if actuators is None
           else np.array([env.id_of("actuator", a, "actuators") for a in actuators]))
    velocity_servo = (env.model.actuator_biasprm[ids, 2] != 0) & (env.model.actuator_biasprm[ids, 1] == 0)
    if velocity_servo.any():
        raise ValueError("actuators include a velocity servo; scale its force range instead "
                         "(e.g. physai.envs.driving.randomize_actuator_forcerange)")
    scales = _scales(env, env_ids, scale_range, [f"actuator_strength/{env.model.actuator(int(a)).name}" for a in ids])
    for row, i in enumerate(env_ids):
        env.models[i].actuator_gainprm[ids, 0] = env.model.actuator_gainprm[ids, 0] * scales[row]
        env.models[i].actuator_biasprm[ids, 1] = env.model.actuator_biasprm[ids, 1] * scales[row]


def randomize_geom_size(env, env_ids: np.ndarray, geoms: Sequence[str], scale_range: Sequence[float]) -> None:
    ids = np.array([env.id_of("geom", g, "geoms") for g in geoms])
    scales = _scales(env, env_ids, scale_range, [f"size_scale/{g}" for g in geoms])
    for row, i in enumerate(env_ids):
        env.models[i].geom_size[ids] = env.model.geom_size[ids] * scales[row][:, None]


def randomize_action_delay(env, env_ids: np.ndarray, steps: Sequence[int]) -> None:
    """Action latency: each env applies the action its policy sent d control steps ago, d uniform in ``steps``.

    The remedy for a board whose inference lands a step late: train for the delay the policy will meet.
    ``mode: startup`` draws one delay per env (one board per robot), ``mode: reset`` a new one every episode.
    The engine keeps a per-env FIFO of actions, zero-filled at every reset; terms see the applied action.
    The draw is recorded in the physics context as ``action_delay_steps``.
    """
    if isinstance(steps, (str, bytes)) or len(steps) != 2:
        raise ValueError(f"steps={steps!r} must be [low, high] control steps, e.g. [0, 2]")
    if any(float(s) != int(float(s)) for s in steps):
        raise ValueError(f"steps={list(steps)} must be whole control steps, e.g. [0, 2]")
    if min(float(s) for s in steps) < 0:
        raise ValueError(f"steps={list(steps)}: a delay cannot be negative; use control steps >= 0, e.g. [0, 2]")
    low, high = _range("steps", [int(float(s)) for s in steps])
    # A fixed delay draws nothing, so the task's random streams stay those of the undelayed task.
    delays = (np.full(env_ids.size, int(low)) if low == high
              else env.rng.integers(int(low), int(high), endpoint=True, size=env_ids.size))
    env.set_action_delay(env_ids, delays, max_steps=int(high))
    env.set_physics_context("action_delay_steps", env_ids, delays.astype(np.float64))


randomize_action_delay.edits_model = False  # a startup draw needs no per-env MjModel copies
# The FIFO of delayed actions is the host engine's: a batch on a device refuses the event at build.
randomize_action_delay.host_only = "action delay runs on the host engine only"


# ----- events: visual randomization (what a camera policy sees; physics untouched) -----------
def randomize_geom_color(env, env_ids: np.ndarray, geoms: Sequence[str], jitter: float = 0.2) -> None:
    """Shift each named geom's RGB by up to ``jitter`` per channel around its MJCF colour, per env."""
    ids = np.array([env.id_of("geom", g, "geoms") for g in geoms])
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter={jitter} must be in [0, 1] (a share of the colour range)")
    shifts = env.rng.uniform(-jitter, jitter, size=(env_ids.size, ids.size, 3))
    for row, i in enumerate(env_ids):
        env.models[i].geom_rgba[ids, :3] = np.clip(env.model.geom_rgba[ids, :3] + shifts[row], 0.0, 1.0)


def randomize_light(env, env_ids: np.ndarray, pos_range: Sequence[float] = (0.0, 0.0),
                    intensity_range: Sequence[float] = (1.0, 1.0), lights: Optional[Sequence[str]] = None) -> None:
    """Move every light (or the named ones) by an offset in ``pos_range`` per axis and scale its diffuse
    intensity by a factor in ``intensity_range``, per env."""
    ids = np.arange(env.model.nlight) if lights is None else np.array([env.id_of("light", n, "lights") for n in lights])
    low, high = _range("pos_range", pos_range)
    scale_low, scale_high = _range("intensity_range", intensity_range, nonnegative=True)
    offsets = env.rng.uniform(low, high, size=(env_ids.size, ids.size, 3))
    scales = env.rng.uniform(scale_low, scale_high, size=(env_ids.size, ids.size, 1))
    for row, i in enumerate(env_ids):
        env.models[i].light_pos[ids] = env.model.light_pos[ids] + offsets[row]
        env.models[i].light_diffuse[ids] = np.clip(env.model.light_diffuse[ids] * scales[row], 0.0, 1.0)


def randomize_camera_pose(env, env_ids: np.ndarray, camera: str, pos_range: Sequence[float] = (0.0, 0.0),
                          angle_range: Sequence[float] = (0.0, 0.0)) -> None:
    """Jitter a camera's mounting: an offset in ``pos_range`` (metres) per axis and a rotation about a random
    axis by an angle in ``angle_range`` (radians), per env: a camera bracket is never mounted twice alike."""
    cam = env.id_of("camera", camera, "camera")
    low, high = _range("pos_range", pos_range)
    angle_low, angle_high = _range("angle_range", angle_range)
    offsets = env.rng.uniform(low, high, size=(env_ids.size, 3))
    axes = env.rng.normal(size=(env_ids.size, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = env.rng.uniform(angle_low, angle_high, size=env_ids.size)
    turn = np.zeros(4)
    for row, i in enumerate(env_ids):
        env.models[i].cam_pos[cam] = env.model.cam_pos[cam] + offsets[row]
        mujoco.mju_axisAngle2Quat(turn, axes[row], angles[row])
        mujoco.mju_mulQuat(env.models[i].cam_quat[cam], env.model.cam_quat[cam], turn)


def randomize_geom_material(env, env_ids: np.ndarray, geom: str, materials: Sequence[str]) -> None:
    """Give a geom one of the named MJCF materials (a floor texture, a table finish), per env."""
    gid = env.id_of("geom", geom, "geom")
    choices = np.array([env.id_of("material", m, "materials") for m in materials])
    if choices.size == 0:
        raise ValueError("materials is empty; name at least one material of the MJCF")
    picks = env.rng.integers(0, choices.size, size=env_ids.size)
    for row, i in enumerate(env_ids):
        env.models[i].geom_matid[gid] = choices[picks[row]]


# Model-editing events: the engine gives every env its own MjModel when a task uses one of these,
# and edits always start from the nominal model, so draws never compound.
for _edit in (randomize_body_mass, randomize_friction, randomize_joint_damping, randomize_actuator_gain,
              randomize_geom_size, randomize_geom_color, randomize_light, randomize_camera_pose,
              randomize_geom_material):
    _edit.edits_model = True


# ----- events: interval --------------------------------------------------------------------
def push_joints(env, env_ids: np.ndarray, joints: Sequence[str], vel_range: Sequence[float]) -> None:
    """A shove: add a random velocity to some hinge/slide joints (push_dofs for a free joint)."""
    dofs = _dof_ids(env, joints)
    low, high = _range("vel_range", vel_range)
    env.qvel[np.ix_(env_ids, dofs)] += env.rng.uniform(low, high, size=(env_ids.size, dofs.size))


def sensor_noise_burst(env, env_ids: np.ndarray, std: float, duration_steps: Sequence[int]) -> None:
    """A burst of Gaussian observation noise (a glitching IMU, a dirty lens) for a few control steps."""
    if std < 0:
        raise ValueError(f"std={std} must be >= 0")
    low, high = _range("duration_steps", duration_steps, nonnegative=True)
    env.noise_burst_std[env_ids] = std
    env.noise_burst_until[env_ids] = env.episode_step[env_ids] + env.rng.integers(int(low), int(high),
                                                                                   endpoint=True, size=env_ids.size)


def push_all(env, env_ids: np.ndarray, pushes: Sequence[dict]) -> None:
    """Several pushes at the same step: ``pushes`` lists ``{fn, params}`` of push events of this module
    (one staged scenario kick on several columns lands all of them at once, as in the world model)."""
    for push in pushes:
        PUSHES[push["fn"]](env, env_ids, **push["params"])


def push_body_velocity(env, env_ids: np.ndarray, joint: str, axis: Sequence[float],
                       vel_range: Sequence[float]) -> None:
    """A shove along an axis of a free-floating body's own frame (a gust from the side of a car).

    A free joint's linear velocity is in the world frame, so the body-frame axis is turned by the
    body's orientation (the joint's quaternion) before the random speed along it is added.
    """
    low, high = _range("vel_range", vel_range)
    quaternion = env.joint_qpos(joint, "joint") + 3  # a free joint's qpos: position (3), then orientation (4)
    q = env.qpos[env_ids, quaternion:quaternion + 4]
    w, u = q[:, :1], q[:, 1:]
    v = np.broadcast_to(np.asarray(axis, dtype=np.float64), u.shape)
    t = 2.0 * np.cross(u, v)
    world = v + w * t + np.cross(u, t)  # the axis rotated by the unit quaternion (w, u)
    start = env.joint_dof(joint, "joint")
    env.qvel[env_ids, start:start + 3] += env.rng.uniform(low, high, size=(env_ids.size, 1)) * world


def push_dofs(env, env_ids: np.ndarray, joint: str, dofs: Sequence[int], vel_range: Sequence[float]) -> None:
    """Velocity kick on chosen dofs of one joint (e.g. x, y of a free joint: a lateral push or gust)."""
    start = env.joint_dof(joint, "joint")
    ids = start + np.asarray(dofs, dtype=np.int64)
    low, high = _range("vel_range", vel_range)
    env.qvel[np.ix_(env_ids, ids)] += env.rng.uniform(low, high, size=(env_ids.size, ids.size))


PUSHES = {fn.__name__: fn for fn in (push_joints, push_dofs, push_body_velocity)}
