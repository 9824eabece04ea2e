"""``physai profile BUNDLE``: a trtexec-style latency harness for the edge runtime.

Like ``trtexec``: warm up, then time a fixed number of calls (``--iterations``) or keep calling
for a fixed time (``--duration``), one call at a time, and report min/mean/median/p90/p95/p99/max,
throughput and total host wall time, at batch 1 and over a batch sweep. Every figure is measured
on the host that runs the command (named in the output), through :class:`physai.edge.EdgePolicy`
(or the same runtime on a reduced-precision variant): the time of one ``act()`` call, input checks
included. On onnxruntime's CPU provider there are no host/device copies, so trtexec's H2D / GPU
compute / D2H split does not apply: the whole call is host time.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from physai.config.schema import packaged_device_keys
from physai.core.errors import ConfigError
from physai.core.io import write_json_atomic
from physai.deploy.devices.host import cpu_model
from physai.deploy.devices.microbench import measure_host_overheads, session_caller
from physai.deploy.devices.onnx_cost import fixed_batch, graph_costs, graph_inputs, input_shapes
from physai.deploy.devices.report import path_mark
from physai.deploy.devices.roofline import load_device, model_device
from physai.deploy.latency import BoundSession, latency_figures
from physai.deploy.precision import to_fp16, to_int8
from physai.edge.bundle import variant_file
from physai.edge.runtime import EdgePolicy
from physai.report.format import fmt, save_png

DEFAULT_BATCHES = (1, 8, 64, 256)
PROFILE_JSON = "profile.json"
HOST_MODEL_TARGET = 0.25  # the host model should land within +-25% of the measured median
HISTOGRAM_PNG = "latency_histogram_b1.png"


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--batch {text!r} is not a comma-separated list of integers, e.g. --batch 1,8,64") from None
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"--batch {text!r}: every batch size must be a positive integer, e.g. --batch 1,8,64")
    return list(dict.fromkeys(batches))


def host_description(threads: int = 1) -> dict[str, Any]:
    """Which machine measured the figures: CPU model, cores, Python and onnxruntime versions."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(terse=True),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "execution_provider": "CPUExecutionProvider", "intra_op_threads": threads}


def run_timed(call: Callable[[], object], warmup: int, iterations: Optional[int] = None,
              duration_s: Optional[float] = None) -> tuple[np.ndarray, float]:
    """Per-call wall times (ns) after ``warmup`` calls, and the timed loop's total host wall time (s).

    Exactly ``iterations`` calls, or as many as fit in ``duration_s`` seconds (at least one).
    """
    if (iterations is None) == (duration_s is None):
        raise ValueError("give iterations or duration_s, not both")
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    if iterations is not None:
        samples = np.empty(iterations, dtype=np.int64)
        begin = clock()
        for i in range(iterations):
            start = clock()
            call()
            samples[i] = clock() - start
        return samples, (clock() - begin) / 1e9
    chunks, buffer, filled = [], np.empty(4096, dtype=np.int64), 0
    begin = clock()
    deadline = begin + int(duration_s * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        buffer[filled] = end - start
        filled += 1
        if filled == buffer.size:
            chunks.append(buffer)
            buffer, filled = np.empty(4096, dtype=np.int64), 0
        if end >= deadline:
            break
    chunks.append(buffer[:filled])
    return np.concatenate(chunks), (clock() - begin) / 1e9


def default_out_dir(bundle_dir: Path) -> Path:
    """Beside the run's report when the bundle sits in a run directory, else ``./physai-profile``."""
    run_dir = bundle_dir.resolve().parent
    if (run_dir / "summary.json").exists():
        return run_dir / "report" / "profile"
    return Path("physai-profile")


def profile_bundle(bundle_dir: str | Path, *, iterations: Optional[int] = None, duration_s: Optional[float] = None,
                   warmup: int = 200, batches: Sequence[int] = DEFAULT_BATCHES, threads: int = 1,
                   variant: str = "fp32", seed: int = 0, out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Measure the bundle at each batch size; write ``profile.json`` and the batch-1 histogram into ``out_dir``."""
    if iterations is None and duration_s is None:
        iterations = 1000
    _check_amounts(iterations, duration_s, warmup, threads)
    bundle_dir = Path(bundle_dir)
    policy = EdgePolicy.load(bundle_dir, variant=variant, intra_op_threads=threads, inter_op_threads=1)
    rng = np.random.default_rng(seed)
    rows, batch1_samples = [], None
    for batch in batches:
        # Batch 1 is a single observation, as a robot's control loop passes it.
        obs = policy.example_observation(rng, None if batch == 1 else batch)
        samples, wall_s = run_timed(lambda: policy.act(obs), warmup, iterations, duration_s)
        figures = latency_figures(samples, batch=batch)
        figures["throughput_qps"] = samples.size / wall_s  # trtexec: queries over the timed loop's wall time
        figures["actions_per_s"] = figures["throughput_qps"] * batch
        figures["total_host_wall_s"] = wall_s
        rows.append(figures)
        if batch == 1:
            batch1_samples = samples
    result: dict[str, Any] = {
        "bundle": str(bundle_dir), "variant": variant, "policy_file": variant_file(variant),
        "policy_sha256": policy.manifest["files"][variant_file(variant)]["sha256"],
        "measured": True, "where": "this host", "host": host_description(threads),
        "settings": {"warmup_calls": warmup, "iterations": iterations, "duration_s": duration_s,
                     "batches": list(batches), "threads": threads, "seed": seed,
                     "timer": "time.perf_counter_ns around each EdgePolicy.act() call"},
        "batches": rows,
        "transfers": "onnxruntime's CPUExecutionProvider runs in host memory, so there are no H2D/D2H copies; "
                     "every figure is host time of the whole act() call",
    }
    out = Path(out_dir) if out_dir is not None else default_out_dir(bundle_dir)
    out.mkdir(parents=True, exist_ok=True)
    if batch1_samples is not None:
        host = result["host"]
        plot_latency_histogram(batch1_samples, out / HISTOGRAM_PNG,
                               f"batch-1 latency, {variant}, measured on {host['cpu']} "
                               f"({threads} thread{'s' if threads > 1 else ''})")
        result["histogram_png"] = str(out / HISTOGRAM_PNG)
    result["json"] = str(out / PROFILE_JSON)
    write_json_atomic(out / PROFILE_JSON, result)
    return result


def plot_latency_histogram(samples_ns: np.ndarray, target: str | Path, title: str = "batch-1 latency") -> Path:
    """A histogram of per-call latency (log-spaced bins, so the tail shows), with p50/p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    low, high = max(us.min(), 1e-3), max(us.max(), us.min() * 1.01 + 1e-3)
    bins = np.geomspace(low, high, 60)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.hist(us, bins=bins, color="tab:blue", alpha=0.8)
    for q, style in ((50, "-"), (99, "--")):
        value = np.percentile(us, q)
        ax.axvline(value, color="k", ls=style, lw=1, label=f"p{q} {value:.1f} µs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per call (µs, measured)")
    ax.set_ylabel("calls")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    target = Path(target)
    save_png(fig, target)
    return target


def format_trtexec(result: dict[str, Any]) -> str:
    """The performance summary in trtexec's words and order, one block per batch size."""
    host, settings = result["host"], result["settings"]
    graph = f"variant {result['variant']}" if "variant" in result else f"precision {result['precision']}"
    lines = [f"=== Performance summary (measured on this host: {host['cpu']}, {host['logical_cores']} logical "
             f"cores, onnxruntime {host['onnxruntime']} {host['execution_provider']}, "
             f"{settings['threads']} intra-op thread(s); {graph}) ==="]
    for row in result["batches"]:
        tag = f"[batch {row['batch']}]"
        lines += [
            f"{tag} Throughput: {row['throughput_qps']:.6g} qps ({row['actions_per_s']:.6g} actions/s)",
            f"{tag} Latency: min = {row['min_ms']:.6g} ms, max = {row['max_ms']:.6g} ms, mean = {row['mean_ms']:.6g} "
            f"ms, median = {row['p50_ms']:.6g} ms, percentile(90%) = {row['p90_ms']:.6g} ms, percentile(95%) = "
            f"{row['p95_ms']:.6g} ms, percentile(99%) = {row['p99_ms']:.6g} ms",
            f"{tag} Total Host Walltime: {row['total_host_wall_s']:.6g} s ({row['n']} iterations after "
            f"{settings['warmup_calls']} warm-up calls)",
        ]
    lines.append("H2D Latency / GPU Compute Time / D2H Latency: not applicable: " + result["transfers"])
    return "\n".join(lines)


def print_profile(result: dict[str, Any]) -> None:
    """A rich table of every batch size, then the trtexec-style summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"physai profile {result['bundle']} ({result['variant']}), measured on this host "
                        f"({result['host']['cpu']})")
    columns = ("batch", "n", "min ms", "mean ms", "median ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "queries/s",
               "actions/s", "host wall s")
    for column in columns:
        table.add_column(column, justify="right")
    for row in result["batches"]:
        table.add_row(str(row["batch"]), str(row["n"]),
                      *(f"{row[k]:.4g}" for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                                  "max_ms")),
                      f"{row['throughput_qps']:.0f}", f"{row['actions_per_s']:.0f}", f"{row['total_host_wall_s']:.3g}")
    console.print(table)
    console.print(format_trtexec(result), highlight=False, soft_wrap=True, markup=False)
    if result.get("histogram_png"):
        console.print(f"histogram (batch 1): {result['histogram_png']}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"figures: {result['json']}", highlight=False, soft_wrap=True, markup=False)


# ----- any ONNX file: measured on the host, modeled on every device ------------------------------------
PRECISIONS = ("fp32", "fp16", "int8")
ONNX_DURATION_S = 3.0  # trtexec's default: time for 3 s per batch size unless told otherwise
ONNX_WARMUP_CALLS = 10
CALIBRATION_INPUTS = 8
HOST_DEVICE = "host_cpu"
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                  "MatMulInteger", "DynamicQuantizeLinear"}


def read_onnx(path: str | Path) -> tuple[bytes, Any]:
    """The file's bytes and parsed model; a file that is missing or not an ONNX graph is refused."""
    path = Path(path)
    fix = "give a model file an ONNX exporter wrote, e.g. torch.onnx.export(net, example, 'model.onnx')"
    if not path.is_file():
        raise ConfigError(f"--onnx {path} does not exist; {fix}")
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, or onnx's own
        raise ConfigError(f"--onnx {path} is not an ONNX model (it does not parse: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {fix}") from None
    if not model.graph.node or not model.opset_import:
        raise ConfigError(f"--onnx {path} is not an ONNX model (no graph nodes or opset after parsing its "
                          f"{len(data)} bytes); {fix}")
    return data, model


def _already_at(model: Any, precision: str) -> bool:
    """Whether the file itself is already a reduced-precision graph (then it is timed as it is)."""
    if precision == "int8":
        return any(node.op_type in _QUANTIZED_OPS for node in model.graph.node)
    if precision == "fp16":
        return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    return True


def host_graph(data: bytes, model: Any, precision: str, seed: int = 0) -> tuple[bytes, str]:
    """The graph the host times at ``precision``, and what it is.

    As ``trtexec --fp16/--int8`` builds a reduced-precision engine from a float file: FP16 is the
    bundle's own FP16 conversion; INT8 is static QDQ quantization (Conv, Gemm, MatMul) calibrated on
    random inputs, so its speed is real and its accuracy meaningless, as trtexec's INT8 without a
    calibration cache. A file already at that precision is timed as it is.
    """
    if _already_at(model, precision):
        return data, "the file as given"
    if precision == "fp16":
        return to_fp16(data), "physai's FP16 conversion of the file (the bundle's policy_fp16 recipe: float16 " \
                              "weights and arithmetic, float32 IO, ops without a CPU float16 kernel kept float32)"
    inputs = graph_inputs(model)
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConfigError("--precision int8 quantizes a model with one float32 input; this one has "
                          f"{[value.name for value in inputs]}: quantize it yourself (QDQ) and profile that file")
    shape = input_shapes(model, 1)[inputs[0].name]
    if shape[0] != 1:
        raise ConfigError(f"--precision int8 calibrates at batch 1, but input {inputs[0].name!r} fixes a batch of "
                          f"{shape[0]}: export the model with a dynamic batch axis")
    calibration = np.random.default_rng(seed).normal(size=(CALIBRATION_INPUTS, *shape[1:])).astype(np.float32)
    return (to_int8(data, method="static", calibration=calibration),
            f"static INT8 QDQ (Conv, Gemm, MatMul) calibrated on {CALIBRATION_INPUTS} random inputs: real speed, "
            f"meaningless accuracy, as trtexec --int8 without a calibration cache")


def _device_keys(devices: Optional[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(devices)) if devices else packaged_device_keys()


def _slim(figures: dict[str, Any]) -> dict[str, Any]:
    """One device's modeled figures at one batch and precision, without the per-mode and host detail."""
    keep = ("device", "kind", "modeled", "power_mode", "path_used", "latency_ms", "actions_per_s",
            "actions_per_joule", "usd_per_million_actions", "power_w", "precision", "batch", "gpu_peak_gflops",
            "gpu_peak_basis", "cpu_peak_gflops", "cpu_bandwidth", "compute_bound_nodes", "memory_bound_nodes",
            "assumed_constants", "measured_ceilings")
    slim = {key: figures[key] for key in keep if key in figures}
    slim["paths"] = {name: {k: path[k] for k in ("latency_ms", "kernels", "roofline_us", "overhead_us",
                                                   "assumed")} for name, path in figures["paths"].items()}
    return slim


def fastest_path(by_precision: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The quickest way to run the network on a device: every path (CPU, GPU) at every precision it has a peak for.

    The CPU path is FP32 arithmetic whatever the precision, so it is named once, as ``cpu fp32``.
    """
    options = []
    for precision, figures in by_precision.items():
        for path, values in figures["paths"].items():
            if path == "cpu" and precision != "fp32":
                continue
            options.append((values["latency_ms"], path, precision))
    latency, path, precision = min(options)
    return {"path": path, "precision": precision, "latency_ms": latency,
            "name": f"{path.upper()} {precision.upper()}" + (" tensor cores" if path == "gpu" and precision != "fp32"
                                                              else "")}


def profile_onnx(onnx_path: str | Path, *, precision: str = "fp32", batches: Optional[Sequence[int]] = None,
                 devices: Optional[Sequence[str]] = None, iterations: Optional[int] = None,
                 duration_s: Optional[float] = None, warmup: int = ONNX_WARMUP_CALLS, threads: int = 1, seed: int = 0,
                 out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """``trtexec --onnx`` for the CPU at hand and every modeled target: write ``profile.json`` into ``out_dir``.

    Every input is checked before any work. Then, per batch size, the host model predicts the latency
    (roofline from the graph's FLOPs and bytes, with this machine's overheads and ceilings measured on
    other graphs first), every device is modeled at FP32, FP16 and INT8 with its fastest path named,
    and only then is the graph timed on this host, as onnxruntime runs it fastest (IOBinding, one thread).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not known; use one of {', '.join(PRECISIONS)}")
    if iterations is None and duration_s is None:
        duration_s = ONNX_DURATION_S
    _check_amounts(iterations, duration_s, warmup, threads)
    data, model = read_onnx(onnx_path)
    fixed = fixed_batch(model)
    if batches and fixed is not None and list(batches) != [fixed]:
        name = graph_inputs(model)[0].name
        raise ConfigError(f"{onnx_path} fixes a batch of {fixed} on its input, so --batch "
                          f"{','.join(map(str, batches))} cannot apply; drop --batch, or export the model with a "
                          f"dynamic batch axis (torch.onnx.export(..., dynamic_axes={{'{name}': {{0: 'batch'}}}}))")
    sizes = [fixed] if fixed is not None else list(batches or [None])
    costs = {batch or 1: graph_costs(model, batch) for batch in sizes}  # refuses a dynamic axis it cannot fill
    sizes = list(costs)
    keys = _device_keys(devices)
    targets = {key: load_device(key) for key in dict.fromkeys([HOST_DEVICE, *keys])}  # unknown names refused here
    timed, what = host_graph(data, model, precision, seed)
    sessions = {batch: BoundSession(timed, batch=batch, threads=threads, seed=seed, name=str(onnx_path))
                for batch in sizes}

    # 1. This machine's overheads and ceilings, on graphs that are not this one.
    overheads = measure_host_overheads(intra_op_threads=threads, seed=seed, caller=session_caller(threads, seed),
                                       ceilings=True)
    # 2. The model speaks before the graph is timed.
    modeled: dict[str, dict[str, Any]] = {key: {} for key in keys}
    host_model: dict[int, dict[str, Any]] = {}
    for batch in sizes:
        host_model[batch] = model_device(costs[batch], targets[HOST_DEVICE], None, overheads, "fp32", batch)
        for key in keys:
            by_precision = {p: _slim(model_device(costs[batch], targets[key], None, overheads, p, batch))
                            for p in PRECISIONS}
            modeled[key][str(batch)] = {"precisions": by_precision, "fastest": fastest_path(by_precision),
                                        "at_precision": by_precision[precision]}
    # 3. Then the graph is timed, one batch size after another.
    rows, first_samples = [], None
    for batch in sizes:
        samples, wall_s = run_timed(sessions[batch].run, warmup, iterations, duration_s)
        figures = latency_figures(samples, batch=batch)
        figures["throughput_qps"] = samples.size / wall_s
        figures["actions_per_s"] = figures["throughput_qps"] * batch
        figures["total_host_wall_s"] = wall_s
        predicted = host_model[batch]["latency_ms"]
        figures.update({"gflop_per_call": sum(c.flops for c in costs[batch]) / 1e9,
                        "mb_moved_per_call": sum(c.bytes for c in costs[batch]) / 1e6,
                        "host_model_ms": predicted, "host_model_error": predicted / figures["p50_ms"] - 1})
        rows.append(figures)
        first_samples = samples if first_samples is None else first_samples
    counts = dict(Counter(node.op_type for node in model.graph.node))
    host = host_model[sizes[0]]
    result: dict[str, Any] = {
        "onnx": str(onnx_path), "onnx_sha256": hashlib.sha256(data).hexdigest(), "precision": precision,
        "measured_graph": what, "measured": True, "where": "this host", "host": host_description(threads),
        "graph": {"nodes": len(model.graph.node), "op_types": counts, "fixed_batch": fixed},
        "settings": {"warmup_calls": warmup, "iterations": iterations, "duration_s": duration_s, "batches": sizes,
                     "threads": threads, "seed": seed, "devices": keys,
                     "timer": "time.perf_counter_ns around each call of a bound onnxruntime session "
                              "(IOBinding, inputs and outputs bound once)"},
        "batches": rows,
        "host_model": {
            "device": HOST_DEVICE, "target_abs_error": HOST_MODEL_TARGET, "applies": precision == "fp32",
            "method": "roofline of the graph's FLOPs and bytes at this machine's measured compute and bandwidth "
                      "ceilings, plus per-kernel and per-call overheads, all micro-benchmarked on other graphs "
                      "before this one was timed; the CPU path models FP32 arithmetic",
            "errors": {str(row["batch"]): row["host_model_error"] for row in rows},
            "kernels": host["paths"]["cpu"]["kernels"], "bandwidth": host["cpu_bandwidth"],
            "host_facts": host["host_facts"]},
        "host_overheads": overheads,
        "devices": modeled,
        "transfers": "onnxruntime's CPUExecutionProvider runs in host memory, so there are no H2D/D2H copies; "
                     "every figure is host time of the whole call",
    }
    out = Path(out_dir) if out_dir is not None else Path("physai-profile")
    out.mkdir(parents=True, exist_ok=True)
    histogram = out / f"latency_histogram_b{sizes[0]}.png"
    plot_latency_histogram(first_samples, histogram,
                           f"batch-{sizes[0]} latency, {Path(onnx_path).name} {precision}, measured on "
                           f"{result['host']['cpu']} ({threads} thread{'s' if threads > 1 else ''})")
    result["histogram_png"] = str(histogram)
    result["json"] = str(out / PROFILE_JSON)
    write_json_atomic(out / PROFILE_JSON, result)
    return result


def _check_amounts(iterations: Optional[int], duration_s: Optional[float], warmup: int, threads: int) -> None:
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations {iterations}: time at least one call (1000+ for a stable p99)")
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"--duration {duration_s}: give a positive number of seconds, e.g. --duration 3")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup}: give zero or more warm-up calls")
    if threads < 1:
        raise ConfigError(f"--threads {threads}: onnxruntime needs at least one intra-op thread")


def print_onnx_profile(result: dict[str, Any]) -> None:
    """The measured table and trtexec summary, the host model's check, then every device, modeled."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=180)
    plain = dict(highlight=False, soft_wrap=True, markup=False)
    graph = result["graph"]
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(graph["op_types"].items(), key=lambda item: -item[1]))
    console.print(f"{result['onnx']}: {graph['nodes']} nodes ({ops}); timed on the host: {result['measured_graph']}",
                  **plain)
    table = Table(title=f"physai profile --onnx {Path(result['onnx']).name} ({result['precision']}), measured on "
                        f"this host ({result['host']['cpu']}), host model beside it")
    for column in ("batch", "n", "GFLOP", "MB moved", "min ms", "median ms", "p90 ms", "p99 ms", "max ms",
                   "queries/s", "inputs/s", "host model ms", "model error"):
        table.add_column(column, justify="right")
    for row in result["batches"]:
        table.add_row(str(row["batch"]), str(row["n"]), f"{row['gflop_per_call']:.3g}",
                      f"{row['mb_moved_per_call']:.3g}",
                      *(f"{row[k]:.4g}" for k in ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")),
                      f"{row['throughput_qps']:.4g}", f"{row['actions_per_s']:.4g}", f"{row['host_model_ms']:.4g}",
                      f"{100 * row['host_model_error']:+.1f}%")
    console.print(table)
    console.print(format_trtexec(result), **plain)
    check = result["host_model"]
    target = 100 * check["target_abs_error"]
    verdicts = ", ".join(f"batch {b}: {100 * e:+.1f}%"
                         + (f" ({'met' if abs(e) <= check['target_abs_error'] else 'MISSED'})" if check["applies"] else "")
                         for b, e in check["errors"].items())
    console.print(f"host model vs measured p50 (target +-{target:.0f}%"
                  f"{'' if check['applies'] else '; the target applies at fp32, the CPU path models FP32'}): "
                  f"{verdicts}", **plain)
    ceilings = result["host_overheads"]["ceilings"]
    console.print(f"host ceilings measured on other graphs: {ceilings['compute_gflops']:.4g} GFLOP/s, cache "
                  f"{ceilings['cache_gbs']:.4g} GB/s, last-level cache {fmt(ceilings.get('llc_gbs'))} GB/s, memory "
                  f"{ceilings['memory_gbs']:.4g} GB/s; overheads {result['host_overheads']['op_us']:.3g} us per "
                  f"kernel, {result['host_overheads']['call_us']:.3g} us per call", **plain)
    for batch in map(str, result["settings"]["batches"]):
        devices = Table(title=f"modeled on every device, batch {batch} (roofline + overheads from published "
                              f"figures; † ‡ rest on assumed constants, see the device files)")
        for column in ("device", "power mode", "CPU FP32 ms", "GPU FP32 ms", "GPU FP16 ms", "GPU INT8 ms",
                       "fastest path", f"{result['precision']}: inputs/s", "inputs/J", "$ per 1M inputs"):
            devices.add_column(column, justify="right" if "ms" in column or "/" in column or "$" in column
                               else "left")
        for key, by_batch in result["devices"].items():
            entry = by_batch[batch]
            cells = []
            fp32 = entry["precisions"]["fp32"]
            cells.append(f"{fp32['paths']['cpu']['latency_ms']:.4g}{path_mark(fp32['paths'], 'cpu')}")
            for precision in PRECISIONS:
                paths = entry["precisions"][precision]["paths"]
                cells.append(f"{paths['gpu']['latency_ms']:.4g}{path_mark(paths, 'gpu')}" if "gpu" in paths else "–")
            head = entry["at_precision"]
            mark = path_mark(head["paths"], head["path_used"])
            devices.add_row(head["device"], head["power_mode"], *cells,
                            f"{entry['fastest']['name']} ({entry['fastest']['latency_ms']:.4g} ms)",
                            f"{head['actions_per_s']:.4g}{mark}", f"{head['actions_per_joule']:.4g}{mark}",
                            f"{head['usd_per_million_actions']:.3g}{mark}")
        console.print(devices)
    console.print(f"histogram: {result['histogram_png']}", **plain)
    console.print(f"figures: {result['json']}", **plain)
