"""The host's fixed overheads, measured on networks that are not the policy under test.

The CPU path of the device model needs two constants no spec sheet publishes: the cost of
one runtime call (Python ``act()``: input checks, binding, output allocation) and the
dispatch cost of one onnxruntime kernel. Fitting them on the policy and then "predicting"
the policy's latency would be a calibration dressed as a validation. Instead the profile
stage runs this micro-benchmark first: chains of k tiny elementwise ``Add`` nodes (k = 1,
9, 17, 33; 8 floats wide, so their arithmetic is nil) are packed as bundles and timed
through the same ``EdgePolicy.act`` the robot uses, interleaved in rounds so a shared
machine's noise lands on every chain alike. A least-squares line through the medians gives
per-kernel dispatch (slope) and per-call overhead (intercept). The host model then predicts
the policy from those two numbers and its spec sheet, before the policy is timed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from physai.deploy.latency import time_calls
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


def measure_host_overheads(lengths: Sequence[int] = CHAIN_LENGTHS, rounds: int = 4, iterations: int = 400,
                           warmup: int = 100, intra_op_threads: int = 1, seed: int = 0) -> dict:
    """Per-call and per-kernel overhead of the edge runtime on this machine, in microseconds."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=WIDTH).astype(np.float32)
    policies = {}
    with tempfile.TemporaryDirectory(prefix="physai-microbench-") as folder:
        for length in lengths:
            bundle = Path(folder) / f"chain{length}"
            _write_bundle(bundle, chain_model(length), WIDTH)
            policies[length] = EdgePolicy.load(bundle, intra_op_threads=intra_op_threads)
    samples: dict[int, list[np.ndarray]] = {length: [] for length in lengths}
    for length, policy in policies.items():
        time_calls(lambda p=policy: p.act(obs), warmup, 0)
    for _ in range(rounds):
        for length, policy in policies.items():
            samples[length].append(time_calls(lambda p=policy: p.act(obs), warmup=20, iterations=iterations))
    medians_us = {length: float(np.median(np.concatenate(parts))) / 1e3 for length, parts in samples.items()}
    x = np.array(list(medians_us), dtype=np.float64)
    y = np.array(list(medians_us.values()))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    op_us = max(float(slope), 0.0)
    call_us = max(float(intercept), 0.0)
    return {"op_us": op_us, "call_us": call_us, "modeled": False,
            "medians_us": {str(k): v for k, v in medians_us.items()},
            "fit_max_residual_us": float(np.abs(residual).max()),
            "calls": int(len(lengths) * rounds * iterations),
            "source": f"micro-benchmark on this host: chains of {list(lengths)} Add nodes ({WIDTH} floats) through "
                      f"EdgePolicy.act, median per chain, least-squares line (slope = per kernel, intercept = "
                      f"per call); not the policy"}
