"""MuJoCo Warp physics backend: the whole batch's physics on one Warp device (a CUDA GPU, or Warp's CPU device).

Select it with ``env.backend=physai.envs.backends_warp.WarpBackend``; it needs the ``warp`` extra
(``pip install -e '.[warp]'``: mujoco-warp and warp-lang at the versions in ``PINNED``; a mujoco-warp
update once cut mjlab's speed 17x, so any other version is warned about).

What runs on the device: every physics step of every env (MJWarp's ``step`` over ``num_envs`` worlds),
with the per-env model fields that randomization events edit. The engine hands a step either numpy arrays
(its batch on the host: states and controls are copied to the device and the state and sensors the last
physics step leaves back, float64 on the host, float32 on the device) or torch tensors on this backend's
device (``BatchedEngine(array_device=...)``: the same copies, made on the device in the tensors' stream, so
nothing crosses to the host). The physics steps before the last of a control step stay on the device.

Numerics: MJWarp computes in float32, C MuJoCo in float64. From the same state with the same controls the
two agree to float32 rounding at first and drift apart as a chaotic system amplifies it; the tolerance
and how long it holds are in tests/test_warp_backend.py and the README.

The constraint solver's warm start (``qacc_warmstart``) stays on the device from step to step, as in
``mj_step`` on one ``MjData`` (gymnasium's envs), and is zeroed when an env resets (and for every env when
the buffers below grow).

MJWarp's contact and constraint buffers have a fixed size and it drops what does not fit; after every
control step the backend reads its overflow flags and, where contacts or rows were dropped, doubles the
room and redoes the step (see ``_grow_on_overflow``). MJWarp still prints its own overflow message from
the kernel that met it; silencing it would recompile every kernel.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import functools
import logging
from importlib import metadata
from typing import Any, Optional, Sequence

import mujoco
import numpy as np

from physai.envs.spec import TaskError

log = logging.getLogger(__name__)

FULL = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
PINNED = {"mujoco-warp": "4.0.0", "warp-lang": "1.19.0"}
INSTALL = "pip install -e '.[warp]'"
# Contacts per env beyond which a task is refused rather than given more room (each doubling costs memory and time).
MAX_CONTACTS_PER_ENV = 65536
CPU_BACKEND = "leave env.backend unset for the CPU backend"
# Model fields only a renderer reads: events may give each env its own (colors, lights, cameras, materials).
# The host renders with the engine's per-env MjModels; MJWarp's physics never reads these.
RENDER_ONLY_FIELDS = frozenset({"geom_rgba", "geom_matid", "light_pos", "light_dir", "light_diffuse",
                                "light_ambient", "light_specular", "cam_pos", "cam_quat", "cam_fovy",
                                "mat_rgba", "mat_texid"})


def import_warp() -> tuple[Any, Any]:
    """``warp`` and ``mujoco_warp``, or a TaskError naming the extra to install."""
    try:
        import mujoco_warp
        import warp
    except ImportError as exc:
        raise TaskError(f"the MuJoCo Warp backend needs mujoco-warp and warp-lang, which are not installed "
                        f"({exc}): install the warp extra, {INSTALL} (mujoco-warp=={PINNED['mujoco-warp']}, "
                        f"warp-lang=={PINNED['warp-lang']})") from exc
    for package, pinned in PINNED.items():
        installed = metadata.version(package)
        if installed != pinned:
            log.warning("%s %s is installed; physai's Warp backend is pinned to %s (%s)", package, installed,
                        pinned, INSTALL)
    warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)  # no line per kernel module loaded
    return warp, mujoco_warp


class ModelBytes:
    """Which array fields of an ``MjModel`` copy differ from the nominal model, found by comparing raw bytes.

    Every array field of an ``MjModel`` lives in one buffer, laid out alike in every copy of the model, so
    one byte comparison per env finds what an event edited, whatever the event (reading ~600 fields one by
    one costs about a millisecond per env).
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        fields = [(name, value) for name in dir(model)
                  if not name.startswith("_") and isinstance(value := getattr(model, name), np.ndarray) and value.size]
        starts = {name: value.ctypes.data for name, value in fields}
        self.first_field = min(starts, key=starts.get)
        base = starts[self.first_field]
        self.span = max(starts[name] + value.nbytes for name, value in fields) - base
        self.names = [name for name, _ in fields]
        self.owner = np.full(self.span, -1, dtype=np.int32)  # the field index of every byte; -1: padding
        for index, (name, value) in enumerate(fields):
            self.owner[starts[name] - base:starts[name] - base + value.nbytes] = index
        self.nominal = self.view(model).copy()

    def view(self, model: mujoco.MjModel) -> np.ndarray:
        """The model's field bytes, not copied (valid while ``model`` lives)."""
        address = getattr(model, self.first_field).ctypes.data
        return np.frombuffer((ctypes.c_uint8 * self.span).from_address(address), dtype=np.uint8)

    def differing(self, model: mujoco.MjModel) -> list[str]:
        """Names of the array fields in which ``model`` differs from the nominal one."""
        changed = self.view(model) != self.nominal
        if not changed.any():
            return []
        return [self.names[i] for i in np.unique(self.owner[changed]) if i >= 0]


class WarpBackend:
    """MuJoCo Warp over all envs on one device: CUDA when Warp finds a GPU, else Warp's CPU device.

    Per-env models: the engine keeps one ``MjModel`` per env when events randomize physics. Each field an
    event edits that MJWarp batches per world (``body_mass``, ``geom_friction``, ``actuator_gainprm``,
    ``body_pos``...) gets one row per env on the device; a task whose events edit any other field (or
    ``opt``) is refused, naming the field and the event. The engine reports every event it runs through
    ``models_edited``, so only the edited envs are compared and a step compares nothing.
    """

    device: Optional[str] = None  # None: "cuda" when Warp finds a CUDA device, else "cpu"
    # The engine may keep its batch as torch tensors on this backend's device (``array_device``): a step then
    # copies state and controls in and results out on the device, and nothing crosses to the host.
    steps_tensors = True

    def __init__(self, model: mujoco.MjModel, num_envs: int, nthread: int) -> None:
        wp, mjw = import_warp()
        self._wp, self._mjw = wp, mjw
        self.num_envs = num_envs
        self.nthread = 1  # host threads used: the device does the work (Warp's CPU device runs kernels on one)
        self.model_name = model.names[:model.names.index(b"\0")].decode() or "(unnamed)"
        self._device = self._choose_device(wp)
        self.device_name = f"{self._device.alias} ({self._device.name})"  # e.g. "cuda:0 (NVIDIA H100 ...)"
        self.torch_device = self._device.alias  # "cuda:0" or "cpu": where a device-resident batch must live
        self._nominal = copy.deepcopy(model)
        self._model_bytes = ModelBytes(model)
        self._batched_fields = {f.name for f in dataclasses.fields(mjw.Model)
                                if tuple(getattr(f.type, "shape", ()))[:1] == ("*",)}
        self._carried: dict[str, np.ndarray] = {}  # field -> (num_envs, ...) rows in the device's dtype
        self._stale: set[str] = set()  # carried fields whose host rows changed since the last upload
        self._models_seen: Optional[Sequence[mujoco.MjModel]] = None
        with wp.ScopedDevice(self._device):
            try:
                self._model = mjw.put_model(model)
            except NotImplementedError as exc:
                raise TaskError(f"model {self.model_name!r} uses a MuJoCo feature MuJoCo Warp lacks ({exc}); "
                                f"{CPU_BACKEND}") from exc
            self._data = mjw.make_data(model, nworld=num_envs)
        self._warned_overflows = 0
        self._nstate = mujoco.mj_stateSize(model, FULL)
        self._nsensor = model.nsensordata
        self._frame_skip = 0  # the per-step device arrays are sized by the first step
        # On a GPU one control step is captured once as a CUDA graph and replayed: one launch, not hundreds.
        self._graph: Any = None
        self._capture_graphs = True
        self._tensors: dict[str, Any] = {}  # torch views of the step's device arrays, once a step got tensors

    @classmethod
    def torch_device_type(cls) -> str:
        """Where this backend steps, "cuda" or "cpu", decided as a build decides it, without building."""
        if cls.device is not None:
            return "cuda" if cls.device.startswith("cuda") else "cpu"
        wp, _ = import_warp()
        return "cuda" if wp.get_cuda_device_count() else "cpu"

    def _choose_device(self, wp: Any) -> Any:
        if self.device is None:
            return wp.get_device("cuda" if wp.get_cuda_device_count() else "cpu")
        if self.device.startswith("cuda") and not wp.get_cuda_device_count():
            raise TaskError(f"env.backend asks for Warp's {self.device!r} device, but Warp finds no CUDA device "
                            f"here; use Warp's CPU device: env.backend=warp")
        return wp.get_device(self.device)

    # ----- per-env models ------------------------------------------------------------------
    def models_edited(self, models: Sequence[mujoco.MjModel], env_ids: np.ndarray, event: str) -> None:
        """Bring the per-env fields of ``env_ids`` up to date after ``event`` ran on their models."""
        self._models_seen = models
        nominal_opt = self._nominal.opt
        checked: set[int] = set()  # envs may share one MjModel (a task without per-env models)
        changed: set[str] = set()  # fields whose rows differ from what the device holds: only they are uploaded
        for i in np.asarray(env_ids).reshape(-1):
            model = models[i]
            if id(model) not in checked:
                checked.add(id(model))
                for name in self._model_bytes.differing(model):
                    if name not in self._carried and name not in RENDER_ONLY_FIELDS:
                        self._carry(name, event)
                        changed.add(name)
                if model.opt != nominal_opt:
                    raise TaskError(f"event {event!r} edits the model's opt per env, which the MuJoCo Warp "
                                    f"backend does not carry over; {CPU_BACKEND}")
            for name, rows in self._carried.items():
                values = getattr(model, name).reshape(rows.shape[1:]).astype(rows.dtype, copy=False)
                if not np.array_equal(rows[i], values):  # a reset or a push leaves the model as it was
                    rows[i] = values
                    changed.add(name)
        self._stale.update(changed)

    def _carry(self, name: str, event: str) -> None:
        """Give field ``name`` one row per env on the device, or refuse the task if MJWarp cannot."""
        shared = getattr(self._model, name, None)
        if name not in self._batched_fields or shared is None:
            raise TaskError(f"event {event!r} edits model field {name!r} per env, but MuJoCo Warp keeps one "
                            f"{name} for all envs; randomize a field MJWarp batches per world, or {CPU_BACKEND}")
        values = shared.numpy()
        host = getattr(self._nominal, name)
        if values.shape[0] != 1 or values[0].size != host.size or not np.allclose(
                values[0].reshape(host.shape), host, rtol=1e-6, atol=1e-6):
            raise TaskError(f"event {event!r} edits model field {name!r} per env, which MuJoCo Warp stores "
                            f"differently from MjModel, so physai cannot carry it over; {CPU_BACKEND}")
        rows = np.repeat(values, self.num_envs, axis=0)
        with self._wp.ScopedDevice(self._device):
            setattr(self._model, name, self._wp.array(rows, dtype=shared.dtype))
        self._carried[name] = rows
        self._graph = None  # a captured graph reads the array it was captured with
        log.info("Warp backend: model field %s carried per env (edited by event %s)", name, event)

    def _upload_stale_fields(self) -> None:
        for name in self._stale:
            getattr(self._model, name).assign(self._carried[name])
        self._stale.clear()

    # ----- stepping ------------------------------------------------------------------------
    def step(self, models: Sequence[mujoco.MjModel], state: np.ndarray, control: np.ndarray,
             state_out: np.ndarray, sensor_out: np.ndarray) -> None:
        """Advance every row of ``state`` by ``control.shape[1]`` physics steps; fill the outputs."""
        if models is not self._models_seen:  # a caller that does not report events: compare every env once
            self.models_edited(models, np.arange(self.num_envs), "(one the engine did not report)")
        if control.shape[1] != self._frame_skip:
            self._allocate(control.shape[1])
        on_host = isinstance(state, np.ndarray)
        if on_host:
            np.copyto(self._host["state"], state)
            np.copyto(self._host["control"], control.transpose(1, 0, 2))
            load, save = self._to_device, self._to_host
        else:  # torch tensors on this device: copies there, in the tensors' stream
            load = functools.partial(self._load_tensors, state, control)
            save = functools.partial(self._save_tensors, state_out, sensor_out)
        wp = self._wp
        with wp.ScopedDevice(self._device):
            if self._stale:
                self._upload_stale_fields()
            load()
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._physics_steps()  # eagerly: compiles and loads every kernel before any capture
                if self._device.is_cuda and self._capture_graphs:
                    self._graph = self._capture()
            save()
            while self._grow_on_overflow():  # contacts or constraints were dropped: redo the step with room for them
                load()
                self._physics_steps()
                save()
        if on_host:
            # The engine reads only what the last physics step leaves; the earlier rows of the outputs are not filled.
            np.copyto(state_out[:, -1], self._host["state_out"])
            if self._nsensor:
                np.copyto(sensor_out[:, -1], self._host["sensor_out"])

    def _tensor(self, key: str) -> Any:
        """A torch view of one of the step's device arrays (no copy); made outside inference mode, so steps inside
        and outside it (rollouts, evaluations) may both write it."""
        if key not in self._tensors:
            import torch

            with torch.inference_mode(False):
                self._tensors[key] = self._wp.to_torch(self._device_arrays[key])
        return self._tensors[key]

    def _load_tensors(self, state: Any, control: Any) -> None:
        """The engine's tensors into the step's device arrays. The copies run in torch's stream and the physics in
        Warp's own (where a CUDA graph can be captured): on a GPU the host waits for the copies before the physics
        is launched, and for the physics before the results are copied back; no data crosses."""
        self._tensor("state").copy_(state)
        self._tensor("control").copy_(control.transpose(0, 1))
        if self._device.is_cuda:
            _torch_synchronize(state.device)

    def _save_tensors(self, state_out: Any, sensor_out: Any) -> None:
        if self._device.is_cuda:
            self._wp.synchronize_device(self._device)
        state_out[:, -1].copy_(self._tensor("state_out"))
        if self._nsensor:
            sensor_out[:, -1].copy_(self._tensor("sensor_out"))

    def _allocate(self, frame_skip: int) -> None:
        """Device arrays for one control step of ``frame_skip`` physics steps, and their host mirrors
        (the same arrays on Warp's CPU device; pinned host copies for a GPU)."""
        wp, n = self._wp, self.num_envs
        shapes = {"state": (n, self._nstate), "control": (frame_skip, n, self._model.nu),
                  "state_out": (n, self._nstate), "sensor_out": (n, self._nsensor)}
        self._device_arrays = {key: wp.zeros(shape, dtype=float, device=self._device)
                               for key, shape in shapes.items()}
        if self._device.is_cuda:
            self._host_arrays = {key: wp.zeros(shape, dtype=float, device="cpu", pinned=True)
                                 for key, shape in shapes.items()}
        else:
            self._host_arrays = self._device_arrays
        self._host = {key: array.numpy() for key, array in self._host_arrays.items()}
        self._tensors: dict[str, Any] = {}
        self._frame_skip = frame_skip
        self._graph = None

    def _capture(self) -> Any:
        """A CUDA graph of one control step, or None (and eager launches from now on) where capture fails."""
        try:
            with self._wp.ScopedCapture(device=self._device) as capture:
                self._physics_steps()
            return capture.graph
        except Exception as exc:  # noqa: BLE001  an older driver, a kernel that syncs: eager launches still work
            log.warning("Warp backend: CUDA graph capture failed (%s); launching kernels one by one", exc)
            self._capture_graphs = False
            return None

    def _to_device(self) -> None:
        if self._device.is_cuda:
            for key in ("state", "control"):
                self._wp.copy(self._device_arrays[key], self._host_arrays[key])

    def _to_host(self) -> None:
        if self._device.is_cuda:
            for key in ("state_out", "sensor_out"):
                self._wp.copy(self._host_arrays[key], self._device_arrays[key])
            self._wp.synchronize_device(self._device)

    def _grow_on_overflow(self) -> bool:
        """After a control step: True when MJWarp ran out of room for contacts or constraint rows in it (it
        drops what does not fit, which changes the physics), after doubling the room, so the caller redoes
        the step. Other overflows are raised (what needs a model change) or warned about once."""
        overflow = self._mjw.OverflowType
        flags = int(np.bitwise_or.reduce(self._data.overflow.numpy()))
        if not flags & ~(overflow.ITERATIONS | overflow.LS_ITERATIONS):  # iteration limits: as in C MuJoCo
            return False
        growable = overflow.NEFC | overflow.NJMAX_NNZ | overflow.BROADPHASE | overflow.NARROWPHASE | overflow.CCD
        if flags & overflow.HFIELD:
            raise TaskError(f"model {self.model_name!r}: a height field produced more collisions than MuJoCo Warp "
                            f"holds; lower the height field's resolution, or {CPU_BACKEND}")
        other = flags & ~growable & ~(overflow.ITERATIONS | overflow.LS_ITERATIONS) & ~self._warned_overflows
        if other:
            self._warned_overflows |= other
            log.warning("Warp backend: model %s overflowed MuJoCo Warp's %s buffers; its physics may differ from "
                        "C MuJoCo's (%s)", self.model_name, overflow(other).name, CPU_BACKEND)
        if not flags & growable:
            return False
        data = self._data
        nconmax, njmax = 2 * data.naconmax // self.num_envs, 2 * data.njmax
        if nconmax > MAX_CONTACTS_PER_ENV:
            raise TaskError(f"model {self.model_name!r} needs more than {MAX_CONTACTS_PER_ENV} contacts per env on "
                            f"MuJoCo Warp ({overflow(flags & growable).name} overflow); simplify its collision "
                            f"geometry (contype/conaffinity), or {CPU_BACKEND}")
        log.warning("Warp backend: model %s had more contacts or constraint rows than MuJoCo Warp held "
                    "(%s); redoing the step with room for %d contacts and %d rows per env", self.model_name,
                    overflow(flags & growable).name, nconmax, njmax)
        with self._wp.ScopedDevice(self._device):
            # The redone step starts its solver cold: the warm start it began with was overwritten.
            try:
                self._data = self._mjw.make_data(self._nominal, nworld=self.num_envs, nconmax=nconmax, njmax=njmax)
            except Exception as exc:  # noqa: BLE001  Warp's out-of-memory is a plain RuntimeError
                raise TaskError(f"model {self.model_name!r} needs more contacts or constraint rows than MuJoCo Warp "
                                f"could allocate for {self.num_envs} envs ({nconmax} contacts and {njmax} rows per "
                                f"env: {exc}); use fewer envs, simplify its collision geometry, or "
                                f"{CPU_BACKEND}") from exc
        self._graph = None  # a captured graph reads the arrays it was captured with
        return True

    def _physics_steps(self) -> None:
        """One control step on the device: set the state, then per physics step its control and ``mjw.step``;
        then the state and sensors the last one leaves (sensors come from its forward pass, as in ``mj_step``).
        The overflow flags are cleared first, so they tell about this control step alone."""
        wp, mjw, model, data, arrays = self._wp, self._mjw, self._model, self._data, self._device_arrays
        data.overflow.zero_()
        mjw.set_state(model, data, arrays["state"], FULL)
        for k in range(self._frame_skip):
            if model.nu:
                wp.copy(data.ctrl, arrays["control"][k])
            mjw.step(model, data)
        mjw.get_state(model, data, arrays["state_out"], FULL)
        if self._nsensor:
            wp.copy(arrays["sensor_out"], data.sensordata)

    def reset_envs(self, env_ids: np.ndarray) -> None:
        """Start these envs' solver cold, as ``mj_resetData`` does."""
        warmstart = self._data.qacc_warmstart
        if self._device.is_cuda and self._tensors:
            # A device-resident batch: zero the rows there (torch's stream; the next step waits for it).
            import torch

            rows = torch.as_tensor(np.asarray(env_ids), device=self.torch_device)
            with torch.inference_mode(False):
                self._wp.to_torch(warmstart)[rows] = 0.0
        elif self._device.is_cuda:
            values = warmstart.numpy()
            values[env_ids] = 0.0
            warmstart.assign(values)
        else:
            warmstart.numpy()[env_ids] = 0.0  # Warp's CPU arrays are host memory: a view

    def scratch_bytes(self) -> int:
        """Host bytes this backend holds (the engine's host memory figure): its step's input and output arrays
        (pinned copies on a GPU) and, on Warp's CPU device, the batch's MJWarp data (``device_bytes``) as well."""
        staging = int(sum(array.nbytes for array in self._host.values()))
        return staging if self._device.is_cuda else staging + self.device_bytes()

    def device_bytes(self) -> int:
        """Bytes of the batch's MJWarp data on its device (its step's input and output arrays not counted)."""
        arrays = [getattr(self._data, f.name) for f in dataclasses.fields(self._data)]
        return int(sum(a.capacity for a in arrays if isinstance(a, self._wp.array)))

    def close(self) -> None:
        self._graph = self._data = self._model = None
        self._device_arrays = self._host_arrays = self._host = {}


def _torch_synchronize(device: Any) -> None:
    import torch

    torch.cuda.synchronize(device)


class WarpCudaBackend(WarpBackend):
    """MuJoCo Warp on the GPU only: refuses, at build, a machine where Warp finds no CUDA device."""

    device = "cuda"
