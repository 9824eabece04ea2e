"""The edge runtime: a verified bundle behind one ``act(obs)`` call.

Imports numpy and onnxruntime only. Inputs are checked for shape, dtype and finiteness,
because a robot that feeds NaN into a policy should get an error, not a motor command.

A single observation takes the hot path: it is copied into a preallocated input buffer that
is bound to the session once (onnxruntime IOBinding), the output lands in a preallocated
buffer, and finiteness is one sum: Python's float sum of the row for short rows (a float32
cannot overflow a double sum, and NaN or inf anywhere makes the sum non-finite), a dot
product with a zero vector for long ones (NaN * 0 and inf * 0 are NaN, finite * 0 is 0).
Short rows keep BLAS out of the hot path: a BLAS call right after other vectorized work in the
same process (torch, say) can cost several times the whole inference. No dict or OrtValue is
built per call. Because of those buffers one EdgePolicy serves one thread; load one per thread.
"""

from __future__ import annotations

from functools import partial
from math import isfinite
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnxruntime as ort

from physai.edge.bundle import (INPUT_NAME, OUTPUT_NAME, POLICY_FILE, available_variants, load_manifest,
                                onnx_opsets, read_verified_bundle, takes_named_inputs, variant_file)
from physai.core.errors import BundleError

DEFAULT_THREADS = 1
# Up to this many columns a Python sum over ``tolist()`` is the cheapest finiteness check; beyond, a dot product.
PYTHON_SUM_MAX_DIM = 32


def session_options(intra_op_threads: int = DEFAULT_THREADS,
                    inter_op_threads: int = DEFAULT_THREADS) -> ort.SessionOptions:
    """How physai runs every graph: given threads, sequential, all graph optimizations, failures as exceptions."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = int(inter_op_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the failure comes back as our exception, not as a log line
    return options


def create_session(model: bytes, name: str, intra_op_threads: int = DEFAULT_THREADS,
                   inter_op_threads: int = DEFAULT_THREADS) -> ort.InferenceSession:
    """A CPU session on verified model bytes; a model onnxruntime cannot run is a ``BundleError``."""
    options = session_options(intra_op_threads, inter_op_threads)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind11 types (Fail, InvalidGraph, ...)
        opsets = onnx_opsets(model)
        described = ", ".join(f"{domain or 'ai.onnx'} opset {version}" for domain, version in sorted(opsets.items()))
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"onnxruntime {ort.__version__} cannot run {name} ({described or 'no readable opset_import'}): "
            f"{reason[:400]}. Re-export it with an opset this runtime supports (export.opset=18 is what "
            f"physai tests) or install a newer onnxruntime on the robot") from exc


def _policy_session(bundle_dir: Path, manifest: dict[str, Any], contents: dict[str, bytes],
                    intra_op_threads: Optional[int], inter_op_threads: Optional[int],
                    variant: str = "fp32") -> tuple[Any, int, int]:
    """A session on the bundle's policy graph at ``variant``'s precision, and its thread counts: the caller's,
    else what the export recorded from the config, else one each."""
    name = variant_file(variant)
    if name not in contents:
        raise BundleError(f"{bundle_dir} has no {variant} variant ({name} is not in its manifest); variants here: "
                          f"{available_variants(manifest)}")
    settings = manifest.get("runtime") or {}
    intra = int(intra_op_threads or settings.get("intra_op_threads") or DEFAULT_THREADS)
    inter = int(inter_op_threads or settings.get("inter_op_threads") or DEFAULT_THREADS)
    return create_session(contents[name], str(bundle_dir / name), intra, inter), intra, inter


def random_input(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """An input to time a graph with: normal noise for floats, the full 0-255 range for uint8 (an image),
    zeros for other integers. Latency does not depend on the values, only on their dtype and shape."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return np.zeros(shape, dtype=dtype)


class EdgePolicy:
    """A bundle's policy over one flat float32 observation; ``variant`` picks its FP16 or INT8 graph."""

    def __init__(self, bundle_dir: str | Path, intra_op_threads: Optional[int] = None,
                 inter_op_threads: Optional[int] = None, variant: str = "fp32") -> None:
        self.bundle_dir = Path(bundle_dir)
        self.variant = variant
        self.manifest, contents = read_verified_bundle(self.bundle_dir)
        self.contents = contents
        io = self.manifest.get("io") or {}
        try:
            self.obs_dim = int(io["inputs"][0]["shape"][1])
            output = io["outputs"][0]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BundleError(f"{self.bundle_dir / 'manifest.json'} has no usable io section "
                              f"(io.inputs[0].shape, io.outputs[0]); re-export the bundle") from exc
        self.session, self.intra_op_threads, self.inter_op_threads = _policy_session(
            self.bundle_dir, self.manifest, contents, intra_op_threads, inter_op_threads, variant)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise BundleError(f"{self.bundle_dir / POLICY_FILE} has inputs {inputs} and outputs {outputs}; a physai "
                              f"policy reads {INPUT_NAME!r} and writes {OUTPUT_NAME!r}: re-export the bundle")

        self.discrete = output.get("dtype") == "int64"
        self.action_shape: tuple[int, ...] = () if self.discrete else (int(output["shape"][1]),)
        self.action_dtype = np.dtype(np.int64 if self.discrete else np.float32)
        self._obs_shape = (self.obs_dim,)
        self._obs_buffer = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._obs_row = self._obs_buffer[0]
        self._zeros = np.zeros(self.obs_dim, dtype=np.float32)
        self._act_buffer = np.zeros((1, *self.action_shape), dtype=self.action_dtype)
        self._act_row = self._act_buffer[0]
        self._outputs = [OUTPUT_NAME]
        self._bind()

    def _bind(self) -> None:
        """Bind the preallocated buffers to the session once; every single-observation call reuses them."""
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._obs_buffer))
        binding.bind_ortvalue_output(OUTPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._act_buffer))
        self._binding = binding
        # A RunOptions object (with None onnxruntime builds a default one per call); gpu_graph_id=-1 (no
        # graph capture, as on any CPU session) spares the public wrapper a raised-and-caught lookup.
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("gpu_graph_id", "-1")
        # The C++ session and binding behind the Python wrappers: the wrappers add a Python frame
        # per call. Public API when a future onnxruntime renames them.
        native_session, native_binding = getattr(self.session, "_sess", None), getattr(binding, "_iobinding", None)
        if native_session is not None and native_binding is not None and hasattr(native_session,
                                                                                 "run_with_iobinding"):
            run, args = native_session.run_with_iobinding, (native_binding, self._run_options)
        else:
            run, args = self.session.run_with_iobinding, (binding, self._run_options)
        self._infer_args = args
        self._infer_fn = run
        # Prove the binding writes where we read (a copy anywhere would silently freeze the output).
        self._obs_buffer.fill(0.0)
        self._infer()
        expected = self.session.run(self._outputs, {INPUT_NAME: self._obs_buffer})[0]
        if not np.array_equal(expected, self._act_buffer):
            raise BundleError("onnxruntime's IOBinding did not write into the bound output buffer; "
                              "this onnxruntime build is not supported by the edge runtime")
        session, outputs = self.session, self._outputs
        general = partial(_act_checked, obs_dim=self.obs_dim, run_batch=lambda batch: session.run(
            outputs, {INPUT_NAME: batch})[0], action_shape=self.action_shape, action_dtype=self.action_dtype)
        self._act = _single_path(self._obs_row, self._act_row, self._zeros, run, args, general)
        if type(self).act is EdgePolicy.act:  # a subclass that overrides act keeps its own
            self.act = self._act  # answered by the closure itself: no method frame, no attribute lookups

    @classmethod
    def load(cls, bundle_dir: str | Path, **kwargs: Any) -> "EdgePolicy | CameraPolicy":
        """The bundle's policy: an ``EdgePolicy`` for one flat observation, a ``CameraPolicy`` for named inputs."""
        if cls is EdgePolicy and takes_named_inputs(load_manifest(bundle_dir)):
            return CameraPolicy(bundle_dir, **kwargs)
        return cls(bundle_dir, **kwargs)

    @property
    def control_rate_hz(self) -> float | None:
        return self.manifest.get("control_rate_hz")

    def example_observation(self, rng: np.random.Generator, batch: Optional[int] = None) -> np.ndarray:
        """A random observation (``batch`` of them when given) of the bundle's shape, for timing."""
        return random_input(rng, np.float32, (self.obs_dim,) if batch is None else (batch, self.obs_dim))

    @property
    def observation_names(self) -> list[str]:
        names = (self.manifest.get("observation_space") or {}).get("names")
        return list(names) if names else [f"obs_{i}" for i in range(self.obs_dim)]

    def _infer(self) -> np.ndarray:
        """Run the policy on the bound input buffer; the result is the bound output buffer (not a copy)."""
        self._infer_fn(*self._infer_args)
        return self._act_buffer

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One observation ``(obs_dim,)`` gives one action; a batch ``(n, obs_dim)`` gives n actions.

        Each instance answers through the closure ``_bind`` builds over its buffers and session (an
        instance attribute of the same name); this method reaches the same closure.
        """
        return self._act(obs)

    def check_observation(self, obs: Any) -> tuple[np.ndarray, bool]:
        """``(float32 batch, single)`` for a valid observation or batch; shape and dtype are checked, not values."""
        return _check_observation(obs, self.obs_dim)

    def _act_general(self, obs: Any) -> np.ndarray:
        return _act_checked(obs, self.obs_dim, self.run_batch, self.action_shape, self.action_dtype)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """The policy on an already checked float32 ``(n, obs_dim)`` batch."""
        return self.session.run(self._outputs, {INPUT_NAME: batch})[0]


def _check_observation(obs: Any, obs_dim: int) -> tuple[np.ndarray, bool]:
    array = np.asarray(obs)
    if array.dtype.kind not in "fiu":
        raise BundleError(f"observation dtype {array.dtype} is not numeric; pass float32 values")
    if array.ndim == 1 and array.shape[0] == obs_dim:
        return np.asarray(array[None, :], dtype=np.float32), True
    if array.ndim == 2 and array.shape[1] == obs_dim:
        return np.ascontiguousarray(array, dtype=np.float32), False
    raise BundleError(f"observation shape {array.shape} does not match the bundle's "
                      f"({obs_dim},) or (batch, {obs_dim})")


def _act_checked(obs: Any, obs_dim: int, run_batch: Callable[[np.ndarray], np.ndarray],
                 action_shape: tuple[int, ...], action_dtype: np.dtype) -> np.ndarray:
    """Any observation or batch: shape, dtype and finiteness checked, then one ``session.run``."""
    batch, single = _check_observation(obs, obs_dim)
    finite = np.isfinite(batch)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1)).tolist()
        raise BundleError(f"observation contains NaN or inf (rows {rows[:10]}); the policy refuses "
                          f"non-finite input")
    if batch.shape[0] == 0:
        return np.zeros((0, *action_shape), dtype=action_dtype)
    action = run_batch(batch)
    return action[0] if single else action


def _single_path(row: np.ndarray, out: np.ndarray, zeros: np.ndarray, run: Callable[..., Any], args: tuple,
                 general: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
    """``act`` as a closure: the hot path reads locals, not attributes, and holds no reference to the policy
    (so dropping a policy frees its session at once). A single observation is checked for shape and
    numeric dtype, copied into the bound input (cast to float32), checked for finiteness, run, and its
    action returned as a fresh array; anything else takes ``general``."""
    shape, ndarray = row.shape, np.ndarray
    python_sum = row.size <= PYTHON_SUM_MAX_DIM
    binding, options = args

    def act(obs: Any) -> np.ndarray:
        if type(obs) is ndarray and obs.shape == shape and obs.dtype.kind in "fiu":
            row[...] = obs  # casts to float32; a float64 beyond float32's range becomes inf and is refused below
            if not (isfinite(sum(row.tolist())) if python_sum else row.dot(zeros) == 0.0):
                raise BundleError(f"observation contains NaN or inf at index "
                                  f"{np.flatnonzero(~np.isfinite(row)).tolist()}; the policy refuses "
                                  f"non-finite input")
            run(binding, options)
            return out.copy()
        return general(obs)

    act.__doc__ = EdgePolicy.act.__doc__
    return act


class CameraPolicy:
    """A bundle whose policy reads named inputs: a camera policy's uint8 images (``pixels``, height x width x
    channels as the camera gives them; scaling and layout are inside the graph) and the state terms it keeps.

    ``act`` takes a dict with exactly the manifest's inputs, one observation or a batch; each input's dtype
    and shape are checked (an image must already be uint8: a float image is a bug upstream, not something to
    cast), float inputs must be finite. One ``session.run`` per call: an image dwarfs a dict's cost.
    """

    def __init__(self, bundle_dir: str | Path, intra_op_threads: Optional[int] = None,
                 inter_op_threads: Optional[int] = None, variant: str = "fp32") -> None:
        self.bundle_dir = Path(bundle_dir)
        self.variant = variant
        self.manifest, self.contents = read_verified_bundle(self.bundle_dir)
        try:
            self.inputs = {i["name"]: (np.dtype(i["dtype"]), tuple(int(d) for d in i["shape"][1:]))
                           for i in self.manifest["io"]["inputs"]}
            output = self.manifest["io"]["outputs"][0]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BundleError(f"{self.bundle_dir / 'manifest.json'} has no usable io section (io.inputs with name, "
                              f"dtype and shape; io.outputs[0]); re-export the bundle") from exc
        self.session, self.intra_op_threads, self.inter_op_threads = _policy_session(
            self.bundle_dir, self.manifest, self.contents, intra_op_threads, inter_op_threads, variant)
        graph_inputs = sorted(i.name for i in self.session.get_inputs())
        if graph_inputs != sorted(self.inputs) or OUTPUT_NAME not in [o.name for o in self.session.get_outputs()]:
            raise BundleError(f"{self.bundle_dir / POLICY_FILE} reads {graph_inputs}, the manifest names "
                              f"{sorted(self.inputs)}; re-export the bundle")
        self.discrete = output.get("dtype") == "int64"
        self.action_shape: tuple[int, ...] = () if self.discrete else (int(output["shape"][1]),)
        self.action_dtype = np.dtype(np.int64 if self.discrete else np.float32)
        self._outputs = [OUTPUT_NAME]

    @classmethod
    def load(cls, bundle_dir: str | Path, **kwargs: Any) -> "CameraPolicy":
        return cls(bundle_dir, **kwargs)

    @property
    def control_rate_hz(self) -> float | None:
        return self.manifest.get("control_rate_hz")

    def example_observation(self, rng: np.random.Generator, batch: Optional[int] = None) -> dict[str, np.ndarray]:
        """A random observation (``batch`` of them when given) with every input's dtype and shape, for timing."""
        return {name: random_input(rng, dtype, shape if batch is None else (batch, *shape))
                for name, (dtype, shape) in self.inputs.items()}

    def check_observation(self, obs: Any, finite: bool = True) -> tuple[dict[str, np.ndarray], bool]:
        """``(feeds, single)``: every input as a batch of its dtype, after checking names, dtypes and shapes, and
        (``finite``) that float inputs hold no NaN or inf; the guard checks that itself, without raising."""
        if not isinstance(obs, dict):
            raise BundleError(f"this bundle's policy reads named inputs {sorted(self.inputs)}; pass a dict of "
                              f"arrays, not {type(obs).__name__}")
        missing, extra = sorted(set(self.inputs) - set(obs)), sorted(set(obs) - set(self.inputs))
        if missing or extra:
            raise BundleError(f"observation inputs {sorted(obs)} do not match the bundle's {sorted(self.inputs)} "
                              f"(missing {missing}, unexpected {extra})")
        feeds, singles = {}, set()
        for name, (dtype, shape) in self.inputs.items():
            array = np.asarray(obs[name])
            if dtype == np.uint8 and array.dtype != np.uint8:
                raise BundleError(f"input {name!r} has dtype {array.dtype}; the bundle takes uint8 images "
                                  f"(0-255, as the camera gives them)")
            if dtype != np.uint8 and array.dtype.kind not in "fiu":
                raise BundleError(f"input {name!r} has dtype {array.dtype}; pass numbers ({dtype})")
            if array.shape == shape:
                array, single = array[None], True
            elif array.shape[1:] == shape:
                single = False
            else:
                raise BundleError(f"input {name!r} has shape {array.shape}; the bundle takes {shape} or "
                                  f"(batch, {', '.join(map(str, shape))})")
            array = np.ascontiguousarray(array, dtype=dtype)
            if finite and dtype.kind == "f" and not np.isfinite(array).all():
                raise BundleError(f"input {name!r} contains NaN or inf; the policy refuses non-finite input")
            feeds[name] = array
            singles.add(single)
        if len(singles) > 1 or len({a.shape[0] for a in feeds.values()}) > 1:
            raise BundleError(f"inputs {sorted(obs)} mix single observations and batches, or batches of different "
                              f"sizes; give every input the same leading batch size")
        return feeds, singles.pop()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """One observation (a dict of unbatched arrays) gives one action; a dict of batches gives a batch."""
        feeds, single = self.check_observation(obs)
        action = self.run_batch(feeds)
        return action[0] if single else action

    def run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The policy on already checked inputs, each a batch of its dtype."""
        return self.session.run(self._outputs, feeds)[0]
