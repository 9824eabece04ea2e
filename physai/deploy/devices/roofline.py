"""A roofline plus fixed-overhead model of one batch-1 policy call on a compute target.

Per kernel: time = max(FLOPs / peak, bytes / bandwidth) + a per-kernel overhead (dispatch on
a CPU, launch on a GPU), plus a fixed cost per call (the runtime's binding and input checks;
on the GPU path also the host<->device copies and the synchronization). Which nodes share a
kernel follows the runtime's fusion (see ``onnx_cost.kernel_groups``). A small MLP is
dominated by the overheads, so a board is modeled on its CPU path and (where it has one) its
GPU path, and the verdict uses the faster one; a discrete GPU (``kind: gpu``) is judged on its
GPU path, its host core's CPU path is shown beside it.

Power modes scale the published figures: CPU clock (peak, cache bandwidth and every CPU-side
overhead, GPU launches included, since the driver runs on the CPU), GPU peak (clock x active
TPC share) and memory bandwidth (EMC clock). Energy per action assumes the board draws the mode's budget.

Precision: the GPU path runs at the published peak of the precision asked for (FP16 and INT8 are
tensor-core figures; a sparse-only figure counts half) with its bytes scaled to that width; the
CPU path stays FP32. The measured host may replace its spec-sheet peak and bandwidths with the
ceilings its micro-benchmark timed on other graphs (``measured_ceilings``).

Every figure produced here is modeled, and says which published spec it came from.
"""

from __future__ import annotations

import math
import re
from importlib.resources import files
from typing import Any, Mapping, Optional, Sequence

from omegaconf import OmegaConf

from physai.config.schema import DeviceConfig, packaged_device_keys
from physai.core.errors import ConfigError
from physai.deploy.devices.host import Overlay, host_device
from physai.deploy.devices.onnx_cost import NodeCost, kernel_groups

PRECISION_BYTES = {"fp32": 4.0, "tf32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5}
_PEAK_KEY = re.compile(r"^(fp32|tf32|fp16|bf16|fp8|int8|fp4)_(dense|sparse)$")
CPU_FUSION = "onnxruntime"   # a board's CPU runs the bundle with the same edge runtime as the host
GPU_FUSION = "tensorrt"      # a board's GPU would run a TensorRT engine built from the bundle


def check_device(key: str, device: Any) -> None:
    """Refuse a device config whose figures the model cannot use, naming the field and the fix."""
    prefix = f"device.{key}"
    for peak_key, value in (device.gpu_peak_tflops or {}).items():
        if not _PEAK_KEY.match(str(peak_key)):
            raise ConfigError(f"{prefix}.gpu_peak_tflops has a key {peak_key!r}; keys are <precision>_<dense|sparse> "
                              f"with precision one of {sorted(PRECISION_BYTES)}, e.g. int8_sparse")
        if value is None or value <= 0:
            raise ConfigError(f"{prefix}.gpu_peak_tflops.{peak_key}={value} must be a positive TFLOP/s figure")
    if device.gpu_memory_bandwidth_gbs and device.gpu_kernel_launch_us is not None:
        if gpu_peak_gflops(device)[0] is None:
            raise ConfigError(f"{prefix} has a GPU path but no peak for its precision {device.precision!r}: add "
                              f"{prefix}.gpu_peak_tflops.{device.precision}_dense (or _sparse), or set "
                              f"{prefix}.precision to one it publishes ({sorted(device.gpu_peak_tflops)})")
    names = [mode.name for mode in device.power_modes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{prefix}.power_modes repeats a name ({names}); give every mode its own name")
    if device.default_power_mode is not None and device.default_power_mode not in names:
        raise ConfigError(f"{prefix}.default_power_mode={device.default_power_mode!r} is not one of its "
                          f"power_modes {names}; pick one of those")
    if device.overheads_from == "microbenchmark" and not device.measured_host:
        raise ConfigError(f"{prefix}.overheads_from=microbenchmark needs {prefix}.measured_host=true: the "
                          f"micro-benchmark runs on this machine, so it can only stand for this machine")
    if getattr(device, "read_host", False) and not device.measured_host:
        raise ConfigError(f"{prefix}.read_host=true needs {prefix}.measured_host=true: the clock and caches are "
                          f"read from this machine, so they can only stand for this machine")


def load_device(key: str) -> Any:
    """A target from ``configs/device/<key>.yaml``, checked against the schema."""
    known = packaged_device_keys()
    if key not in known:
        raise ConfigError(f"unknown device {key!r}; known devices: {', '.join(known)} "
                          f"(one file each under configs/device/)")
    loaded = OmegaConf.create((files("physai.configs") / "device" / f"{key}.yaml").read_text())
    loaded.pop("defaults", None)
    try:
        device = OmegaConf.merge(OmegaConf.structured(DeviceConfig), loaded)
    except Exception as exc:  # omegaconf raises several types; all mean a bad key or value
        raise ConfigError(f"configs/device/{key}.yaml does not fit the device schema: {exc}") from exc
    check_device(key, device)
    return device


def gpu_peak_gflops(device: Any, precision: Optional[str] = None) -> tuple[Optional[float], str]:
    """The GPU peak at ``precision`` (default: the device's) in GFLOP/s, and how it was read from its file."""
    precision = precision or device.precision
    peaks = device.gpu_peak_tflops or {}
    dense, sparse = peaks.get(f"{precision}_dense"), peaks.get(f"{precision}_sparse")
    if dense:
        return float(dense) * 1e3, f"{precision}_dense as published"
    if sparse:
        return float(sparse) * 1e3 / 2, f"{precision}_sparse / 2 (2:4 sparsity doubles the dense rate)"
    return None, f"no {precision} figure"


def _has_gpu(device: Any, precision: Optional[str] = None) -> bool:
    return bool(gpu_peak_gflops(device, precision)[0] and device.gpu_memory_bandwidth_gbs
                and device.gpu_kernel_launch_us is not None)


def power_modes(device: Any) -> list[dict[str, Any]]:
    """The device's modes as plain dicts; a device without a list has one mode at its published figures."""
    if not device.power_modes:
        return [{"name": "default", "power_w": float(device.power_w), "cpu_clock_scale": 1.0,
                 "gpu_peak_scale": 1.0, "memory_scale": 1.0}]
    return [{"name": m.name, "power_w": float(m.power_w), "cpu_clock_scale": float(m.cpu_clock_scale),
             "gpu_peak_scale": float(m.gpu_peak_scale), "memory_scale": float(m.memory_scale)}
            for m in device.power_modes]


def _bound(cost: NodeCost, peak_gflops: float, bandwidth_gbs: float, byte_scale: float) -> str:
    compute_us = cost.flops / (peak_gflops * 1e3)
    memory_us = cost.bytes * byte_scale / (bandwidth_gbs * 1e3)
    return "compute" if compute_us > memory_us else "memory"


def path_latency(costs: Sequence[NodeCost], groups: Sequence[int], peak_gflops: float, bandwidth_gbs: float,
                 per_kernel_us: float, fixed_us: float, byte_scale: float = 1.0) -> dict[str, Any]:
    """Latency of one call on one path: per-kernel roofline + per-kernel overhead + fixed cost."""
    producer = {name: i for i, cost in enumerate(costs) for name in cost.outputs}
    flops: dict[int, float] = {}
    moved: dict[int, float] = {}
    for i, cost in enumerate(costs):
        kernel = groups[i]
        flops[kernel] = flops.get(kernel, 0.0) + cost.flops
        traffic = cost.bytes
        for name in cost.inputs:  # an intermediate that stays inside a fused kernel is neither written nor read
            j = producer.get(name)
            if j is not None and groups[j] == kernel:
                traffic -= 2 * costs[j].output_bytes
        moved[kernel] = moved.get(kernel, 0.0) + max(traffic, 0.0)
    roofline_us = sum(max(flops[k] / (peak_gflops * 1e3), moved[k] * byte_scale / (bandwidth_gbs * 1e3))
                      for k in flops)
    bounds = [_bound(cost, peak_gflops, bandwidth_gbs, byte_scale) for cost in costs]
    kernels = len(flops)
    total_us = fixed_us + kernels * per_kernel_us + roofline_us
    return {"latency_ms": total_us / 1e3, "kernels": kernels, "roofline_us": roofline_us,
            "overhead_us": fixed_us + kernels * per_kernel_us, "fixed_us": fixed_us, "per_kernel_us": per_kernel_us,
            "peak_gflops": peak_gflops, "bandwidth_gbs": bandwidth_gbs,
            "compute_bound_nodes": bounds.count("compute"), "memory_bound_nodes": bounds.count("memory")}


def cpu_bandwidth_gbs(costs: Sequence[NodeCost], device: Any) -> tuple[float, str, str]:
    """The CPU path's bandwidth: that of the smallest cache every byte the graph touches fits in, else memory's.

    The caches are the core's own (``cpu_cache_kb``) and, where the file or the machine gives one, the
    last-level cache (``cpu_llc_kb``): a call repeated in a control loop finds its weights where the
    previous call left them. Returns (GB/s, why, which scale of a power mode applies: the CPU clock's
    for a cache, the EMC's for memory).
    """
    working_set = sum(cost.bytes for cost in costs)
    for name, kb, gbs in (("cache", device.cpu_cache_kb, device.cpu_cache_bandwidth_gbs),
                          ("last-level cache", device.cpu_llc_kb, device.cpu_llc_bandwidth_gbs)):
        if kb and gbs and working_set <= kb * 1024:
            return float(gbs), f"{name} ({working_set / 1024:.0f} KB fit in {kb:g} KB)", "cpu_clock_scale"
    return (float(device.cpu_memory_bandwidth_gbs), f"memory ({working_set / 1024:.0f} KB touched per call)",
            "memory_scale")


def measured_ceilings(device: Any, host_overheads: Optional[Mapping[str, Any]]) -> tuple[Any, Optional[dict]]:
    """A measured host with the compute and bandwidth ceilings its micro-benchmark timed, where it timed them.

    Spec-sheet peaks overstate what onnxruntime's kernels reach on a real core (a 512-bit FMA split in
    two, turbo clocks a VM hides), and a convolution net is compute-bound, so its prediction is only as
    good as its peak: an empirical roofline (the ceilings measured on this machine, on graphs that are
    not the one profiled) replaces the spec figures. Other devices, and a host measured without
    ceilings, come back unchanged (and None).
    """
    ceilings = (host_overheads or {}).get("ceilings")
    if not ceilings or not device.measured_host or device.overheads_from != "microbenchmark":
        return device, None
    overrides = {"cpu_peak_gflops": ceilings["compute_gflops"]}
    for field, key in (("cpu_cache_bandwidth_gbs", "cache_gbs"), ("cpu_llc_bandwidth_gbs", "llc_gbs"),
                       ("cpu_memory_bandwidth_gbs", "memory_gbs")):
        if ceilings.get(key):
            overrides[field] = ceilings[key]
    return Overlay(device, overrides), dict(ceilings)


def _cpu_overheads(device: Any, host_overheads: Optional[Mapping[str, Any]]) -> tuple[float, float, str]:
    if device.overheads_from == "microbenchmark" and host_overheads:
        return (float(host_overheads["op_us"]), float(host_overheads["call_us"]),
                str(host_overheads.get("source", "micro-benchmark")))
    source = "device config (assumed)" if device.overheads_from == "config" else \
        "device config (the micro-benchmark was not run)"
    return float(device.cpu_op_overhead_us), float(device.runtime_call_overhead_us), source


def _hourly_usd(device: Any, power_w: float) -> float:
    hourly = power_w / 1e3 * device.energy_usd_per_kwh
    if device.price_usd:
        hourly += device.price_usd / (device.service_life_years * 365 * 24)
    if device.cloud_usd_per_hour:
        hourly += device.cloud_usd_per_hour
    return hourly


def assumed_constants(device: Any, host_overheads: Optional[Mapping[str, Any]] = None) -> dict[str, list[str]]:
    """Per path, the fixed-overhead constants of the device file its latency rests on that nobody measured.

    The GPU path: kernel launch and host-device transfer (and the runtime call around them) unless
    ``gpu_overheads_measured`` names where they were measured. The CPU path: the per-kernel and per-call
    overheads unless the micro-benchmark measured them on this machine.
    """
    measured_cpu = device.overheads_from == "microbenchmark" and bool(host_overheads)
    cpu = [] if measured_cpu else ["cpu_op_overhead_us", "runtime_call_overhead_us"]
    gpu: list[str] = []
    if device.gpu_kernel_launch_us is not None and not getattr(device, "gpu_overheads_measured", ""):
        gpu = ["gpu_kernel_launch_us", "gpu_transfer_overhead_us", "runtime_call_overhead_us"]
    return {"cpu": cpu, "gpu": gpu}


def verdict_path(device: Any, paths: Mapping[str, Any]) -> str:
    """A GPU target is judged on its GPU; a board runs the policy wherever it is faster (often its CPU)."""
    if device.kind == "gpu" and "gpu" in paths:
        return "gpu"
    return min(paths, key=lambda name: paths[name]["latency_ms"])


def model_device(costs: Sequence[NodeCost], device: Any, control_rate_hz: float | None,
                 host_overheads: Optional[Mapping[str, Any]] = None, precision: Optional[str] = None,
                 batch: int = 1) -> dict[str, Any]:
    """Modeled latency, throughput, energy and cost of one call of ``batch`` actions on ``device``, per power mode.

    ``costs`` are counted at that batch. ``precision`` (default: the device's) picks the GPU path's
    published peak (FP16/INT8 are tensor-core figures) and scales its bytes; the CPU path is FP32
    arithmetic, as onnxruntime's CPU kernels run a float graph. The top-level figures are those of
    the default power mode (the first, unless ``default_power_mode`` names another): the gates and
    the delay-aware evaluation use them.
    """
    precision = precision or device.precision
    if precision not in PRECISION_BYTES:
        raise ConfigError(f"precision {precision!r} is not known; use one of {sorted(PRECISION_BYTES)}")
    device, host_facts = host_device(device)  # a measured host with read_host: this machine's clock and caches
    device, ceilings = measured_ceilings(device, host_overheads)
    op_us, call_us, overhead_source = _cpu_overheads(device, host_overheads)
    assumed = assumed_constants(device, host_overheads)
    cpu_groups = kernel_groups(costs, CPU_FUSION)
    gpu_groups = kernel_groups(costs, GPU_FUSION)
    gpu_peak, gpu_peak_basis = gpu_peak_gflops(device, precision)
    has_gpu = _has_gpu(device, precision)
    gpu_byte_scale = PRECISION_BYTES[precision] / 4.0
    cpu_bandwidth, cpu_bandwidth_basis, cpu_bandwidth_scale = cpu_bandwidth_gbs(costs, device)
    period_ms = 1e3 / control_rate_hz if control_rate_hz else None
    modes = {}
    for mode in power_modes(device):
        cpu_scale = mode["cpu_clock_scale"]
        paths = {"cpu": path_latency(costs, cpu_groups, device.cpu_peak_gflops * cpu_scale,
                                     cpu_bandwidth * mode[cpu_bandwidth_scale], op_us / cpu_scale, call_us / cpu_scale)}
        paths["cpu"]["assumed"] = assumed["cpu"]
        if has_gpu:
            fixed = (device.runtime_call_overhead_us + (device.gpu_transfer_overhead_us or 0.0)) / cpu_scale
            paths["gpu"] = path_latency(costs, gpu_groups, gpu_peak * mode["gpu_peak_scale"],
                                        device.gpu_memory_bandwidth_gbs * mode["memory_scale"],
                                        device.gpu_kernel_launch_us / cpu_scale, fixed, gpu_byte_scale)
            paths["gpu"]["assumed"] = assumed["gpu"]
        chosen = verdict_path(device, paths)
        latency_ms = paths[chosen]["latency_ms"]
        actions_per_s = batch * 1e3 / latency_ms
        figures = {"modeled": True, "power_w": mode["power_w"], "scales": {k: mode[k] for k in (
                       "cpu_clock_scale", "gpu_peak_scale", "memory_scale")},
                   "paths": paths, "path_used": chosen, "latency_ms": latency_ms, "actions_per_s": actions_per_s,
                   "actions_per_joule": actions_per_s / mode["power_w"],
                   "usd_per_million_actions": _hourly_usd(device, mode["power_w"]) / (actions_per_s * 3600) * 1e6,
                   "compute_bound_nodes": paths[chosen]["compute_bound_nodes"],
                   "memory_bound_nodes": paths[chosen]["memory_bound_nodes"]}
        if period_ms:
            figures["meets_control_rate"] = bool(latency_ms <= period_ms)
            figures["headroom"] = period_ms / latency_ms
        modes[mode["name"]] = figures
    default = device.default_power_mode or next(iter(modes))
    head = modes[default]
    result = {
        "device": device.name, "kind": device.kind, "modeled": True, "source": device.source,
        "power_mode": default, "power_modes": modes,
        "path_used": head["path_used"], "paths": head["paths"], "latency_ms": head["latency_ms"],
        "actions_per_s": head["actions_per_s"], "actions_per_joule": head["actions_per_joule"],
        "power_w": head["power_w"], "usd_per_million_actions": head["usd_per_million_actions"],
        "compute_bound_nodes": head["compute_bound_nodes"], "memory_bound_nodes": head["memory_bound_nodes"],
        "precision": precision, "batch": batch, "gpu_peak_gflops": gpu_peak if has_gpu else None,
        "gpu_peak_basis": gpu_peak_basis if has_gpu else None,
        "published_gpu_peaks_tflops": dict(device.gpu_peak_tflops or {}),
        "cpu_overheads": {"op_us": op_us, "call_us": call_us, "source": overhead_source},
        "cpu_bandwidth": {"gbs": cpu_bandwidth, "basis": cpu_bandwidth_basis},
        "fusion": {"cpu": CPU_FUSION, "gpu": GPU_FUSION if has_gpu else None},
        "price_usd": device.price_usd, "cloud_usd_per_hour": device.cloud_usd_per_hour,
        "service_life_years": device.service_life_years, "energy_usd_per_kwh": device.energy_usd_per_kwh,
        "cost_basis": device.cost_basis, "notes": device.notes,
        "total_mflops": sum(c.flops for c in costs) / 1e6, "nodes": len(costs),
        "cpu_peak_gflops": float(device.cpu_peak_gflops), "cpu_cache_kb": device.cpu_cache_kb,
        "assumed_constants": assumed, "host_facts": host_facts, "measured_ceilings": ceilings,
        "gpu_overheads": {"kernel_launch_us": device.gpu_kernel_launch_us,
                          "transfer_us": device.gpu_transfer_overhead_us,
                          "measured": getattr(device, "gpu_overheads_measured", "") or None} if has_gpu else None,
    }
    if period_ms:
        result["control_period_ms"] = period_ms
        result["meets_control_rate"] = head["meets_control_rate"]
        result["headroom"] = head["headroom"]
        result["verdict"] = verdict_text(head, control_rate_hz)
    return result


def verdict_text(mode_figures: Mapping[str, Any], control_rate_hz: float) -> str:
    latency, headroom = mode_figures["latency_ms"], mode_figures["headroom"]
    path = mode_figures["path_used"].upper()
    if mode_figures["meets_control_rate"]:
        return (f"meets {control_rate_hz:g} Hz on its {path} path ({latency:.3g} ms per action, "
                f"{headroom:.3g}x headroom)")
    return (f"misses {control_rate_hz:g} Hz: {latency:.3g} ms per action on its {path} path is "
            f"{1 / headroom:.3g}x the control period")


def node_table(costs: Sequence[NodeCost], device: Any, mode: Optional[str] = None, precision: Optional[str] = None,
               host_overheads: Optional[Mapping[str, Any]] = None) -> list[dict[str, Any]]:
    """Per node: op type, FLOPs, bytes, intensity, kernel and roofline bound on each path of ``device``."""
    precision = precision or device.precision
    device, _ = host_device(device)
    device, _ = measured_ceilings(device, host_overheads)
    chosen = next((m for m in power_modes(device) if m["name"] == (mode or device.default_power_mode)),
                  power_modes(device)[0])
    cpu_groups = kernel_groups(costs, CPU_FUSION)
    gpu_groups = kernel_groups(costs, GPU_FUSION)
    gpu_peak, _ = gpu_peak_gflops(device, precision)
    has_gpu = _has_gpu(device, precision)
    cpu_bandwidth, _, cpu_bandwidth_scale = cpu_bandwidth_gbs(costs, device)
    rows = []
    for i, cost in enumerate(costs):
        row = {"name": cost.name, "op_type": cost.op_type, "flops": cost.flops, "bytes": cost.bytes,
               "intensity_flop_per_byte": None if math.isinf(cost.intensity) else cost.intensity,
               "cpu_kernel": cpu_groups[i],
               "cpu_bound": _bound(cost, device.cpu_peak_gflops * chosen["cpu_clock_scale"],
                                   cpu_bandwidth * chosen[cpu_bandwidth_scale], 1.0)}
        if has_gpu:
            row["gpu_kernel"] = gpu_groups[i]
            row["gpu_bound"] = _bound(cost, gpu_peak * chosen["gpu_peak_scale"],
                                      device.gpu_memory_bandwidth_gbs * chosen["memory_scale"],
                                      PRECISION_BYTES[precision] / 4.0)
        rows.append(row)
    return rows
