"""A roofline plus fixed-overhead model of one policy call on a compute target.

Per node: time = max(FLOPs / peak, bytes / bandwidth) + a per-kernel overhead. A small MLP
is dominated by the overheads, so the model keeps both a CPU path and (where a board has
one) a GPU path that also pays host<->device transfers, and the verdict uses the faster.
Every figure produced here is modeled, and says which published spec it came from.
"""

from __future__ import annotations

from typing import Any, Sequence

from physai.devices.onnx_cost import NodeCost


def _path_latency_us(costs: Sequence[NodeCost], peak_gflops: float, bandwidth_gbs: float,
                     per_node_us: float, fixed_us: float) -> tuple[float, int]:
    total, memory_bound = fixed_us, 0
    for cost in costs:
        compute_us = cost.flops / (peak_gflops * 1e3)
        memory_us = cost.bytes / (bandwidth_gbs * 1e3)
        memory_bound += memory_us > compute_us
        total += max(compute_us, memory_us) + per_node_us
    return total, memory_bound


def model_device(costs: Sequence[NodeCost], device: Any, control_rate_hz: float | None) -> dict[str, Any]:
    """Modeled latency, throughput, energy and cost of one batch-1 action on ``device``."""
    paths = {}
    cpu_us, cpu_mem = _path_latency_us(costs, device.cpu_peak_gflops, device.cpu_memory_bandwidth_gbs,
                                       device.cpu_op_overhead_us, device.runtime_call_overhead_us)
    paths["cpu"] = {"latency_ms": cpu_us / 1e3, "memory_bound_nodes": cpu_mem}
    if device.gpu_peak_gflops and device.gpu_memory_bandwidth_gbs and device.gpu_kernel_launch_us is not None:
        gpu_us, gpu_mem = _path_latency_us(costs, device.gpu_peak_gflops, device.gpu_memory_bandwidth_gbs,
                                           device.gpu_kernel_launch_us,
                                           device.runtime_call_overhead_us + (device.gpu_transfer_overhead_us or 0))
        paths["gpu"] = {"latency_ms": gpu_us / 1e3, "memory_bound_nodes": gpu_mem}
    chosen = min(paths, key=lambda name: paths[name]["latency_ms"])
    latency_ms = paths[chosen]["latency_ms"]
    actions_per_s = 1e3 / latency_ms
    hourly_usd = device.power_w / 1e3 * device.energy_usd_per_kwh
    if device.price_usd:
        hourly_usd += device.price_usd / (device.service_life_years * 365 * 24)
    if device.cloud_usd_per_hour:
        hourly_usd += device.cloud_usd_per_hour
    figures = {
        "device": device.name, "modeled": True, "source": device.source, "path_used": chosen,
        "paths": paths, "latency_ms": latency_ms, "actions_per_s": actions_per_s,
        "actions_per_joule": actions_per_s / device.power_w, "power_w": device.power_w,
        "usd_per_million_actions": hourly_usd / (actions_per_s * 3600) * 1e6,
        "price_usd": device.price_usd, "cloud_usd_per_hour": device.cloud_usd_per_hour, "service_life_years": device.service_life_years,
        "energy_usd_per_kwh": device.energy_usd_per_kwh,
        "total_mflops": sum(c.flops for c in costs) / 1e6, "nodes": len(costs),
    }
    if control_rate_hz:
        figures["control_period_ms"] = 1e3 / control_rate_hz
        figures["meets_control_rate"] = bool(latency_ms <= 1e3 / control_rate_hz)
    return figures
