"""Does the host model predict convolution nets? Three vision encoders, predicted, then timed.

The device model sizes a perception network for a board before it is trained, so its host figure
must hold on what a vision encoder is made of. Three conv nets of three sizes are built in torch
(random weights: the arithmetic, not the values, sets the time) and exported to ONNX as a user would:

- ``nature_cnn_64``: the 3-layer encoder of SB3's ``CnnPolicy`` (NatureCNN: 8x8/4, 4x4/2, 3x3/1, then a
  512-wide linear layer) on a 64x64 frame stack of three RGB frames (9 channels);
- ``impala_cnn_96``: the IMPALA encoder (three conv + max-pool + two residual blocks stacks of 16, 32,
  32 channels, then a 256-wide linear layer) on a 96x96 RGB frame;
- ``resnet18_224``: ResNet-18 (torchvision's architecture, 1000-way head) on a 224x224 RGB image.

Method: the host model (``physai.deploy.devices.roofline`` on ``configs/device/host_cpu.yaml``) is
given this machine's overheads and compute/bandwidth ceilings, micro-benchmarked on graphs that are
none of these nets (Add chains, three single convolutions, a Gemm and three matrix-vector products:
``physai.deploy.devices.microbench``), and predicts each net's batch-1 latency before any of them is
timed. Then each net is timed as onnxruntime runs it fastest (a bound session: IOBinding, one pybind
call per run, one thread), in rounds that time every net in turn, and the prediction is compared to
the pooled median. Nothing in the model is fitted to these nets.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx

from physai.core.io import write_json_atomic
from physai.deploy.devices.microbench import measure_host_overheads, session_caller
from physai.deploy.devices.onnx_cost import graph_costs
from physai.deploy.devices.roofline import load_device, model_device
from physai.deploy.latency import BoundSession, latency_figures, time_rounds
from physai.deploy.profiling import HOST_DEVICE, HOST_MODEL_TARGET, host_description

RESULT_FILE = "conv_host_model.json"


def build_nets() -> dict[str, tuple[Any, tuple[int, ...], str]]:
    """name -> (torch module in eval mode, input shape at batch 1, what it is)."""
    import torch
    from torch import nn

    def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias)

    nature = nn.Sequential(conv(9, 32, 8, 4), nn.ReLU(), conv(32, 64, 4, 2), nn.ReLU(), conv(64, 64, 3, 1), nn.ReLU(),
                           nn.Flatten(), nn.Linear(64 * 4 * 4, 512), nn.ReLU())

    class ImpalaResidual(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.ReLU(), conv(channels, channels, 3, padding=1), nn.ReLU(),
                                      conv(channels, channels, 3, padding=1))

        def forward(self, x):
            return x + self.body(x)

    layers, c_in = [], 3
    for c_out in (16, 32, 32):
        layers += [conv(c_in, c_out, 3, padding=1), nn.MaxPool2d(3, 2, padding=1), ImpalaResidual(c_out),
                   ImpalaResidual(c_out)]
        c_in = c_out
    impala = nn.Sequential(*layers, nn.Flatten(), nn.ReLU(), nn.Linear(32 * 12 * 12, 256), nn.ReLU())

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(conv(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                      conv(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.skip = (nn.Sequential(conv(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    stages, c_in = [], 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    resnet = nn.Sequential(conv(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                           *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))
    torch.manual_seed(0)
    return {
        "nature_cnn_64": (nature.eval(), (1, 9, 64, 64), "SB3 NatureCNN (3 conv layers + 512-wide linear) on a "
                                                          "64x64 stack of 3 RGB frames"),
        "impala_cnn_96": (impala.eval(), (1, 3, 96, 96), "IMPALA encoder (16/32/32 channels, 6 residual blocks, "
                                                          "256-wide linear) on a 96x96 RGB frame"),
        "resnet18_224": (resnet.eval(), (1, 3, 224, 224), "ResNet-18 (torchvision's architecture, 1000-way head) on "
                                                           "a 224x224 RGB image"),
    }


def export_onnx(net: Any, shape: tuple[int, ...], target: Path) -> bytes:
    """The net as a user exports it (torch.onnx.export, dynamic batch axis), read back as bytes."""
    import torch

    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(shape),), str(target), input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=18,
                          dynamo=False)
    return target.read_bytes()


def bench_conv(out_dir: Optional[Path], rounds: int = 5, round_s: float = 1.0, threads: int = 1, seed: int = 0,
               command: str = "physai bench conv", onnx_dir: Optional[Path] = None) -> dict[str, Any]:
    """Predict, then time, the three nets at batch 1; write ``conv_host_model.json`` into ``out_dir``.

    ``onnx_dir``: also keep the exported files there (``<name>.onnx``), e.g. for ``physai profile --onnx``.
    """
    started = time.perf_counter()
    models = {}
    with tempfile.TemporaryDirectory(prefix="physai-conv-") as folder:
        if onnx_dir is not None:
            onnx_dir.mkdir(parents=True, exist_ok=True)
        for name, (net, shape, what) in build_nets().items():
            models[name] = (export_onnx(net, shape, Path(onnx_dir or folder) / f"{name}.onnx"), shape, what,
                            sum(p.numel() for p in net.parameters()))
    host = load_device(HOST_DEVICE)
    # 1. This machine's overheads and ceilings, on graphs that are none of the three nets.
    overheads = measure_host_overheads(intra_op_threads=threads, seed=seed, caller=session_caller(threads, seed),
                                       ceilings=True)
    # 2. Every prediction, before any net is timed.
    nets: dict[str, dict[str, Any]] = {}
    for name, (data, shape, what, params) in models.items():
        model = onnx.load_from_string(data)
        costs = graph_costs(model, 1)
        predicted = model_device(costs, host, None, overheads, "fp32", 1)
        cpu = predicted["paths"]["cpu"]
        nets[name] = {"what": what, "input_shape": list(shape), "parameters": int(params),
                      "graph_nodes": len(model.graph.node), "gflop": sum(c.flops for c in costs) / 1e9,
                      "mb_moved": sum(c.bytes for c in costs) / 1e6, "predicted_ms": predicted["latency_ms"],
                      "predicted_parts_us": {"roofline": cpu["roofline_us"], "overheads": cpu["overhead_us"],
                                             "kernels": cpu["kernels"]},
                      "compute_bound_nodes": predicted["compute_bound_nodes"],
                      "memory_bound_nodes": predicted["memory_bound_nodes"],
                      "cpu_bandwidth": predicted["cpu_bandwidth"]}
    # 3. Then the nets are timed, in rounds that visit each in turn.
    sessions = {name: BoundSession(data, batch=1, threads=threads, seed=seed) for name, (data, *_) in models.items()}
    iterations = {}
    for name, session in sessions.items():
        session.run()
        start = time.perf_counter()
        session.run()
        iterations[name] = int(np.clip(round_s / max(time.perf_counter() - start, 1e-6), 5, 20000))
    per_round = {name: [] for name in sessions}
    samples = time_rounds({name: s.run for name, s in sessions.items()}, rounds, iterations, warmup=3)
    for name, pooled in samples.items():
        for part in np.array_split(pooled, rounds):
            per_round[name].append(float(np.median(part)) / 1e6)
        figures = latency_figures(pooled)
        error = nets[name]["predicted_ms"] / figures["p50_ms"] - 1
        nets[name].update({"measured": {k: figures[k] for k in ("n", "min_ms", "p50_ms", "p90_ms", "p99_ms",
                                                                 "max_ms", "mean_ms")},
                           "p50_ms_by_round": per_round[name], "error": error,
                           "within_target": bool(abs(error) <= HOST_MODEL_TARGET)})
    worst = max(nets.values(), key=lambda n: abs(n["error"]))
    result = {
        "command": command,
        "machine": f"{host_description(threads)['cpu']}, {os.cpu_count()} logical cores, Python "
                   f"{platform.python_version()}, onnxruntime {host_description(threads)['onnxruntime']}",
        "target": {"abs_error_max": HOST_MODEL_TARGET, "met": all(n["within_target"] for n in nets.values()),
                   "worst_abs_error": abs(worst["error"])},
        "method": "host model (configs/device/host_cpu.yaml, clock/caches/SIMD read from this machine) with overheads "
                  "and ceilings micro-benchmarked first on graphs that are none of these nets; every net predicted "
                  "at batch 1 before any was timed; timed with a bound onnxruntime session (IOBinding, one thread), "
                  f"{rounds} rounds of about {round_s:g} s per net, each net in turn; error = predicted / pooled "
                  "median - 1",
        "calibration": overheads,
        "nets": nets,
        "wall_s": time.perf_counter() - started,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / RESULT_FILE, result)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The README's table: one row per net."""
    lines = ["| net | input | GFLOP | predicted ms | measured p50 ms (rounds min-max) | error |",
             "|---|---|---|---|---|---|"]
    for name, net in result["nets"].items():
        rounds = net["p50_ms_by_round"]
        lines.append(f"| {name} | {'x'.join(map(str, net['input_shape'][1:]))} | {net['gflop']:.3g} | "
                     f"{net['predicted_ms']:.3g} | {net['measured']['p50_ms']:.3g} "
                     f"({min(rounds):.3g}-{max(rounds):.3g}) | {100 * net['error']:+.1f}% |")
    return lines
