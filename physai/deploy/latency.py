"""A trtexec-style latency harness: warm up, then time a fixed number of calls one by one (of any ONNX graph too)."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from physai.core.errors import ConfigError
from physai.core.stats import latency_percentiles_ms
from physai.deploy.devices.onnx_cost import input_shapes
from physai.edge.runtime import create_session, random_input


def time_calls(call: Callable[[], object], warmup: int, iterations: int) -> np.ndarray:
    """Per-call wall time in nanoseconds (``perf_counter_ns`` around each call)."""
    for _ in range(warmup):
        call()
    samples = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        start = clock()
        call()
        samples[i] = clock() - start
    return samples


def latency_figures(samples_ns: np.ndarray, batch: int = 1) -> dict[str, float]:
    figures = latency_percentiles_ms(samples_ns)
    figures["batch"] = batch
    figures["throughput_qps"] = 1e3 / figures["mean_ms"]
    figures["actions_per_s"] = figures["throughput_qps"] * batch
    figures["total_host_wall_ms"] = float(np.sum(samples_ns) / 1e6)
    return figures


def time_rounds(calls: Mapping[Any, Callable[[], object]], rounds: int, iterations: int | Mapping[Any, int],
                warmup: int) -> dict[Any, np.ndarray]:
    """Per-call wall times (ns) of each call, pooled over ``rounds`` rounds that time every call in turn.

    For calls too slow to interleave one by one (a convolution net): each round times ``iterations``
    calls of one (an int, or one count per call), then the next, so slow drifts of a shared machine
    land on all of them alike; ``warmup`` untimed calls each first, and a few before each turn.
    """
    per_call = iterations if isinstance(iterations, Mapping) else {key: iterations for key in calls}
    for call in calls.values():
        time_calls(call, warmup, 0)
    samples: dict[Any, list[np.ndarray]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            samples[key].append(time_calls(call, warmup=min(warmup, 20), iterations=per_call[key]))
    return {key: np.concatenate(parts) for key, parts in samples.items()}


def time_interleaved(calls: Sequence[Callable[[], object]], iterations: int, seed: int = 0) -> np.ndarray:
    """Per-call wall times (ns), shape ``(len(calls), iterations)``: every iteration calls each contender once.

    The order is drawn afresh every iteration (seeded), so each contender follows every other one
    equally often on average: a call that leaves the caches or the vector units in a bad state
    slows a random neighbour, not always the same one, and outside load lands on all alike.
    """
    k = len(calls)
    samples = np.empty((k, iterations), dtype=np.int64)
    orders = np.argsort(np.random.default_rng(seed).random((iterations, k)), axis=1).tolist()
    clock = time.perf_counter_ns
    for i, order in enumerate(orders):
        for c in order:
            call = calls[c]
            start = clock()
            call()
            samples[c, i] = clock() - start
    return samples


class BoundSession:
    """Any ONNX graph called onnxruntime's fastest way from Python, for timing.

    Random inputs of each input's dtype and shape (``batch`` on a dynamic axis 0) and the outputs are
    bound to the session once (IOBinding); each :meth:`run` is one call into onnxruntime's C++ session
    through its pybind method (the public ``run_with_iobinding`` where a build lacks it), as the edge
    runtime calls a bundle. The output buffers are sized from a first run.
    """

    def __init__(self, model: bytes, batch: Optional[int] = 1, threads: int = 1, seed: int = 0,
                 name: str = "model.onnx") -> None:
        shapes = input_shapes(onnx.load_from_string(model), batch)
        self.session = create_session(model, name, threads, 1)
        rng = np.random.default_rng(seed)
        self.feeds = {i.name: _random_input(rng, i.type, shapes[i.name]) for i in self.session.get_inputs()}
        binding = self.session.io_binding()
        for input_name, array in self.feeds.items():
            binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(array))
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cpu")
        self.session.run_with_iobinding(binding)
        self.outputs = {o.name: np.empty_like(v.numpy()) for o, v in zip(self.session.get_outputs(),
                                                                          binding.get_outputs())}
        binding.clear_binding_outputs()
        for output_name, array in self.outputs.items():
            binding.bind_ortvalue_output(output_name, ort.OrtValue.ortvalue_from_numpy(array))
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", "-1")
        native, native_binding = getattr(self.session, "_sess", None), getattr(binding, "_iobinding", None)
        if native is not None and native_binding is not None and hasattr(native, "run_with_iobinding"):
            self._call, self._args = native.run_with_iobinding, (native_binding, options)
        else:
            self._call, self._args = self.session.run_with_iobinding, (binding, options)
        self._binding = binding

    def run(self) -> None:
        self._call(*self._args)


_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
                 "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _random_input(rng: np.random.Generator, ort_type: str, shape: list[int]) -> np.ndarray:
    """An input of an onnxruntime type, filled as the edge runtime fills its example observations."""
    dtype = _INPUT_DTYPES.get(ort_type)
    if dtype is None:
        raise ConfigError(f"an input of type {ort_type} cannot be filled for timing; inputs may be "
                          f"{', '.join(sorted(_INPUT_DTYPES))}")
    return random_input(rng, dtype, tuple(shape))
