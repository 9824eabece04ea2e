"""Classical fallback controllers for the guard: numpy only, built from the bundle's observation names.

A fallback is what acts when the learned policy should not (``physai.edge.guard``): an LQR for
the cart-pole, a task-space servo for the reaching arms, brake-and-hold-lane for the car, and
a zero action otherwise. Each is a callable ``fallback(obs) -> action`` on one observation
``(obs_dim,)`` or a batch ``(n, obs_dim)``, in the bundle's action units (physai tasks map
``[-1, 1]`` onto each actuator's control range: ``ctrl = mid + half * action``).

Each controller reads the columns it needs by name (``cart_pos``, ``pole_angle[0]``, ...) and
refuses, naming the missing column, a bundle whose observations do not have them. Physical
parameters default to the MJCF assets of ``envs/assets`` and can be overridden from config
(``configs/guard/<task>.yaml``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from physai.core.errors import BundleError

FALLBACK_MODULE = __name__


class ActionBounds:
    """The bundle's action space: Box bounds (None -> unbounded) or a Discrete count."""

    def __init__(self, space: dict[str, Any]) -> None:
        self.discrete = space.get("type") == "Discrete"
        if self.discrete:
            self.n = int(space["n"])
            self.shape: tuple[int, ...] = ()
            self.low = np.zeros(1)
            self.high = np.full(1, self.n - 1.0)
            return
        self.shape = tuple(int(s) for s in space.get("shape") or ())
        size = int(np.prod(self.shape)) if self.shape else 1
        self.low = np.array([-np.inf if v is None else float(v) for v in space.get("low") or [None] * size])
        self.high = np.array([np.inf if v is None else float(v) for v in space.get("high") or [None] * size])
        if self.low.shape != (size,) or self.high.shape != (size,):
            raise BundleError(f"the manifest's action_space has {self.low.size} low and {self.high.size} high "
                              f"bounds for shape {list(self.shape)}; re-export the bundle")

    @property
    def size(self) -> int:
        return 1 if self.discrete else int(self.low.size)

    def safe(self) -> np.ndarray:
        """The zero action, moved into the bounds when zero is outside them."""
        if self.discrete:
            return np.int64(0)
        return np.clip(np.zeros(self.low.size), self.low, self.high).astype(np.float32).reshape(self.shape)

    def clip(self, action: Any) -> np.ndarray:
        """Into the bounds; anything non-finite becomes the safe action's entry."""
        if self.discrete:
            value = np.asarray(action, dtype=np.float64)
            value = np.where(np.isfinite(value), np.rint(value), 0.0)
            return np.clip(value, 0, self.n - 1).astype(np.int64)
        value = np.asarray(action, dtype=np.float64)
        value = np.where(np.isfinite(value), value, np.broadcast_to(self.safe().reshape(-1), value.shape))
        return np.clip(value, self.low, self.high).astype(np.float32)


def column(names: Sequence[str], name: str, controller: str) -> int:
    """The index of observation column ``name``; a clear error naming it when the bundle lacks it."""
    try:
        return list(names).index(name)
    except ValueError:
        shown = list(names)[:24]
        raise BundleError(
            f"fallback {controller} needs the observation column {name!r}, but the bundle's observations are "
            f"{shown}{' ...' if len(names) > 24 else ''}. Pick the fallback made for this task "
            f"(guard=<task>) or physai.edge.fallback.ZeroAction") from None


class Fallback:
    """Base: batch-or-single dispatch and clipping into the action bounds."""

    def __init__(self, observation_names: Sequence[str], action_space: dict[str, Any]) -> None:
        self.observation_names = list(observation_names)
        self.bounds = ActionBounds(action_space)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        array = np.asarray(obs, dtype=np.float64)
        if array.ndim == 1:
            return self.bounds.clip(self.control(array[None, :])[0])
        return self.bounds.clip(self.control(array))

    def control(self, obs: np.ndarray) -> np.ndarray:
        """``(n, obs_dim)`` float64 -> ``(n, *action_shape)`` (clipped by the caller)."""
        raise NotImplementedError


class ZeroAction(Fallback):
    """Hold a constant action: zero (inside the bounds), or ``value`` when given."""

    def __init__(self, observation_names: Sequence[str], action_space: dict[str, Any],
                 value: Optional[Sequence[float] | float] = None) -> None:
        super().__init__(observation_names, action_space)
        if value is None:
            self.value = np.asarray(self.bounds.safe(), dtype=np.float64)
        else:
            self.value = np.broadcast_to(np.asarray(value, dtype=np.float64), self.bounds.shape).copy()

    def control(self, obs: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.value, (obs.shape[0], *self.bounds.shape)).copy()


# ----- cart-pole: LQR on a linearized model -------------------------------------------------------
def _expm(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring a Taylor series (small, well-scaled matrices)."""
    norm = np.linalg.norm(matrix, ord=np.inf)
    squarings = max(0, int(np.ceil(np.log2(norm / 0.25))) if norm > 0 else 0)
    scaled = matrix / (2.0 ** squarings)
    result, term = np.eye(matrix.shape[0]), np.eye(matrix.shape[0])
    for k in range(1, 18):
        term = term @ scaled / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def discretize(a: np.ndarray, b: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretization of ``x' = A x + B u`` at period ``dt``."""
    n, m = a.shape[0], b.shape[1]
    block = np.zeros((n + m, n + m))
    block[:n, :n], block[:n, n:] = a, b
    exp = _expm(block * dt)
    return exp[:n, :n], exp[:n, n:]


def dlqr(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray, iterations: int = 5000,
         tolerance: float = 1e-10) -> np.ndarray:
    """The discrete LQR gain ``K`` (``u = -K x``) by iterating the Riccati equation to its fixed point."""
    p = q.copy()
    for _ in range(iterations):
        gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        updated = q + a.T @ p @ (a - b @ gain)
        if np.max(np.abs(updated - p)) <= tolerance * max(1.0, np.max(np.abs(p))):
            p = updated
            break
        p = updated
    return np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)


def cartpole_linearization(cart_mass: float, pole_mass: float, pole_com: float, pole_inertia: float,
                           force_per_action: float, gravity: float = 9.81) -> tuple[np.ndarray, np.ndarray]:
    """``x' = A x + B u`` about upright for the state ``[cart_pos, angle, cart_vel, angle_vel]``.

    The angle is 0 upright and positive toward +x (MuJoCo's hinge about +y). From the Lagrangian:
    ``(M+m) x'' + m l th'' = F`` and ``m l x'' + (m l^2 + I) th'' = m g l th``, with ``F = force * u``.
    """
    total, ml, inertia = cart_mass + pole_mass, pole_mass * pole_com, pole_mass * pole_com ** 2 + pole_inertia
    det = total * inertia - ml ** 2
    a = np.zeros((4, 4))
    a[0, 2] = a[1, 3] = 1.0
    a[2, 1] = -ml * ml * gravity / det
    a[3, 1] = total * ml * gravity / det
    b = np.zeros((4, 1))
    b[2, 0] = inertia * force_per_action / det
    b[3, 0] = -ml * force_per_action / det
    return a, b


class CartPoleLQR(Fallback):
    """Balance the pole with an LQR; outside ``capture_angle`` bring the cart to rest at the center.

    Defaults are ``envs/assets/cartpole.xml``: a 1 kg cart, a 0.1 kg 1 m pole (center of mass at
    0.5 m, rod inertia m L^2 / 12 plus the capsule's radius), a motor of gear 10 on ctrl in
    [-1, 1] and 50 Hz control. The gain is computed at construction from that linearized model.
    """

    def __init__(self, observation_names: Sequence[str], action_space: dict[str, Any], *,
                 cart_mass: float = 1.0, pole_mass: float = 0.1, pole_length: float = 1.0,
                 pole_radius: float = 0.045, pole_com: Optional[float] = None,
                 pole_inertia: Optional[float] = None, gear: float = 10.0, ctrl_half_range: float = 1.0,
                 control_period_s: float = 0.02, gravity: float = 9.81,
                 state_weights: Sequence[float] = (1.0, 10.0, 0.1, 0.1), action_weight: float = 1.0,
                 capture_angle: float = 0.7, centering_gains: Sequence[float] = (0.5, 1.0),
                 cart_pos: str = "cart_pos", angle_sin: str = "pole_angle[0]", angle_cos: str = "pole_angle[1]",
                 cart_vel: str = "velocities[0]", angle_vel: str = "velocities[1]") -> None:
        super().__init__(observation_names, action_space)
        self.columns = [column(observation_names, name, self.name)
                        for name in (cart_pos, angle_sin, angle_cos, cart_vel, angle_vel)]
        if self.bounds.discrete or self.bounds.size != 1:
            raise BundleError(f"fallback CartPoleLQR drives one continuous push; this bundle's action space is "
                              f"{'Discrete' if self.bounds.discrete else self.bounds.size} - use ZeroAction")
        # From the MJCF when export read them there (guard.fallback.from_model), else a uniform rod.
        com = pole_length / 2.0 if pole_com is None else float(pole_com)
        inertia = (pole_mass * (pole_length ** 2 / 12.0 + pole_radius ** 2 / 4.0) if pole_inertia is None
                   else float(pole_inertia))
        a, b = cartpole_linearization(cart_mass, pole_mass, com, inertia, gear * ctrl_half_range, gravity)
        ad, bd = discretize(a, b, control_period_s)
        self.gain = dlqr(ad, bd, np.diag(np.asarray(state_weights, dtype=np.float64)),
                         np.array([[float(action_weight)]]))[0]
        self.capture_angle = float(capture_angle)
        self.centering_gains = np.asarray(centering_gains, dtype=np.float64)

    def control(self, obs: np.ndarray) -> np.ndarray:
        x, sin, cos, xdot, thetadot = (obs[:, i] for i in self.columns)
        theta = np.arctan2(sin, cos)
        state = np.stack([x, theta, xdot, thetadot], axis=1)
        balance = -state @ self.gain
        kp, kd = self.centering_gains
        center = -(kp * x + kd * xdot)
        return np.where(np.abs(theta) <= self.capture_angle, balance, center)[:, None]


# ----- reaching arms: a task-space servo through the joint position servos ---------------------------
def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


class ReachToTarget(Fallback):
    """Move the fingertip toward the target: a damped least-squares step through the joint servos.

    The reach tasks command joint position targets (``ctrl = mid + half * action``); this sets
    the target to ``q + gain * J^T (J J^T + damping^2 I)^-1 (target - fingertip)``, each joint's
    step capped at ``max_step`` rad, so the servo's own PD closes the loop. ``J`` comes from a
    kinematic chain given joint by joint (``pos`` of the joint's body in its parent, ``axis``)
    plus the fingertip offset: the defaults are ``envs/assets/reach2d.xml``; reach3d's are in
    ``configs/guard/reach3d.yaml``.
    """

    def __init__(self, observation_names: Sequence[str], action_space: dict[str, Any], *,
                 chain: Sequence[dict[str, Sequence[float]]] = ({"pos": (0.0, 0.0, 0.0), "axis": (0.0, 0.0, 1.0)},
                                                                {"pos": (0.12, 0.0, 0.0), "axis": (0.0, 0.0, 1.0)}),
                 tip: Sequence[float] = (0.12, 0.0, 0.0),
                 ctrl_range: Sequence[Sequence[float]] = ((-3.1416, 3.1416), (-2.8, 2.8)),
                 gain: float = 1.0, damping: float = 0.02, max_step: float = 0.5,
                 angles: str = "joint_angles", to_target: str = "to_target") -> None:
        super().__init__(observation_names, action_space)
        joints = len(chain)
        self.sin = [column(observation_names, f"{angles}[{i}]", self.name) for i in range(joints)]
        self.cos = [column(observation_names, f"{angles}[{i + joints}]", self.name) for i in range(joints)]
        self.error = [column(observation_names, f"{to_target}[{i}]", self.name) for i in range(3)
                      if f"{to_target}[{i}]" in observation_names] or [column(observation_names, f"{to_target}[0]",
                                                                               self.name)]
        if self.bounds.discrete or self.bounds.size != joints:
            raise BundleError(f"fallback ReachToTarget has a {joints}-joint chain but the bundle has "
                              f"{self.bounds.size} actions; configure one chain entry per actuated joint")
        self.chain_pos = np.array([entry["pos"] for entry in chain], dtype=np.float64)
        self.chain_axis = np.array([entry["axis"] for entry in chain], dtype=np.float64)
        self.tip = np.asarray(tip, dtype=np.float64)
        ranges = np.asarray(ctrl_range, dtype=np.float64)
        if ranges.shape != (joints, 2):
            raise BundleError(f"fallback ReachToTarget: ctrl_range needs one [low, high] per joint ({joints})")
        self.mid, self.half = ranges.mean(axis=1), (ranges[:, 1] - ranges[:, 0]) / 2.0
        self.gain, self.damping, self.max_step = float(gain), float(damping), float(max_step)

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Positional Jacobian ``(3, joints)`` of the fingertip at joint angles ``q``."""
        rotation, position = np.eye(3), np.zeros(3)
        origins, axes = [], []
        for offset, axis, angle in zip(self.chain_pos, self.chain_axis, q):
            position = position + rotation @ offset
            axes.append(rotation @ (axis / np.linalg.norm(axis)))
            origins.append(position)
            rotation = rotation @ _rotation(axis, angle)
        tip = position + rotation @ self.tip
        return np.stack([np.cross(a, tip - o) for a, o in zip(axes, origins)], axis=1)

    def control(self, obs: np.ndarray) -> np.ndarray:
        actions = np.empty((obs.shape[0], len(self.sin)))
        for row, values in enumerate(obs):
            q = np.arctan2(values[self.sin], values[self.cos])
            error = -values[self.error]  # to_target is fingertip - target
            jac = self.jacobian(q)[: len(self.error)]
            step = self.gain * jac.T @ np.linalg.solve(jac @ jac.T + self.damping ** 2 * np.eye(len(self.error)),
                                                       error)
            step = np.clip(step, -self.max_step, self.max_step)
            actions[row] = (q + step - self.mid) / self.half
        return actions


# ----- the car: brake and hold the lane ---------------------------------------------------------------
class BrakeAndHoldLane(Fallback):
    """Command zero wheel speed (the drive servo brakes) and steer back to the lane center.

    ``steer = -(offset_gain * lane_offset + heading_gain * heading)`` radians, capped by the
    steering range; the action is that angle over ``steer_half_range`` (car.xml: +-0.45 rad).
    ``brake_action`` is the drive action for zero wheel speed (car.xml's 0..30 rad/s is -1).
    """

    def __init__(self, observation_names: Sequence[str], action_space: dict[str, Any], *,
                 offset_gain: float = 0.3, heading_gain: float = 1.0, steer_half_range: float = 0.45,
                 brake_action: float = -1.0, drive_index: int = 0, steer_index: int = 1,
                 lane_offset: str = "lane_offset", heading_sin: str = "heading[0]",
                 heading_cos: str = "heading[1]") -> None:
        super().__init__(observation_names, action_space)
        self.offset = column(observation_names, lane_offset, self.name)
        self.sin = column(observation_names, heading_sin, self.name)
        self.cos = column(observation_names, heading_cos, self.name)
        if self.bounds.discrete or self.bounds.size < 2:
            raise BundleError("fallback BrakeAndHoldLane drives [drive, steer]; this bundle has fewer actions")
        self.offset_gain, self.heading_gain = float(offset_gain), float(heading_gain)
        self.steer_half_range, self.brake_action = float(steer_half_range), float(brake_action)
        self.drive_index, self.steer_index = int(drive_index), int(steer_index)

    def control(self, obs: np.ndarray) -> np.ndarray:
        heading = np.arctan2(obs[:, self.sin], obs[:, self.cos])
        steer = -(self.offset_gain * obs[:, self.offset] + self.heading_gain * heading)
        actions = np.zeros((obs.shape[0], self.bounds.size))
        actions[:, self.drive_index] = self.brake_action
        actions[:, self.steer_index] = np.clip(steer / self.steer_half_range, -1.0, 1.0)
        return actions


FALLBACKS: dict[str, Callable[..., Fallback]] = {
    "ZeroAction": ZeroAction, "CartPoleLQR": CartPoleLQR, "ReachToTarget": ReachToTarget,
    "BrakeAndHoldLane": BrakeAndHoldLane,
}


def build_fallback(spec: Optional[dict[str, Any]], manifest: dict[str, Any]) -> Fallback:
    """A fallback from ``{"_target_": "physai.edge.fallback.<Name>", **params}`` and the bundle's spaces.

    Only the controllers of this module can be named: the spec comes from a manifest, and a
    manifest must not be able to import arbitrary code on the robot.
    """
    spec = dict(spec or {"_target_": f"{FALLBACK_MODULE}.ZeroAction"})
    target = str(spec.pop("_target_", f"{FALLBACK_MODULE}.ZeroAction"))
    name = target.rsplit(".", 1)[-1]
    module = target.rsplit(".", 1)[0] if "." in target else FALLBACK_MODULE
    if module != FALLBACK_MODULE or name not in FALLBACKS:
        raise BundleError(f"guard fallback _target_={target!r} is not a physai fallback controller; use one of "
                          f"{[f'{FALLBACK_MODULE}.{n}' for n in FALLBACKS]}")
    observation_names = (manifest.get("observation_space") or {}).get("names") or []
    action_space = manifest.get("action_space") or {}
    try:
        return FALLBACKS[name](observation_names, action_space, **spec)
    except TypeError as exc:
        raise BundleError(f"guard fallback {name} refused its parameters {sorted(spec)}: {exc}; fix the "
                          f"guard.fallback section (configs/guard/)") from exc
