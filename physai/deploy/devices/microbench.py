"""The host's fixed overheads and ceilings, measured on networks that are not the one under test.

The CPU path of the device model needs two constants no spec sheet publishes: the cost of
one runtime call (Python ``act()``: input checks, binding, output allocation) and the
dispatch cost of one onnxruntime kernel. Fitting them on the policy and then "predicting"
the policy's latency would be a calibration dressed as a validation. Instead the profile
stage runs this micro-benchmark first: chains of k tiny elementwise ``Add`` nodes (k = 1,
9, 17, 33; 8 floats wide, so their arithmetic is nil) are timed through the caller that will
time the network (``EdgePolicy.act`` for a bundle, a bound onnxruntime session for any ONNX
file), interleaved in rounds so a shared machine's noise lands on every chain alike. A
least-squares line through the medians gives per-kernel dispatch (slope) and per-call
overhead (intercept).

A convolution net is compute-bound, so its prediction is only as good as the peak: on request
(``ceilings=True``) the same harness also times single-kernel graphs that stand for the two
roofs of an empirical roofline, and the host model uses them instead of the spec sheet's:

- compute: three convolutions of shapes found in no network physai builds (3x3 32->64 on 40x40,
  5x5 stride 2 48->96 on 32x32, 1x1 128->128 on 20x20) and one 128x384x384 Gemm, each with its
  Relu; the ceiling is their FLOPs over their time (overheads subtracted);
- bandwidth: a batch-1 Gemm (a matrix-vector product, 2 FLOP per 4-byte weight) whose weights fill
  a quarter of the core's own cache, a quarter of the last-level cache, and twice the last-level
  cache (so they stream from memory): bytes over time at each level.

The host model then predicts the network from these figures and its graph, before it is timed.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from physai.deploy.devices.host import this_machine
from physai.deploy.latency import BoundSession, time_rounds
from physai.edge.bundle import FORMAT_NAME, FORMAT_VERSION, INPUT_NAME, MANIFEST_FILE, OUTPUT_NAME, POLICY_FILE
from physai.edge.runtime import EdgePolicy

CHAIN_LENGTHS = (1, 9, 17, 33)
WIDTH = 8


def chain_model(length: int, width: int = WIDTH) -> bytes:
    """An ONNX graph of ``length`` Add nodes, each adding its own constant (nothing to fold away)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, previous = [], [], INPUT_NAME
    for i in range(length):
        constant = f"c{i}"
        initializers.append(numpy_helper.from_array(np.full(width, 1e-3 * (i + 1), np.float32), constant))
        output = OUTPUT_NAME if i == length - 1 else f"t{i}"
        nodes.append(helper.make_node("Add", [previous, constant], [output], name=f"add{i}"))
        previous = output
    graph = helper.make_graph(nodes, "physai_microbench",
                              [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", width])],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _write_bundle(folder: Path, model: bytes, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / POLICY_FILE).write_bytes(model)
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "io": {"inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", width]}],
                       "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", width]}]},
                "control_rate_hz": None,
                "files": {POLICY_FILE: {"sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model)}},
                "provenance": {"purpose": "host overhead micro-benchmark"}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def bundle_caller(intra_op_threads: int = 1, seed: int = 0) -> Callable[[bytes], Callable[[], object]]:
    """Each model packed as a bundle and called through ``EdgePolicy.act`` on one observation, as a robot does."""
    obs = np.random.default_rng(seed).normal(size=WIDTH).astype(np.float32)

    def load(model: bytes) -> Callable[[], object]:
        with tempfile.TemporaryDirectory(prefix="physai-microbench-") as folder:
            _write_bundle(Path(folder), model, WIDTH)
            policy = EdgePolicy.load(folder, intra_op_threads=intra_op_threads)
        return lambda: policy.act(obs)

    return load


def session_caller(intra_op_threads: int = 1, seed: int = 0) -> Callable[[bytes], Callable[[], object]]:
    """Each model in a bound onnxruntime session (``BoundSession``, batch 1 on a dynamic batch axis), as
    ``physai profile --onnx`` times it."""
    return lambda model: BoundSession(model, batch=1, threads=intra_op_threads, seed=seed).run


def measure_host_overheads(lengths: Sequence[int] = CHAIN_LENGTHS, rounds: int = 4, iterations: int = 400,
                           warmup: int = 100, intra_op_threads: int = 1, seed: int = 0,
                           caller: Optional[Callable[[bytes], Callable[[], object]]] = None,
                           ceilings: bool = False) -> dict:
    """Per-call and per-kernel overhead of ``caller`` on this machine, in microseconds (and the ceilings, on request).

    ``caller`` turns model bytes into the zero-argument call to time; default: :func:`bundle_caller`.
    """
    load = caller or bundle_caller(intra_op_threads, seed)
    calls = {length: load(chain_model(length)) for length in lengths}
    medians_us = {length: float(np.median(part)) / 1e3
                  for length, part in time_rounds(calls, rounds, iterations, warmup).items()}
    x = np.array(list(medians_us), dtype=np.float64)
    y = np.array(list(medians_us.values()))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    op_us = max(float(slope), 0.0)
    call_us = max(float(intercept), 0.0)
    result = {"op_us": op_us, "call_us": call_us, "modeled": False,
              "medians_us": {str(k): v for k, v in medians_us.items()},
              "fit_max_residual_us": float(np.abs(residual).max()),
              "calls": int(len(lengths) * rounds * iterations),
              "source": f"micro-benchmark on this host: chains of {list(lengths)} Add nodes ({WIDTH} floats) timed "
                        f"as the network will be, median per chain, least-squares line (slope = per kernel, "
                        f"intercept = per call); not the policy or network under test"}
    if ceilings:
        result["ceilings"] = measure_ceilings(session_caller(intra_op_threads, seed), op_us + call_us, rounds)
    return result


# (C_in, C_out, input size, kernel, stride, pad): shapes found in none of the networks physai builds.
CEILING_CONVS = ((32, 64, 40, 3, 1, 1), (48, 96, 32, 5, 2, 0), (128, 128, 20, 1, 1, 0))
CEILING_GEMM = (128, 384, 384)
ROUND_BUDGET_S = 0.05  # timed seconds per graph and round


def conv_relu_model(c_in: int, c_out: int, size: int, kernel: int, stride: int, pad: int) -> bytes:
    """One Conv (with bias) and its Relu on a (1, c_in, size, size) input: one onnxruntime kernel."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.normal(size=(c_out, c_in, kernel, kernel)) * 0.05).astype(np.float32),
                                       "w"), numpy_helper.from_array(np.zeros(c_out, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pad] * 4, name="conv"), helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "physai_ceiling_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def gemm_relu_model(rows: int, inner: int, cols: int) -> bytes:
    """One Gemm (with bias) and its Relu on a (rows, inner) input: one onnxruntime kernel (FusedGemm)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.normal(size=(inner, cols)) * 0.05).astype(np.float32), "w"),
               numpy_helper.from_array(np.zeros(cols, np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm"),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "physai_ceiling_gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inner])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _gemv_shape(weight_bytes: float) -> tuple[int, int]:
    """(inner, cols) of a square-ish weight matrix of about ``weight_bytes`` float32 bytes."""
    cols = max(16, int(np.sqrt(weight_bytes / 4) // 16 * 16))
    return max(16, int(weight_bytes / 4 / cols)), cols


def measure_ceilings(load: Callable[[bytes], Callable[[], object]], overhead_us: float, rounds: int = 4) -> dict:
    """The compute and bandwidth roofs of this machine as onnxruntime reaches them (see the module's docstring).

    ``overhead_us`` (one call plus one kernel, from the Add chains) is taken off every median first.
    """
    facts = this_machine()
    cache_kb = facts.cache_kb or 256.0
    llc_kb = max((kb for name, kb in facts.caches_kb.items() if name.startswith("L3")), default=None)
    graphs: dict[str, tuple[bytes, float, float]] = {}  # name -> (model, FLOPs, bytes)
    for c_in, c_out, size, kernel, stride, pad in CEILING_CONVS:
        out = (size + 2 * pad - kernel) // stride + 1
        flops = 2.0 * out * out * c_out * c_in * kernel * kernel
        graphs[f"conv{kernel}x{kernel}_s{stride}_{c_in}to{c_out}_{size}px"] = (
            conv_relu_model(c_in, c_out, size, kernel, stride, pad), flops, 0.0)
    rows, inner, cols = CEILING_GEMM
    graphs[f"gemm_{rows}x{inner}x{cols}"] = (gemm_relu_model(rows, inner, cols), 2.0 * rows * inner * cols, 0.0)
    levels = {"cache_gbs": cache_kb * 1024 / 4}
    if llc_kb:
        levels["llc_gbs"] = llc_kb * 1024 / 4
    levels["memory_gbs"] = min(2 * (llc_kb or 32 * 1024) * 1024, 256 * 2**20)
    level_graph = {}
    for level, weight_bytes in levels.items():
        inner, cols = _gemv_shape(weight_bytes)
        name = f"gemv_{inner}x{cols}"
        level_graph[level] = name
        graphs[name] = (gemm_relu_model(1, inner, cols), 2.0 * inner * cols, 4.0 * (inner * cols + inner + 2 * cols))
    calls = {name: load(model) for name, (model, _, _) in graphs.items()}
    iterations = {}
    for name, call in calls.items():  # enough calls per round to fill the round's budget
        call()
        start = time.perf_counter()
        call()
        iterations[name] = int(np.clip(ROUND_BUDGET_S / max(time.perf_counter() - start, 1e-6), 3, 400))
    medians_us = {name: float(np.median(part)) / 1e3
                  for name, part in time_rounds(calls, rounds, iterations, warmup=2).items()}
    busy_us = {name: max(medians_us[name] - overhead_us, 1e-3) for name in graphs}
    compute = [name for name in graphs if not name.startswith("gemv")]
    result: dict[str, Any] = {
        "compute_gflops": sum(graphs[n][1] for n in compute) / sum(busy_us[n] for n in compute) / 1e3,
        "compute_graphs": {n: {"mflops": graphs[n][1] / 1e6, "median_us": medians_us[n],
                               "gflops": graphs[n][1] / busy_us[n] / 1e3} for n in compute},
        "bandwidth_graphs": {},
        "overhead_us_subtracted": overhead_us,
        "source": "micro-benchmark on this host: single-kernel Conv/Gemm graphs and batch-1 Gemms sized to the "
                  "caches read from sysfs, median per graph minus one call and one kernel of overhead; not the "
                  "network profiled"}
    for level, name in level_graph.items():
        moved = graphs[name][2]
        result[level] = moved / busy_us[name] / 1e3
        result["bandwidth_graphs"][level] = {"graph": name, "weights_kb": (moved / 1024), "median_us": medians_us[name]}
    return result
