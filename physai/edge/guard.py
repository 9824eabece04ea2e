"""The dual-stack guard: a learned policy with monitors, and a classical fallback that acts when they fire.

The idea of Alpamayo's stack (a classical planner takes over when the learned one is unsure),
on the edge runtime's terms: numpy and onnxruntime only. On every call the guard checks

- ``nonfinite_observation``: NaN or inf in the observation (the fallback acts on the last
  finite value of each column instead of raising);
- ``ood_observation``: the largest per-column distance from the bundle's observation
  statistics, ``max_i |obs_i - mean_i| / scale_i``, above ``ood_threshold`` (std units).
  ``scale_i`` is the column's std, floored by ``min_std`` and widened so that the whole range
  seen while the statistics were gathered stays inside the threshold: what the policy met in
  its own evaluation never counts as out of distribution;
- ``policy_error``: onnxruntime raised (the loop goes on with the fallback);
- ``nonfinite_action`` / ``action_out_of_range``: the policy's action is NaN/inf or outside the
  manifest's action bounds (beyond ``action_tolerance``);
- ``model_disagreement``: when the bundle holds ``world_model.onnx`` (an ensemble exported by
  physai.deploy.onnx_export), the spread of its members' predicted next-observation deltas for
  (observation, action), in normalized units, above ``max_disagreement``;
- ``hold``: the fallback stays in charge for ``hold_steps`` calls after a monitor fired.

The fast path (nothing fires) reuses the runtime's bound buffers and costs a few numpy calls
on top of the policy; ``fallback_rate`` and per-monitor counts are kept for reporting.

A camera policy (named inputs: uint8 frames, and the state terms its task keeps) is guarded by
:class:`GuardedCameraPolicy`, with the monitors that apply to it: non-finite values in its float
inputs, the OOD distance of its state input, the policy's errors and its actions. Frames are not
judged: a distance over pixels says little about whether a scene is one the policy knows. The
classical fallbacks read state columns by name; the bundle's ``guard.fallback_reason`` says which
fallback a camera policy got and why (a pixel-only policy holds the zero action).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnxruntime as ort

from physai.edge.bundle import WORLD_MODEL_FILE, WORLD_MODEL_INPUTS, WORLD_MODEL_OUTPUTS
from physai.edge.fallback import ActionBounds, build_fallback
from physai.edge.runtime import CameraPolicy, EdgePolicy, create_session
from physai.core.errors import BundleError

log = logging.getLogger(__name__)

# The input that carries the state terms a camera policy keeps beside its images.
STATE_INPUT = "state"
REASONS = ("nonfinite_observation", "ood_observation", "policy_error", "nonfinite_action", "action_out_of_range",
           "model_disagreement", "hold")

# What the guard does when the manifest and the caller say nothing.
_HUGE = float(np.finfo(np.float64).max)
# The range seen while gathering statistics sits this far inside the threshold (float32 rounding).
_RANGE_MARGIN = 1.01

DEFAULTS = {"enabled": True, "ood_threshold": 6.0, "min_std": 1e-3, "action_tolerance": 1e-4,
            "max_disagreement": None, "hold_steps": 0}


@dataclass(frozen=True)
class GuardDecision:
    """What the guard decided on the last call. For a batch, ``fallback`` is a bool per row and
    ``reasons`` a tuple per row."""

    fallback: Any
    reasons: Any
    ood_score: Any
    disagreement: Any = None


def _check_ood_threshold(ood_threshold: Optional[float]) -> None:
    """None switches the OOD monitor off; anything else must be a positive number of std units (not NaN)."""
    if ood_threshold is not None and not ood_threshold > 0:
        raise BundleError(f"guard ood_threshold={ood_threshold} must be > 0 (std units), or None for off")


def _manifest_reference(policy: Any, ood_threshold: float, min_std: float, width: int,
                        input_label: str) -> tuple[np.ndarray, np.ndarray]:
    """The OOD monitor's ``width`` means and scales from the bundle's manifest; an error naming the fix when the
    bundle has none or ones of another width (``input_label`` names the input they describe, for a camera
    bundle)."""
    reference = observation_reference(policy.manifest, float(ood_threshold), float(min_std))
    if reference is None:
        raise BundleError(f"{policy.bundle_dir} has no observation_statistics{input_label} (nor normalization) for "
                          f"the out-of-distribution monitor: re-export the bundle with this physai version, or pass "
                          f"ood_threshold=None to run without it")
    if reference[0].shape != (width,):
        raise BundleError(f"{policy.bundle_dir}: its observation_statistics{input_label} hold "
                          f"{reference[0].shape[0]} columns, its policy reads {width}; re-export the bundle")
    return reference


def observation_reference(manifest: dict[str, Any], ood_threshold: float,
                          min_std: float) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(mean, scale)`` for the OOD monitor from the manifest, or None when it has no statistics.

    ``observation_statistics`` (gathered by the export stage in closed loop) come first; a bundle
    without them falls back to the training normalization's mean/std.
    """
    stats = manifest.get("observation_statistics")
    if stats:
        mean = np.asarray(stats["mean"], dtype=np.float64)
        std = np.asarray(stats["std"], dtype=np.float64)
        scale = np.maximum(std, min_std)
        if stats.get("min") is not None and stats.get("max") is not None:
            spread = np.maximum(np.asarray(stats["max"], np.float64) - mean, mean - np.asarray(stats["min"], np.float64))
            scale = np.maximum(scale, spread * _RANGE_MARGIN / ood_threshold)
        return mean, scale
    norm = manifest.get("normalization")
    if norm and norm.get("mean") is not None:
        return np.asarray(norm["mean"], np.float64), np.maximum(np.asarray(norm["std"], np.float64), min_std)
    return None


class WorldModelMonitor:
    """Ensemble disagreement for (observation, action) from ``world_model.onnx``, bound to the policy's buffers.

    The graph (see physai.deploy.onnx_export.export_world_model) takes ``observation`` ``(n, obs_dim)`` and
    ``action`` ``(n, act_dim)`` and returns the elites' normalized mean deltas ``(members, n, obs_dim)``
    and ``disagreement`` ``(n,)``: the max over columns of their std over members.
    """

    def __init__(self, model: bytes, name: str, policy: EdgePolicy) -> None:
        if policy.discrete:
            raise BundleError(f"{name}: the world-model monitor needs continuous actions; remove {WORLD_MODEL_FILE} "
                              f"from the bundle or set guard.world_model=false")
        self.session = create_session(model, name, policy.intra_op_threads, policy.inter_op_threads)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if list(WORLD_MODEL_INPUTS) != inputs[:2] or WORLD_MODEL_OUTPUTS[1] not in outputs:
            raise BundleError(f"{name} has inputs {inputs} and outputs {outputs}; the guard reads "
                              f"{list(WORLD_MODEL_INPUTS)} -> {WORLD_MODEL_OUTPUTS[1]!r}: re-export the bundle")
        # Single calls read the policy's own input and output buffers: no copies.
        self._value = np.zeros(1, dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(WORLD_MODEL_INPUTS[0], ort.OrtValue.ortvalue_from_numpy(policy._obs_buffer))
        binding.bind_ortvalue_input(WORLD_MODEL_INPUTS[1], ort.OrtValue.ortvalue_from_numpy(policy._act_buffer))
        binding.bind_ortvalue_output(WORLD_MODEL_OUTPUTS[1], ort.OrtValue.ortvalue_from_numpy(self._value))
        self._binding = binding

    def bound(self) -> float:
        """Disagreement for the observation and action now in the policy's buffers."""
        self.session.run_with_iobinding(self._binding)
        return float(self._value[0])

    def __call__(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        feed = {WORLD_MODEL_INPUTS[0]: np.ascontiguousarray(obs, dtype=np.float32),
                WORLD_MODEL_INPUTS[1]: np.ascontiguousarray(action, dtype=np.float32).reshape(len(obs), -1)}
        return self.session.run([WORLD_MODEL_OUTPUTS[1]], feed)[0]


def _guard_settings(manifest: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], dict, bool]:
    """The bundle's guard settings with ``overrides`` applied, its ``guard`` section, and whether the
    world-model monitor is wanted; an unknown setting is refused."""
    section = dict(manifest.get("guard") or {})
    settings = {key: section.get(key, default) for key, default in DEFAULTS.items()}
    unknown = set(overrides) - set(DEFAULTS) - {"world_model"}
    if unknown:
        raise BundleError(f"unknown guard settings {sorted(unknown)}; known: {sorted(DEFAULTS)} and world_model")
    use_world_model = overrides.pop("world_model", True)
    settings.update(overrides)
    return settings, section, use_world_model


class _Guard:
    """What both guards share: the counters, the report, and the fallback's action made safe."""

    steps: int
    fallbacks: int
    counts: dict[str, int]
    fallback: Callable[[np.ndarray], Any]
    bounds: ActionBounds
    _safe: Any
    ood_threshold: float
    max_disagreement: Optional[float]
    world_model: Optional[WorldModelMonitor]

    def reset_counters(self) -> None:
        self.steps = 0
        self.fallbacks = 0
        self.counts = {reason: 0 for reason in REASONS}

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.steps if self.steps else 0.0

    def report(self) -> dict[str, Any]:
        return {"steps": self.steps, "fallbacks": self.fallbacks, "fallback_rate": self.fallback_rate,
                "by_reason": {k: v for k, v in self.counts.items() if v}, "fallback": getattr(
                    self.fallback, "name", type(self.fallback).__name__), "ood_threshold": self.ood_threshold,
                "max_disagreement": self.max_disagreement, "world_model": self.world_model is not None}

    def _set_action_limits(self, action_tolerance: float) -> None:
        """The action bounds widened by ``action_tolerance`` (a share of the half range; 1.0 where unbounded)."""
        self.action_tolerance = float(action_tolerance)
        low, high = self.bounds.low, self.bounds.high
        slack = self.action_tolerance * np.where(np.isfinite(high - low), (high - low) / 2.0, 1.0)
        self._act_low, self._act_high = (low - slack).tolist(), (high + slack).tolist()

    def _action_reasons(self, actions: np.ndarray) -> list[list[str]]:
        """Per row: non-finite or out-of-range action."""
        values = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
        finite = np.isfinite(values).all(axis=1)
        with np.errstate(invalid="ignore"):
            inside = ((values >= np.asarray(self._act_low)) & (values <= np.asarray(self._act_high))).all(axis=1)
        return [[] if ok_finite and ok_inside else ["nonfinite_action"] if not ok_finite else ["action_out_of_range"]
                for ok_finite, ok_inside in zip(finite, inside)]

    def _fallback_action(self, obs: np.ndarray) -> np.ndarray:
        """The fallback's action, made safe: a fallback that raises or returns garbage gives the zero action."""
        try:
            action = self.bounds.clip(self.fallback(obs))
            if action.shape != np.shape(self._safe):
                raise ValueError(f"the fallback returned shape {action.shape}, expected {np.shape(self._safe)}")
            return action
        except Exception as exc:  # noqa: BLE001 - the loop must go on
            log.error("fallback %s failed (%s: %s); holding the zero action", getattr(self.fallback, "name", "?"),
                      type(exc).__name__, exc)
            return np.array(self._safe, copy=True)


class GuardedPolicy(_Guard):
    """An EdgePolicy behind monitors, with a classical fallback. ``act`` never raises on bad values.

    Shape and dtype errors still raise ``BundleError``: they are wiring mistakes that show on the
    first call, and no controller can act on an observation it cannot read.
    """

    def __init__(self, policy: EdgePolicy, fallback: Optional[Callable[[np.ndarray], Any]] = None, *,
                 ood_threshold: Optional[float] = DEFAULTS["ood_threshold"], min_std: float = DEFAULTS["min_std"],
                 obs_mean: Optional[np.ndarray] = None, obs_scale: Optional[np.ndarray] = None,
                 action_tolerance: float = DEFAULTS["action_tolerance"],
                 world_model: Optional[WorldModelMonitor] = None,
                 max_disagreement: Optional[float] = DEFAULTS["max_disagreement"],
                 hold_steps: int = DEFAULTS["hold_steps"], enabled: bool = True) -> None:
        self.policy = policy
        manifest = policy.manifest
        self.bounds = ActionBounds(manifest.get("action_space") or
                                   ({"type": "Discrete", "n": 2 ** 31} if policy.discrete else
                                    {"type": "Box", "shape": list(policy.action_shape)}))
        self.fallback = fallback if fallback is not None else build_fallback(None, manifest)
        self.enabled = bool(enabled)
        dim = policy.obs_dim
        # OOD reference: explicit, else from the manifest; ood_threshold=None switches the monitor off.
        if ood_threshold is None:  # off: any finite column passes, NaN/inf still go the slow path
            mean, scale, threshold = np.zeros(dim), np.ones(dim), float(np.finfo(np.float32).max)
        else:
            _check_ood_threshold(ood_threshold)
            if obs_mean is None or obs_scale is None:
                obs_mean, obs_scale = _manifest_reference(policy, ood_threshold, min_std, dim, "")
            mean, scale, threshold = np.asarray(obs_mean, np.float64), np.asarray(obs_scale, np.float64), ood_threshold
            if mean.shape != (dim,) or scale.shape != (dim,) or not (scale > 0).all():
                raise BundleError(f"guard statistics must be {dim} means and {dim} positive scales")
        self.ood_threshold = float(threshold)
        self._mean = mean.astype(np.float32)
        self._inv_scale = (1.0 / scale).astype(np.float32)
        self._tmp = np.zeros(dim, dtype=np.float32)
        self._set_action_limits(action_tolerance)
        self.world_model = world_model
        self.max_disagreement = None if world_model is None else (
            np.inf if max_disagreement is None else float(max_disagreement))
        self.hold_steps = int(hold_steps)
        self._hold = 0
        self._last_good = self._mean.astype(np.float64).copy()
        self._safe = self.bounds.safe()
        self.reset_counters()
        self._last: GuardDecision | tuple = (False, (), 0.0, None)
        self._single_shape = (dim,)

    # ----- construction from a bundle --------------------------------------------------------------
    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, *, fallback: Optional[Callable | dict] = None,
                    intra_op_threads: Optional[int] = None, **overrides: Any) -> "GuardedPolicy":
        """The policy, monitors and fallback that the bundle's ``guard`` section configures.

        ``overrides`` replace single settings (``ood_threshold=8.0``); ``fallback`` is a callable or a
        ``{"_target_": ..., **params}`` spec. A bundle without a guard section gets the defaults
        and a zero-action fallback.
        """
        policy = EdgePolicy.load(bundle_dir, intra_op_threads=intra_op_threads)
        if isinstance(policy, CameraPolicy):
            return GuardedCameraPolicy.from_policy(policy, fallback=fallback, **overrides)
        manifest = policy.manifest
        settings, section, use_world_model = _guard_settings(manifest, overrides)
        if fallback is None or isinstance(fallback, dict):
            fallback = build_fallback(fallback if fallback is not None else section.get("fallback"), manifest)
        monitor = None
        record = manifest.get("world_model")
        if use_world_model and record:
            name = record.get("file", WORLD_MODEL_FILE)
            if name not in policy.contents:
                raise BundleError(f"{policy.bundle_dir / 'manifest.json'} describes a world model {name} without a "
                                  f"checksum for it; re-export the bundle")
            monitor = WorldModelMonitor(policy.contents[name], str(policy.bundle_dir / name), policy)
        return cls(policy, fallback, ood_threshold=settings["ood_threshold"], min_std=settings["min_std"],
                   action_tolerance=settings["action_tolerance"], world_model=monitor,
                   max_disagreement=settings["max_disagreement"], hold_steps=settings["hold_steps"],
                   enabled=settings["enabled"])

    def reset(self) -> None:
        """An episode boundary: clear the hold latch and the last finite observation."""
        self._hold = 0
        self._last_good = self._mean.astype(np.float64).copy()

    @property
    def last(self) -> GuardDecision:
        if isinstance(self._last, tuple):
            self._last = GuardDecision(*self._last)
        return self._last

    # ----- acting ------------------------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's action, or the fallback's when a monitor fires; the same shapes as EdgePolicy.act."""
        if not self.enabled:
            return self.policy.act(obs)
        if type(obs) is np.ndarray and obs.shape == self._single_shape and obs.dtype.kind in "fiu":
            return self._act_single(obs)
        batch, single = self.policy.check_observation(obs)
        if single:
            return self._act_single(batch[0])
        return self._act_batch(batch)

    def _act_single(self, obs: np.ndarray) -> np.ndarray:
        policy = self.policy
        row, tmp = policy._obs_row, self._tmp
        row[...] = obs
        self.steps += 1
        np.subtract(row, self._mean, out=tmp)
        np.multiply(tmp, self._inv_scale, out=tmp)
        # Python's max/sum over a short list beat numpy's reductions (~1 us each) at these sizes.
        # max() alone may skip a NaN, so the sum (NaN or inf when any column is) must pass too.
        z = tmp.tolist()
        score = max(max(z), -min(z))
        if score <= self.ood_threshold and sum(z) <= _HUGE and not self._hold:
            try:
                action = policy._infer()
            except Exception as exc:  # noqa: BLE001 - the loop must go on
                return self._slow_single(row, score, None, exc)
            action_ok = True
            for value, low, high in zip(action.ravel().tolist(), self._act_low, self._act_high):
                if not low <= value <= high:  # NaN fails too
                    action_ok = False
                    break
            if action_ok:
                disagreement = None
                if self.world_model is not None:
                    disagreement = self.world_model.bound()
                    if not disagreement <= self.max_disagreement:
                        return self._slow_single(row, score, action[0], None, disagreement)
                self._last_good[:] = row
                self._last = (False, (), float(score), disagreement)
                return action[0].copy()
            return self._slow_single(row, score, action[0], None)
        return self._slow_single(row, score, None, None)

    def _slow_single(self, row: np.ndarray, score: float, action: Optional[np.ndarray],
                     error: Optional[BaseException], disagreement: Optional[float] = None) -> np.ndarray:
        """Every monitor, one by one, to name what fired; then the fallback if anything did."""
        reasons: list[str] = []
        finite = np.isfinite(row)
        if not finite.all():
            reasons.append("nonfinite_observation")
            score = float("inf")
        elif score > self.ood_threshold:
            reasons.append("ood_observation")
        if not reasons:
            if action is None and error is None:
                try:
                    action = self.policy._infer()[0]
                except Exception as exc:  # noqa: BLE001
                    error = exc
            if error is not None:
                reasons.append("policy_error")
                if not self.counts["policy_error"]:
                    log.warning("the policy raised %s: %s; the fallback acts", type(error).__name__, error)
            else:
                reasons += self._action_reasons(action[None])[0]
                if not reasons and self.world_model is not None:
                    if disagreement is None:
                        disagreement = self.world_model.bound()
                    if not disagreement <= self.max_disagreement:
                        reasons.append("model_disagreement")
            self._last_good[:] = row
        if reasons:
            self._hold = self.hold_steps
        elif self._hold:
            self._hold -= 1
            reasons.append("hold")
        if not reasons:
            self._last = (False, (), float(score), disagreement)
            return action.copy()
        self.fallbacks += 1
        for reason in reasons:
            self.counts[reason] += 1
        self._last = (True, tuple(reasons), float(score), disagreement)
        sanitized = np.where(finite, row, self._last_good)
        return self._fallback_action(sanitized)

    def _act_batch(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        self.steps += n
        finite = np.isfinite(batch)
        row_finite = finite.all(axis=1)
        with np.errstate(invalid="ignore"):
            scores = np.where(row_finite, (np.abs(batch - self._mean) * self._inv_scale).max(axis=1, initial=0.0),
                              np.inf)
        reasons: list[list[str]] = [[] for _ in range(n)]
        for i in np.flatnonzero(~row_finite):
            reasons[i].append("nonfinite_observation")
        for i in np.flatnonzero(row_finite & (scores > self.ood_threshold)):
            reasons[i].append("ood_observation")
        good = np.flatnonzero(row_finite & (scores <= self.ood_threshold))
        actions = np.empty((n, *self.policy.action_shape), dtype=self.policy.action_dtype)
        disagreement = None
        if good.size:
            try:
                actions[good] = self.policy.run_batch(batch[good])
            except Exception as exc:  # noqa: BLE001
                if not self.counts["policy_error"]:
                    log.warning("the policy raised %s: %s; the fallback acts", type(exc).__name__, exc)
                for i in good:
                    reasons[i].append("policy_error")
            else:
                for i, extra in zip(good, self._action_reasons(actions[good])):
                    reasons[i] += extra
                if self.world_model is not None:
                    disagreement = np.full(n, np.nan, dtype=np.float32)
                    clean = np.array([i for i in good if not reasons[i]], dtype=np.int64)
                    if clean.size:
                        disagreement[clean] = self.world_model(batch[clean], actions[clean])
                        for i in clean[~(disagreement[clean] <= self.max_disagreement)]:
                            reasons[i].append("model_disagreement")
        fallback = np.array([bool(r) for r in reasons])
        if fallback.any():
            rows = np.flatnonzero(fallback)
            sanitized = np.where(finite[rows], batch[rows], self._mean)
            for row, obs in zip(rows, sanitized):
                actions[row] = self._fallback_action(obs)
            self.fallbacks += int(rows.size)
            for r in reasons:
                for reason in r:
                    self.counts[reason] += 1
        self._last = GuardDecision(fallback, tuple(tuple(r) for r in reasons), scores, disagreement)
        return actions


class GuardedCameraPolicy(_Guard):
    """A camera policy behind the monitors that apply to it, with a fallback that needs no image.

    ``act`` takes what ``CameraPolicy.act`` takes (a dict of inputs, one observation or a batch) and never
    raises on bad values; names, dtypes and shapes are still checked (wiring mistakes). The fallback sees the
    state input (an empty row for a pixel-only policy).
    """

    def __init__(self, policy: CameraPolicy, fallback: Callable[[np.ndarray], Any], *,
                 ood_threshold: Optional[float], min_std: float, action_tolerance: float, hold_steps: int,
                 enabled: bool, state_input: Optional[str]) -> None:
        self.policy = policy
        manifest = policy.manifest
        self.bounds = ActionBounds(manifest.get("action_space") or {"type": "Box",
                                                                    "shape": list(policy.action_shape)})
        self.fallback = fallback
        self.enabled = bool(enabled)
        self.state_input = state_input
        width = policy.inputs[state_input][1][0] if state_input else 0
        self.ood_threshold = float(np.finfo(np.float32).max)
        self._mean, self._scale = np.zeros(width), np.ones(width)
        _check_ood_threshold(ood_threshold)
        if ood_threshold is not None and width:
            self._mean, self._scale = _manifest_reference(policy, ood_threshold, min_std, width,
                                                          f" of its {state_input!r} input")
            self.ood_threshold = float(ood_threshold)
        self._set_action_limits(action_tolerance)
        self.hold_steps = int(hold_steps)
        self._hold = 0
        self._last_good = self._mean.copy()
        self._safe = self.bounds.safe()
        self.world_model = None
        self.max_disagreement = None
        self.reset_counters()
        self.last = GuardDecision(False, (), 0.0)

    @classmethod
    def from_policy(cls, policy: CameraPolicy, *, fallback: Optional[Callable | dict] = None,
                    **overrides: Any) -> "GuardedCameraPolicy":
        """The monitors and fallback that the bundle's ``guard`` section configures (see ``GuardedPolicy.from_bundle``)."""
        manifest = policy.manifest
        settings, section, _ = _guard_settings(manifest, overrides)
        state_input = STATE_INPUT if STATE_INPUT in policy.inputs else None  # judged against the export's statistics
        if fallback is None or isinstance(fallback, dict):
            state = ((manifest.get("observation_space") or {}).get("spaces") or {}).get(state_input or "", {})
            fallback = build_fallback(fallback if fallback is not None else section.get("fallback"),
                                      {"observation_space": {"names": state.get("names") or []},
                                       "action_space": manifest.get("action_space") or {}})
        return cls(policy, fallback, ood_threshold=settings["ood_threshold"], min_std=settings["min_std"],
                   action_tolerance=settings["action_tolerance"], hold_steps=settings["hold_steps"],
                   enabled=settings["enabled"], state_input=state_input)

    def reset(self) -> None:
        """An episode boundary: clear the hold latch and the last finite state."""
        self._hold = 0
        self._last_good = self._mean.copy()

    # ----- acting ------------------------------------------------------------------------------------
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's action, or the fallback's when a monitor fires; the same shapes as CameraPolicy.act."""
        if not self.enabled:
            return self.policy.act(obs)
        feeds, single = self.policy.check_observation(obs, finite=False)
        n = len(next(iter(feeds.values())))
        self.steps += n
        finite = np.ones(n, dtype=bool)
        for name, array in feeds.items():
            if array.dtype.kind == "f":
                finite &= np.isfinite(array.reshape(n, -1)).all(axis=1)
        state = (feeds[self.state_input].astype(np.float64) if self.state_input else np.zeros((n, 0)))
        with np.errstate(invalid="ignore"):
            scores = np.where(finite, (np.abs(state - self._mean) / self._scale).max(axis=1, initial=0.0), np.inf)
        reasons: list[list[str]] = [[] if ok else ["nonfinite_observation"] for ok in finite]
        for i in np.flatnonzero(finite & (scores > self.ood_threshold)):
            reasons[i].append("ood_observation")
        good = np.flatnonzero([not r for r in reasons])
        actions = np.empty((n, *self.policy.action_shape), dtype=self.policy.action_dtype)
        if good.size:
            try:
                actions[good] = self.policy.run_batch({name: array[good] for name, array in feeds.items()})
            except Exception as exc:  # noqa: BLE001 - the loop must go on
                if not self.counts["policy_error"]:
                    log.warning("the policy raised %s: %s; the fallback acts", type(exc).__name__, exc)
                for i in good:
                    reasons[i].append("policy_error")
            else:
                for i, extra in zip(good, self._action_reasons(actions[good])):
                    reasons[i] += extra
        if single:  # the hold latch follows one robot's stream of calls
            if reasons[0]:
                self._hold = self.hold_steps
            elif self._hold:
                self._hold -= 1
                reasons[0].append("hold")
            if finite[0]:
                self._last_good = state[0].copy()
        fallback = np.array([bool(r) for r in reasons])
        for row in np.flatnonzero(fallback):
            clean = np.where(np.isfinite(state[row]), state[row], self._last_good)
            actions[row] = self._fallback_action(clean)
            for reason in reasons[row]:
                self.counts[reason] += 1
        self.fallbacks += int(fallback.sum())
        self.last = (GuardDecision(bool(fallback[0]), tuple(reasons[0]), float(scores[0])) if single else
                     GuardDecision(fallback, tuple(tuple(r) for r in reasons), scores))
        return actions[0] if single else actions
