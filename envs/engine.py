"""The batched engine: N copies of one task stepped together through ``mujoco.rollout``.

Sensor readings follow ``mj_step``'s convention (as gymnasium's MuJoCo envs do): they are computed
by the forward pass of the last physics step, before its integration, so they trail the state by
one physics step (a fraction of a control step).

Physics state lives in one ``(N, nstate)`` array; a step writes the controls of all envs and
hands the whole batch to MuJoCo's C rollout on a persistent thread pool, so Python runs once
per batch, not once per env. Each env may have its own ``MjModel`` (domain randomization
of masses, friction, gains...). Term functions read and write views of the batch arrays.

With ``array_device`` the batch arrays are torch tensors on the device a backend steps them on (the Warp
backend): terms and the step's bookkeeping compute there (``physai.envs.array_api``), events on host copies
of the rows they act on (``_HostRows``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
from typing import Any, Optional

import mujoco
import numpy as np

from physai.envs.array_api import TorchNamespace, to_host
from physai.envs.camera import BatchCamera
from physai.envs.spec import DEFAULT_BACKEND, TIMED_EVENT_MODES, TaskError, TaskSpec, Term, backend_class

FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS

# An env whose velocities pass this bound has blown up; it is reset, never averaged into the batch.
EXPLODED_QVEL = 1e4
NEVER_AGAIN = np.iinfo(np.int64).max  # the countdown of a once-per-episode event that has fired

# What a term's failure may raise: turned into a TaskError that names the term.
_TERM_ERRORS = (TaskError, TypeError, KeyError, ValueError, IndexError)

# ``array.any()`` of a 1-D array without the Python wrapper of the method.
_any = np.logical_or.reduce


def _any_of(array: Any) -> bool:
    """Whether any entry is set, for a numpy array (without the method's wrapper) or a tensor."""
    return bool(_any(array)) if isinstance(array, np.ndarray) else bool(array.any())


def _state_offsets(model: mujoco.MjModel) -> dict[str, int]:
    """Column offsets of qpos/qvel/act inside a full-physics state vector."""
    offsets, position = {}, 0
    for bit in range(16):
        flag = 1 << bit
        if not int(FULL) & flag:
            continue
        name = mujoco.mjtState(flag).name
        offsets[name] = position
        position += mujoco.mj_stateSize(model, flag)
    return {"qpos": offsets["mjSTATE_QPOS"], "qvel": offsets["mjSTATE_QVEL"], "act": offsets["mjSTATE_ACT"]}


def load_model(spec: TaskSpec) -> mujoco.MjModel:
    try:
        return mujoco.MjModel.from_xml_path(str(spec.mjcf))
    except ValueError as exc:
        raise TaskError(f"task {spec.name}: MJCF {spec.mjcf} does not load: {exc}") from exc


class BatchedEngine:
    """Owns physics, terms, commands, events and resets for ``num_envs`` envs of one task."""

    def __init__(self, spec: TaskSpec, num_envs: int, seed: Optional[int] = None,
                 nthread: Optional[int] = None, backend: str = DEFAULT_BACKEND,
                 array_device: Optional[str] = None) -> None:
        if num_envs < 1:
            raise TaskError(f"task {spec.name}: num_envs={num_envs} must be >= 1")
        self.spec = spec
        self.num_envs = num_envs
        self.model = load_model(spec)
        self.dt = self.model.opt.timestep * spec.frame_skip
        self._step_time = spec.frame_skip * self.model.opt.timestep  # what a step adds to each env's clock
        self._clock_tolerance = 0.5 * self.model.opt.timestep
        self.nthread = max(1, min(nthread or len(os.sched_getaffinity(0)), num_envs))
        self.rng = np.random.default_rng(seed)
        self.array_device = array_device
        self._ids: dict[tuple[str, str], int] = {}
        self._indices: dict[tuple[str, Any], Any] = {}
        self._joint_columns_of: dict[tuple[str, str], int] = {}
        self.actuator_ids = self._actuator_ids()
        self.num_actions = len(self.actuator_ids)
        self._all_actuators = np.array_equal(self.actuator_ids, np.arange(self.model.nu))
        ctrlrange = self.model.actuator_ctrlrange[self.actuator_ids]
        limited = self.model.actuator_ctrllimited[self.actuator_ids].astype(bool)
        self._ctrl_mid = np.where(limited, ctrlrange.mean(axis=1), 0.0)
        self._ctrl_half = np.where(limited, (ctrlrange[:, 1] - ctrlrange[:, 0]) / 2, 1.0) * spec.action_scale
        # Actions that are the controls already (ctrlrange [-1, 1], scale 1, every actuator): no arithmetic.
        self._ctrl_identity = (self._all_actuators and not self._ctrl_mid.any()
                               and bool((self._ctrl_half == 1.0).all()))
        # One model per env only when events will change them: startup randomization, or a reset
        # event whose function says it edits the model (``fn.edits_model = True``, e.g. obstacle layouts).
        # The copies are made by _apply_startup_events, below and at every reseed.
        # A startup event that declares ``edits_model = False`` (e.g. randomize_action_delay) needs no copies.
        self._per_env_models = any(getattr(term.fn, "edits_model", term.mode == "startup") for term in spec.events)
        self.models = [self.model] * num_envs
        self._scratch = mujoco.MjData(self.model)
        self.backend = _backend_class(spec, backend)(self.model, num_envs, self.nthread)
        # Where the batch arrays live and what computes on them (physai.envs.array_api): numpy on the host, or
        # with ``array_device`` torch tensors on the device the backend steps, so a GPU backend's step never
        # leaves it. Terms, rewards, terminations and the step's bookkeeping run there; events on the host (_call).
        self.xp = np
        if array_device is not None:
            try:
                self.xp = self._device_namespace(backend)
            except TaskError:
                self.backend.close()  # its thread pool or device arrays: nothing of a refused engine stays
                raise
        xp = self.xp
        # Optional backend hook: forget solver state (warm starts) of envs that reset.
        self._backend_reset = getattr(self.backend, "reset_envs", None)
        # Optional backend hook: the envs an event just ran on, whose MjModel it may have edited.
        self._backend_models_edited = getattr(self.backend, "models_edited", None)
        nstate = mujoco.mj_stateSize(self.model, FULL)
        offsets = _state_offsets(self.model)
        self._qpos_columns = slice(offsets["qpos"], offsets["qpos"] + self.model.nq)
        self._qvel_columns = slice(offsets["qvel"], offsets["qvel"] + self.model.nv)
        self.state = xp.zeros((num_envs, nstate), dtype=xp.float64)
        self._state_flat = self.state.reshape(-1)  # a view: the whole batch as one vector
        self.qpos = self.state[:, self._qpos_columns]
        self.qvel = self.state[:, self._qvel_columns]
        self._qpos0 = xp.asarray(self.model.qpos0)
        # qpos at the start of the current control step, for rewards on displacement (x after - x before).
        self.qpos_before_step = xp.zeros((num_envs, self.model.nq), dtype=xp.float64)
        self._control = xp.zeros((num_envs, spec.frame_skip, self.model.nu), dtype=xp.float64)
        self._state_out = xp.zeros((num_envs, spec.frame_skip, nstate), dtype=xp.float64)
        self._sensor_out = xp.zeros((num_envs, spec.frame_skip, self.model.nsensordata), dtype=xp.float64)
        self._final_state_out, self._final_sensor_out = self._state_out[:, -1], self._sensor_out[:, -1]
        self._sensordata = xp.zeros((num_envs, self.model.nsensordata), dtype=xp.float64)
        # Rows whose state was set by hand (resets, events): their sensors are recomputed when first read,
        # so a task whose terms read no sensor never pays mj_forward on a reset.
        self._sensors_stale = np.zeros(num_envs, dtype=bool)
        self._any_sensors_stale = False
        self.action = xp.zeros((num_envs, self.num_actions), dtype=xp.float64)
        self.last_action = xp.zeros((num_envs, self.num_actions), dtype=xp.float64)
        if array_device is not None:
            self._ctrl_mid, self._ctrl_half = xp.asarray(self._ctrl_mid), xp.asarray(self._ctrl_half)
            self._actuator_index = xp.asarray(self.actuator_ids)
        else:
            self._actuator_index = self.actuator_ids
        # Action latency, set by randomize_action_delay: None until an event asks, so undelayed tasks pay nothing.
        self.action_delay: Optional[np.ndarray] = None
        self._action_fifo: Optional[np.ndarray] = None
        self._fifo_head = 0
        self.episode_step = xp.zeros(num_envs, dtype=xp.int64)
        self._none_exploded = xp.zeros(num_envs, dtype=xp.bool)
        if array_device is None:
            self._none_exploded.flags.writeable = False
        self.episode_return = xp.zeros(num_envs, dtype=xp.float64)
        self.reward_sums = {term.name: xp.zeros(num_envs, dtype=xp.float64) for term in spec.rewards}
        self.commands: dict[str, np.ndarray] = {}
        self._command_timer = {term.name: np.zeros(num_envs, dtype=np.int64) for term in spec.commands}
        self._event_timer = {term.name: np.zeros(num_envs, dtype=np.int64) for term in spec.events
                             if term.mode in TIMED_EVENT_MODES}
        self.extras: dict[str, Any] = {}  # per-task scratch space for term functions (e.g. obstacle layouts)
        # Domain-randomization draws per env by name (e.g. "mass_scale/pole"), 1.0 = nominal physics, and the
        # names drawn as scales of nominal physics (those a task's context_ranges can set), with the range
        # the task's own event draws them from.
        self.physics_context: dict[str, np.ndarray] = {}
        self.scaled_context: dict[str, tuple[float, float]] = {}
        # Observation noise per env: the task's base level, raised during sensor-noise bursts.
        self.noise_std = xp.full(num_envs, float(spec.observation_noise), dtype=xp.float64)
        self.noise_burst_until = xp.zeros(num_envs, dtype=xp.int64)
        self.noise_burst_std = xp.zeros(num_envs, dtype=xp.float64)
        # Host copies of what events write, for a batch on a device: events run there on the rows they act on.
        self._event_rows = None if array_device is None else _HostRows(self)
        self._device_generator = None  # observation noise on a device: made on first use (_standard_normal)
        self._last_obs: Optional[np.ndarray] = None
        self.camera: Optional[BatchCamera] = None
        self._bind_terms()
        if spec.camera is not None:
            self.id_of("camera", spec.camera, "camera")
        self._apply_startup_events()
        # Timed events fire late in an episode; try each once now so a bad name or range fails at build.
        for term in spec.events:
            if term.mode in TIMED_EVENT_MODES:
                self._run_event(term, np.arange(1))
        if spec.pixels is not None:
            self.camera = BatchCamera(self, spec.pixels)
        self.reset_envs(np.arange(num_envs))
        if self.camera is not None:
            self.camera.check_render_rate()
        self.observation_names = self._observation_names()
        self.observation_dim = len(self.observation_names)
        # The state columns a camera policy keeps beside its pixels (pixels.state), in the task's order.
        self.policy_state_columns = np.array(spec.pixels.kept_columns(self.observation_names)
                                             if spec.pixels is not None else [], dtype=np.int64)
        for term in spec.rewards + spec.terminations:
            self._check_output(term, self._call(term, "rewards" if term in spec.rewards else "terminations"))

    def seed(self, seed: Optional[int]) -> None:
        """Restart the random streams and redraw every env's startup randomization from ``seed``,
        so one seed gives the same physics and the same trajectories in a new process."""
        self.reseed(np.random.default_rng(seed))

    def reseed(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._device_generator = None  # a device's noise stream restarts from the new stream too
        self._apply_startup_events()

    def _apply_startup_events(self) -> None:
        if self._per_env_models:
            self.models = [copy.deepcopy(self.model) for _ in range(self.num_envs)]  # from nominal: no compounding
        for term in self.spec.events:
            if term.mode == "startup":
                self._run_event(term, np.arange(self.num_envs))

    def _device_namespace(self, backend: str) -> TorchNamespace:
        """The namespace on the device the backend steps; a device-resident batch the backend or the task cannot
        keep there is refused at build."""
        if not getattr(self.backend, "steps_tensors", False):
            raise TaskError(f"task {self.spec.name}: the batch can live on a torch device only with a backend that "
                            f"steps torch tensors (env.backend=warp); {backend!r} steps numpy arrays on the host")
        reason = host_only_reason(self.spec)
        if reason is not None:
            raise TaskError(f"task {self.spec.name}: {reason}; keep its batch on the host (no array device)")
        namespace = TorchNamespace(self.backend.torch_device)
        if namespace._torch.device(self.array_device).type != namespace.device.type:
            raise TaskError(f"task {self.spec.name}: array_device={self.array_device!r}, but the backend steps on "
                            f"{self.backend.torch_device!r}; keep the batch where the physics runs")
        return namespace

    # ----- names -----------------------------------------------------------------------------
    def set_physics_context(self, name: str, env_ids: np.ndarray, values: np.ndarray) -> None:
        """Record a randomized physics quantity of some envs (startup events call this)."""
        if name not in self.physics_context:
            self.physics_context[name] = np.ones(self.num_envs)
        self.physics_context[name][env_ids] = values

    def set_action_delay(self, env_ids: np.ndarray, steps: np.ndarray, max_steps: int = 0) -> None:
        """Apply the actions of some envs ``steps`` control steps after the policy sends them.

        Each env keeps a FIFO of its policy's last actions; a step applies the one sent ``steps`` steps
        ago. A reset refills an env's FIFO with zeros (the neutral command), so the first ``steps`` steps
        of an episode apply zero, as delay_eval's harness holds a neutral command until the first action
        arrives. ``max_steps`` sizes the FIFO for later draws up to it.
        """
        if self.array_device is not None:  # an event that calls this without declaring host_only
            raise TaskError(f"task {self.spec.name}: action delay runs on the host engine only; drop the event or "
                            f"keep the batch on the host (no array device)")
        steps = np.asarray(steps, dtype=np.int64)
        if (steps < 0).any():
            raise ValueError(f"action delay {steps.min()} is negative; a delay is a whole number of control "
                             f"steps >= 0")
        if self.action_delay is None:
            self.action_delay = np.zeros(self.num_envs, dtype=np.int64)
            self._rows = np.arange(self.num_envs)
        self.action_delay[env_ids] = steps
        slots = max(int(max_steps), int(self.action_delay.max())) + 1
        old = self._action_fifo
        if old is None or old.shape[1] < slots:
            fifo = np.zeros((self.num_envs, slots, self.num_actions))
            for age in range(0 if old is None else old.shape[1]):  # keep each queued action at its age
                fifo[:, (self._fifo_head - age) % slots] = old[:, (self._fifo_head - age) % old.shape[1]]
            self._action_fifo = fifo

    def _delay_actions(self, action: np.ndarray) -> None:
        """Queue the policy's clipped actions; ``self.action`` becomes the ones that reach the actuators."""
        fifo = self._action_fifo
        self._fifo_head = (self._fifo_head + 1) % fifo.shape[1]
        np.clip(action, -1.0, 1.0, out=fifo[:, self._fifo_head])
        self.action[:] = fifo[self._rows, (self._fifo_head - self.action_delay) % fifo.shape[1]]

    @property
    def context_names(self) -> list[str]:
        return sorted(self.physics_context)

    def context_matrix(self) -> np.ndarray:
        """(num_envs, len(context_names)) physics context, columns in ``context_names`` order."""
        if not self.physics_context:
            return np.zeros((self.num_envs, 0))
        return np.stack([self.physics_context[name] for name in self.context_names], axis=1)

    def _actuator_ids(self) -> np.ndarray:
        if not self.spec.actuators:
            return np.arange(self.model.nu)
        return np.array([self.id_of("actuator", name, "actions.actuators") for name in self.spec.actuators])

    def id_of(self, kind: str, name: str, where: str = "a term") -> int:
        key = (kind, name)
        if key not in self._ids:
            self._ids[key] = self._lookup(kind, name, where)
        return self._ids[key]

    def _lookup(self, kind: str, name: str, where: str) -> int:
        obj = getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}")
        index = mujoco.mj_name2id(self.model, obj, name)
        if index < 0:
            known = [mujoco.mj_id2name(self.model, obj, i) for i in range(_count(self.model, kind))]
            raise TaskError(f"task {self.spec.name}: {where} names {kind} {name!r}, which {self.spec.mjcf.name} "
                            f"does not have; known: {[k for k in known if k]}")
        return index

    def joint_qpos(self, name: str, where: str = "a term") -> int:
        """Column of ``qpos`` where this joint starts; cached, since terms ask every step."""
        key = ("qpos", name)
        if key not in self._joint_columns_of:
            self._joint_columns_of[key] = int(self.model.jnt_qposadr[self.id_of("joint", name, where)])
        return self._joint_columns_of[key]

    def joint_dof(self, name: str, where: str = "a term") -> int:
        """Column of ``qvel`` where this joint starts; cached."""
        key = ("dof", name)
        if key not in self._joint_columns_of:
            self._joint_columns_of[key] = int(self.model.jnt_dofadr[self.id_of("joint", name, where)])
        return self._joint_columns_of[key]

    def _single_dof(self, joints: tuple[str, ...]) -> None:
        for joint in joints:
            kind = int(self.model.jnt_type[self.id_of("joint", joint, "joints")])
            if kind in (mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_BALL):
                raise TaskError(f"task {self.spec.name}: joint {joint!r} is a free or ball joint with several "
                                f"coordinates; name hinge/slide joints here, or use push_dofs / sensors for it")

    def qpos_indices(self, joints: tuple[str, ...]) -> np.ndarray:
        """Columns of ``qpos`` for these hinge/slide joints; cached, since terms ask every step."""
        columns = self._indices.get(("qpos", joints))
        return self._joint_columns("qpos", joints, self.model.jnt_qposadr) if columns is None else columns

    def dof_indices(self, joints: tuple[str, ...]) -> np.ndarray:
        """Columns of ``qvel`` for these hinge/slide joints; cached."""
        columns = self._indices.get(("dof", joints))
        return self._joint_columns("dof", joints, self.model.jnt_dofadr) if columns is None else columns

    def _joint_columns(self, kind: str, joints: tuple[str, ...], address: np.ndarray) -> np.ndarray:
        key = (kind, joints)
        if key not in self._indices:
            self._single_dof(joints)
            self._indices[key] = np.array([address[self.id_of("joint", j, "joints")] for j in joints],
                                          dtype=np.int64)
        return self._indices[key]

    def sensor(self, name: str, where: str = "a term") -> slice:
        key = ("sensor", name)
        if key not in self._indices:
            index = self.id_of("sensor", name, where)
            start = int(self.model.sensor_adr[index])
            self._indices[key] = slice(start, start + int(self.model.sensor_dim[index]))
        return self._indices[key]

    def memory_bytes(self) -> int:
        """Bytes this engine holds for its envs: per-env models, batch arrays and per-thread MjData."""
        arrays = [self.state, self._control, self._state_out, self._sensor_out, self._sensordata, self.action,
                  self.last_action, self.episode_step, self.episode_return, *self.reward_sums.values(),
                  *self.commands.values()]
        if self._action_fifo is not None:
            arrays.append(self._action_fifo)
        models = len({id(m) for m in self.models}) * self.model.nbuffer
        return int(sum(a.nbytes for a in arrays) + models + self.backend.scratch_bytes())

    # ----- terms -----------------------------------------------------------------------------
    def _call(self, term: Term, section: str, env_ids: Optional[np.ndarray] = None) -> Any:
        try:
            if env_ids is None:
                return term.fn(self, **term.params)
            if self._event_rows is not None:  # the batch lives on a device: the event acts on host copies of its rows
                return self._event_rows.run(term, env_ids)
            return term.fn(self, env_ids, **term.params)
        except _TERM_ERRORS as exc:
            raise self._term_error(term, section, exc) from exc

    def _term_error(self, term: Term, section: str, exc: Exception) -> TaskError:
        """The error a failing term raises, naming the task, the term and its params."""
        if isinstance(exc, TaskError):
            return TaskError(f"{section}.{term.name}: {exc}")
        return TaskError(f"task {self.spec.name}: {section}.{term.name} ({term.fn.__name__}) failed with "
                         f"params {term.params}: {exc}")

    def _bind_terms(self) -> None:
        """Bind each per-step term to this engine and its params once, so a step calls them directly
        (the loops that call them catch a failure and name the term, as ``_call`` does).

        A term function may offer ``fn.bind(engine, **params)``, the same term with its lookups done
        once (see mdp.py). One that cannot bind is called plainly, and the build's checks, which call
        every term through ``_call``, then report what is wrong with it.
        """
        def bound(term: Term) -> Any:
            binder = getattr(term.fn, "bind", None)
            if binder is not None:
                try:
                    return binder(self, **term.params)
                except _TERM_ERRORS:
                    pass
            return functools.partial(term.fn, self, **term.params)

        self._observation_fns = [(term, bound(term)) for term in self.spec.observations]
        self._reward_fns = [(term, bound(term), self.reward_sums[term.name]) for term in self.spec.rewards]
        self._termination_fns = [(term, bound(term)) for term in self.spec.terminations]
        # Commands and timed (interval, once) events counted down every step: (timer, term, what firing does).
        self._tickers = [(self._command_timer[term.name], term, functools.partial(self._resample_command, term))
                         for term in self.spec.commands]
        self._tickers += [(self._event_timer[term.name], term, functools.partial(self._fire_event, term))
                          for term in self.spec.events if term.mode in TIMED_EVENT_MODES]
        self._reset_and_timed_events = [term for term in self.spec.events
                                           if term.mode in ("reset", *TIMED_EVENT_MODES)]

    def _check_output(self, term: Term, value: np.ndarray) -> None:
        if np.shape(value)[:1] != (self.num_envs,):
            raise TaskError(f"task {self.spec.name}: term {term.name} returned shape {np.shape(value)}; "
                            f"expected ({self.num_envs}, ...)")

    def observe(self) -> np.ndarray:
        n, xp = self.num_envs, self.xp
        if self._event_rows is not None:  # on a device: whether a burst event ever ran, known on the host
            burst = self._event_rows.bursts_seen
        else:
            burst = self.noise_burst_until[0] if n == 1 else _any_of(self.noise_burst_until)
        if burst:  # a burst event ran
            std = xp.where(self.episode_step < self.noise_burst_until, self.noise_burst_std, self.noise_std)
        else:
            std = self.noise_std
        parts = []
        term = None
        try:
            for term, fn in self._observation_fns:
                parts.append(xp.asarray(fn(), dtype=xp.float64).reshape(n, -1))
        except _TERM_ERRORS as exc:
            if term is None:
                raise
            raise self._term_error(term, "observations", exc) from exc
        if self._event_rows is not None:  # on a device, decided without looking at std there
            noisy = bool(burst or self.spec.observation_noise)
        else:
            noisy = bool(std[0]) if n == 1 else _any_of(std)
        if noisy:
            obs = xp.concatenate(parts, axis=1)
            obs = obs + self._standard_normal(obs.shape) * std[:, None]
            return xp.astype(obs, xp.float32)
        # Cast while concatenating: the same rounding as concatenating in float64, then casting.
        return xp.concatenate(parts, axis=1, dtype=xp.float32)

    def _standard_normal(self, shape: tuple[int, ...]) -> Any:
        """Observation noise: the engine's numpy stream on the host; on a device, a torch generator there,
        seeded from that stream when first used (a batch of noise drawn on the host would cross every step)."""
        if self.array_device is None:
            return self.rng.normal(0.0, 1.0, size=shape)
        if self._device_generator is None:
            self._device_generator = self.xp.Generator(device=self.xp.device)
            self._device_generator.manual_seed(int(self.rng.integers(2**62)))
        return self.xp.randn(shape, generator=self._device_generator, dtype=self.xp.float64, device=self.xp.device)

    def _observation_names(self) -> list[str]:
        """One name per observation column: the term's name, indexed when the term is wider than 1."""
        names = []
        for term in self.spec.observations:
            width = int(self.xp.asarray(self._call(term, "observations")).reshape(self.num_envs, -1).shape[1])
            names += [term.name] if width == 1 else [f"{term.name}[{i}]" for i in range(width)]
        return names

    # ----- reset -----------------------------------------------------------------------------
    def reset_envs(self, env_ids: Any) -> None:
        env_ids = to_host(env_ids)  # timers, models and events are the host's
        if env_ids.size == 0:
            return
        rows = self._rows_of(env_ids)
        self.state[rows] = 0.0
        self.qpos[rows] = self._qpos0
        self.episode_step[rows] = 0
        self.episode_return[rows] = 0.0
        self.action[rows] = 0.0
        self.last_action[rows] = 0.0
        if self._action_fifo is not None:
            self._action_fifo[env_ids] = 0.0
        self.noise_burst_until[rows] = 0
        for sums in self.reward_sums.values():
            sums[rows] = 0.0
        with self._host_rows(env_ids):  # on a device: one round trip of these rows for all the reset's events
            for term in self._reset_and_timed_events:  # in the task's order: they share the random stream
                if term.mode == "reset":
                    self._run_event(term, env_ids)
                else:
                    self._event_timer[term.name][env_ids] = self._draw_interval(term, env_ids.size)
            for term in self.spec.commands:
                self._resample_command(term, env_ids)
                self._command_timer[term.name][env_ids] = self._draw_interval(term, env_ids.size)
        if self._backend_reset is not None:
            self._backend_reset(env_ids)
        self._forward(env_ids)
        if self.camera is not None:
            self.camera.restart(env_ids)

    def policy_observation(self, state_obs: np.ndarray, env_ids: Optional[np.ndarray] = None,
                           images: Optional[dict[str, np.ndarray]] = None) -> Any:
        """What the policy sees: the state observation, or for a camera task a dict of its images
        (``pixels``, ``depth``) and the state terms it keeps (``state``). ``state_obs`` holds the rows of
        ``env_ids`` (all envs by default); ``images`` replaces the current frame stacks (final observations)."""
        if self.camera is None:
            return state_obs
        observation = dict(images) if images is not None else self.camera.observation(env_ids)
        if self.policy_state_columns.size:
            observation["state"] = state_obs[:, self.policy_state_columns]
        return observation

    def _resample_command(self, term: Term, env_ids: np.ndarray) -> None:
        """Draw new command values for ``env_ids`` (host ids; the draw is the host's); their timers are redrawn
        by the caller."""
        value = np.asarray(self._call(term, "commands", env_ids), dtype=np.float64).reshape(env_ids.size, -1)
        if term.name not in self.commands:
            self.commands[term.name] = self.xp.zeros((self.num_envs, value.shape[1]), dtype=self.xp.float64)
        self.commands[term.name][self._rows_of(env_ids)] = self.xp.asarray(value)

    def _host_rows(self, env_ids: np.ndarray) -> Any:
        """Where events act on ``env_ids``: the batch itself on the host, host copies of the rows on a device."""
        return contextlib.nullcontext() if self._event_rows is None else self._event_rows.rows(env_ids)

    def _rows_of(self, env_ids: np.ndarray) -> Any:
        """Host env ids as an index of the batch arrays (on their device)."""
        return env_ids if self.array_device is None else self.xp.asarray(env_ids)

    def _forward(self, env_ids: np.ndarray) -> None:
        """Mark envs whose state was set by hand: their sensors are recomputed on the next read."""
        if self._sensordata.shape[1]:
            self._sensors_stale[env_ids] = True
            self._any_sensors_stale = True

    @property
    def sensordata(self) -> np.ndarray:
        """(num_envs, nsensordata) sensor readings; rows set by hand are brought up to date first."""
        if self._any_sensors_stale:
            data = self._scratch
            stale = np.flatnonzero(self._sensors_stale)
            rows = self._rows_of(stale)
            states = to_host(self.state[rows])  # one copy from a device for all the rows, and one back
            readings = np.empty((stale.size, self.model.nsensordata))
            for k, i in enumerate(stale):
                mujoco.mj_setState(self.models[i], data, states[k], FULL)
                mujoco.mj_forward(self.models[i], data)
                readings[k] = data.sensordata
            self._sensordata[rows] = self.xp.asarray(readings)
            self._sensors_stale[:] = False
            self._any_sensors_stale = False
        return self._sensordata

    # ----- step ------------------------------------------------------------------------------
    def step(self, action: Any, autoreset: bool = True) -> dict[str, Any]:
        xp = self.xp
        action = xp.asarray(action, dtype=xp.float64)
        if action.shape != self.action.shape:
            raise TaskError(f"task {self.spec.name}: actions of shape {action.shape}; expected "
                            f"({self.num_envs}, {self.num_actions}) (num_envs, actuators)")
        n = self.num_envs
        xp.copyto(self.last_action, self.action)
        if self._action_fifo is None:
            # np.clip's semantics (NaN passes through) without its Python-level wrapper
            xp.minimum(xp.maximum(action, -1.0, out=self.action), 1.0, out=self.action)
        else:  # terms then see the applied action, as on hardware and in delay_eval's harness
            self._delay_actions(action)
        if self._ctrl_identity:
            self._control[:] = self.action[:, None, :]
        else:
            ctrl = (self._ctrl_mid + self._ctrl_half * self.action)[:, None, :]
            if self._all_actuators:
                self._control[:] = ctrl
            else:
                self._control[:, :, self._actuator_index] = ctrl
        # One env is counted with element operations on Python scalars (the same IEEE and integer
        # arithmetic as the array operations, which cost several times more on a single row).
        if n == 1:
            expected = float(self.state[0, 0]) + self._step_time
        else:
            expected = self.state[:, 0] + self._step_time
        xp.copyto(self.qpos_before_step, self.qpos)
        self._simulate()
        if n == 1:
            self.episode_step[0] += 1
        else:
            self.episode_step += 1
        exploded = self._exploded(expected)
        any_exploded = exploded is not self._none_exploded and _any_of(exploded)
        if any_exploded:
            # Zero the broken rows so no NaN reaches rewards or observations; the env resets below.
            self.state[exploded] = 0.0
            self.qpos[exploded] = self._qpos0
            self._sensordata[exploded] = 0.0
        # Isaac Lab's order: rewards and terminations judge the step the policy acted on; commands
        # and interval events then change the world for the next observation.
        term = None
        try:
            if n == 1 and not any_exploded:
                # One env: the weighted terms are summed as Python floats, the same IEEE arithmetic
                # in the same order as the batch path, without an array operation per sum.
                total = 0.0
                for term, fn, sums in self._reward_fns:
                    value = term.weight * float(xp.asarray(fn(), dtype=xp.float64)[0])
                    sums[0] += value
                    total += value
                reward = xp.asarray([total], dtype=xp.float64)
                self.episode_return[0] += total
            else:
                reward = xp.zeros(n, dtype=xp.float64)
                for term, fn, sums in self._reward_fns:
                    value = term.weight * xp.asarray(fn(), dtype=xp.float64)
                    if any_exploded:
                        value[exploded] = 0.0
                    sums += value
                    reward += value
                self.episode_return += reward
        except _TERM_ERRORS as exc:
            if term is None:
                raise
            raise self._term_error(term, "rewards", exc) from exc
        terminated = xp.zeros(n, dtype=xp.bool)
        term = None
        try:
            for term, fn in self._termination_fns:
                terminated |= xp.asarray(fn(), dtype=xp.bool)
        except _TERM_ERRORS as exc:
            if term is None:
                raise
            raise self._term_error(term, "terminations", exc) from exc
        # A blow-up is the simulator's failure, not the policy's: truncate (bootstrap), never terminate.
        truncated = self.episode_step >= self.spec.episode_steps
        if any_exploded:
            terminated &= ~exploded
            truncated |= exploded
        if self._termination_fns:
            truncated &= ~terminated
        for timer, term, fire in self._tickers:
            self._tick(timer, term, fire)
        obs = self.observe()
        if any_exploded and self._last_obs is not None:
            obs[exploded] = self._last_obs[exploded]  # the last observation that was real
        if self.camera is not None:
            self.camera.capture()
        info: dict[str, Any] = {"exploded": exploded}
        if n == 1:
            done_ids = xp.zeros(1, dtype=xp.int64) if terminated[0] or truncated[0] else None
        else:
            done_ids = xp.nonzero(terminated | truncated)[0]
            if not len(done_ids):
                done_ids = None
        if done_ids is not None:
            info["episode_return"] = self.episode_return[done_ids]
            info["episode_length"] = self.episode_step[done_ids]
            info["episode_terms"] = {name: sums[done_ids] for name, sums in self.reward_sums.items()}
            info["done_ids"] = done_ids
            if autoreset:
                info["final_obs"] = obs[done_ids]
                if self.camera is not None:
                    info["final_images"] = self.camera.observation(done_ids)
                self.reset_envs(done_ids)
                obs[done_ids] = self.observe()[done_ids]
        self._last_obs = obs
        return {"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated, "info": info}

    def _exploded(self, expected_time: Any) -> np.ndarray:
        """Envs that blew up this step; ``self._none_exploded`` itself when none did (the usual case,
        decided with a few whole-batch reductions instead of per-env masks).

        MuJoCo resets an env's data by itself when it meets NaN/huge values; its clock then disagrees
        with the time this step should have taken.
        """
        tolerance = self._clock_tolerance
        if self.array_device is not None:  # on a device: masks there, one look at whether any env blew up
            exploded = (self.state[:, 0] - expected_time).abs() > tolerance
            exploded |= ~self.xp.isfinite(self.state).all(axis=1) | (self.qvel.abs() > EXPLODED_QVEL).any(axis=1)
            return exploded if bool(exploded.any()) else self._none_exploded
        if self.num_envs == 1:  # one clock: ``expected_time`` is a Python float
            clock_ok = abs(float(self.state[0, 0]) - expected_time) <= tolerance
        else:
            clock_ok = np.maximum.reduce(np.abs(self.state[:, 0] - expected_time)) <= tolerance
        # A NaN anywhere fails every comparison here, so it takes the per-env path below. Plain ufunc
        # reductions, not np.dot: a BLAS call on a large batch wakes BLAS threads that spin against the
        # rollout threads.
        # The batch's sum is finite exactly when every entry is (short of an overflow, itself a blow-up).
        if (clock_ok and math.isfinite(np.add.reduce(self._state_flat))
                and np.maximum.reduce(np.abs(self.qvel), axis=None) <= EXPLODED_QVEL):
            return self._none_exploded
        clock_error = np.abs(self.state[:, 0] - expected_time)
        return ((clock_error > tolerance) | ~np.isfinite(self.state).all(axis=1)
                | (np.abs(self.qvel) > EXPLODED_QVEL).any(axis=1))

    def _tick(self, timer: np.ndarray, term: Term, fire) -> None:
        """Count a timer down by one control step; fire for the envs that are due and redraw their timers
        (a ``once`` event is not redrawn: it waits for the next reset)."""
        timer -= 1
        due = (timer <= 0).nonzero()[0]
        if due.size:
            fire(due)
            timer[due] = self._draw_interval(term, due.size) if term.mode != "once" else NEVER_AGAIN

    def _draw_interval(self, term: Term, count: int) -> np.ndarray:
        """Control steps until a command or interval event next fires, uniform in ``every_steps``."""
        return self.rng.integers(*term.every_steps, endpoint=True, size=count)

    def _run_event(self, term: Term, env_ids: np.ndarray) -> None:
        self._call(term, "events", env_ids)
        if self._backend_models_edited is not None:
            self._backend_models_edited(self.models, env_ids, term.name)

    def _fire_event(self, term: Term, env_ids: np.ndarray) -> None:
        self._run_event(term, env_ids)
        self._forward(env_ids)

    def _simulate(self) -> None:
        self.backend.step(self.models, self.state, self._control, self._state_out, self._sensor_out)
        self.xp.copyto(self.state, self._final_state_out)
        if self._sensordata.shape[1]:
            self.xp.copyto(self._sensordata, self._final_sensor_out)
        if self._any_sensors_stale:  # every row was just computed by the step itself
            self._sensors_stale[:] = False
            self._any_sensors_stale = False

    def close(self) -> None:
        self.backend.close()
        if self.camera is not None:
            self.camera.close()


def host_only_reason(spec: TaskSpec) -> Optional[str]:
    """Why this task's batch cannot live on a torch device (None when it can): what only the host engine does."""
    if spec.pixels is not None:
        return "a camera task renders on the host"
    for term in spec.events:
        reason = getattr(term.fn, "host_only", None)
        if reason:
            return f"event {term.name!r} ({term.fn.__name__}): {reason}"
    return None


class _HostRows:
    """Events on a batch that lives on a device: each runs as the same numpy function as on the host engine,
    on host copies of the arrays events write (the state, its qpos/qvel, sensor-noise bursts, ``extras``
    layouts), brought up to date for the rows it acts on before and copied back after. A step then moves only
    the rows that reset or were pushed, never the batch; the events of one reset share one round trip.
    Array ``extras`` are per env (first dimension ``num_envs``), as the car's layouts are."""

    ARRAYS = ("state", "noise_burst_std", "noise_burst_until", "episode_step")

    def __init__(self, engine: "BatchedEngine") -> None:
        self._engine = engine
        self._mirrors = {name: np.array(to_host(getattr(engine, name))) for name in self.ARRAYS}
        state = self._mirrors["state"]
        self._extras: dict[str, Any] = {}
        self.view = _EventView(engine, {**self._mirrors, "qpos": state[:, engine._qpos_columns],
                                        "qvel": state[:, engine._qvel_columns], "extras": self._extras})
        self._open: Optional[np.ndarray] = None
        self.bursts_seen = False  # whether an event ever set a sensor-noise burst (then observe checks each step)

    @contextlib.contextmanager
    def rows(self, env_ids: np.ndarray):
        """Host copies of ``env_ids``'s rows for the events run inside; copied back to the device at the end."""
        if self._open is not None:  # inside a reset's round trip: its rows are already here
            if not np.isin(env_ids, self._open).all():
                raise RuntimeError(f"an event ran on envs {env_ids} inside a round trip of envs {self._open}")
            yield
            return
        engine = self._engine
        index = engine._rows_of(env_ids)
        for name, mirror in self._mirrors.items():
            mirror[env_ids] = to_host(getattr(engine, name)[index])
        self._open = env_ids
        try:
            yield
        finally:
            self._open = None
            for name, mirror in self._mirrors.items():
                getattr(engine, name)[index] = engine.xp.asarray(mirror[env_ids])
            self.bursts_seen |= bool(self._mirrors["noise_burst_until"][env_ids].any())
            for key, value in self._extras.items():
                if not isinstance(value, np.ndarray):
                    engine.extras[key] = value
                elif key not in engine.extras:  # a layout the event just made, for every env
                    engine.extras[key] = engine.xp.asarray(value)
                else:
                    engine.extras[key][index] = engine.xp.asarray(value[env_ids])

    def run(self, term: Term, env_ids: np.ndarray) -> Any:
        with self.rows(env_ids):
            return term.fn(self.view, env_ids, **term.params)


class _EventView:
    """The engine as an event sees it on a device-resident batch: host arrays by name, the rest the engine's."""

    def __init__(self, engine: "BatchedEngine", arrays: dict[str, Any]) -> None:
        self._engine = engine
        self.__dict__.update(arrays)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _backend_class(spec: TaskSpec, backend: str) -> Any:
    try:
        return backend_class(backend)
    except TaskError as exc:
        raise TaskError(f"task {spec.name}: {exc}") from exc


def _count(model: mujoco.MjModel, kind: str) -> int:
    return {"actuator": model.nu, "joint": model.njnt, "body": model.nbody, "geom": model.ngeom,
            "sensor": model.nsensor, "site": model.nsite, "camera": model.ncam, "light": model.nlight,
            "material": model.nmat}[kind]
