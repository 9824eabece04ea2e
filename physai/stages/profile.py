"""Measure the bundle's host latency at batch 1 and model it on the configured compute targets.

Order matters, so the host check is a prediction and not a fit:
1. the host's fixed overheads are measured on tiny Add-chain graphs, never on the policy
   (``physai.deploy.devices.microbench``), for devices with ``overheads_from: microbenchmark``;
2. every device, the host included, is modeled from its config and the policy's graph;
3. only then is the policy timed, and the host's modeled latency is compared with the
   measured median (``host_model_validation``, target within +-25%).
The measured latency distribution (relative to its median) is kept for the delay-aware
evaluation's jitter.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any, Optional, TypedDict

import numpy as np

from physai.core.errors import ConfigError
from physai.deploy.devices.microbench import measure_host_overheads
from physai.deploy.devices.onnx_cost import kernel_groups, node_costs, runtime_kernel_count
from physai.deploy.devices.report import assumption_footnotes, path_mark, profile_lines
from physai.deploy.devices.roofline import CPU_FUSION, check_device, model_device, node_table
from physai.deploy.latency import latency_figures, time_calls
from physai.deploy.profiling import HISTOGRAM_PNG, HOST_MODEL_TARGET, plot_latency_histogram
from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE
from physai.edge.runtime import EdgePolicy
from physai.report.format import fmt


class ProfileSummary(TypedDict):
    """Measured host latency of the bundle and each target's modeled latency, throughput and cost."""

    policy_sha256: str
    host: dict[str, Any]                 # p50/p95/p99 ms, n, relative_percentiles, where
    devices: dict[str, dict[str, Any]]   # device key -> latency_ms, actions_per_s, usd_per_million_actions, ...
    control_rate_hz: Optional[float]
    control_period_ms: Optional[float]
    host_overheads: Optional[dict[str, Any]]
    host_model_validation: Optional[dict[str, Any]]
    kernels: dict[str, int]
    node_table: dict[str, Any]
    histogram_png: str


REQUIRES = [f"bundle/{MANIFEST_FILE}"]
PRODUCES = ["summary:profile"]
SUMMARY = ProfileSummary

JITTER_PERCENTILES = np.linspace(0.0, 100.0, 101)

log = logging.getLogger(__name__)


def check(cfg, task) -> None:
    """Before anything trains: there must be a target to profile."""
    if not cfg.device:
        raise ConfigError("pipeline.stages runs 'profile' but device is empty; pick targets, e.g. device=all "
                          "(every file of configs/device/) or device=[host_cpu,jetson_orin_nano]")


def _node_table_device(devices) -> str:
    """The board the per-node table is shown for: the first SoC, else the first device."""
    return next((key for key, device in devices.items() if device.kind == "soc"), next(iter(devices)))


def run(cfg, ctx) -> ProfileSummary:
    for key, device in cfg.device.items():
        check_device(key, device)
    policy = EdgePolicy.load(ctx.path("bundle"), intra_op_threads=cfg.profile.intra_op_threads)
    rng = np.random.default_rng(cfg.seed)
    obs = policy.example_observation(rng)  # timing depends on the inputs' dtypes and shapes, not their values
    policy_path = ctx.path("bundle", POLICY_FILE)
    costs = node_costs(policy_path, batch=1)
    control_rate = policy.control_rate_hz

    # 1. The host's overheads, from networks that are not the policy.
    host_overheads = None
    if any(device.overheads_from == "microbenchmark" for device in cfg.device.values()):
        host_overheads = measure_host_overheads(intra_op_threads=cfg.profile.intra_op_threads, seed=cfg.seed)
    # 2. The device model speaks first, so its host prediction is made before the measurement.
    modeled = {key: model_device(costs, device, control_rate, host_overheads) for key, device in cfg.device.items()}
    # 3. Then the policy is timed.
    samples = time_calls(lambda: policy.act(obs), cfg.profile.warmup, cfg.profile.iterations)
    measured = latency_figures(samples, batch=1)
    measured.update({"modeled": False, "where": f"this host ({platform.processor() or platform.machine()})",
                     "intra_op_threads": cfg.profile.intra_op_threads, "warmup": cfg.profile.warmup})
    median_ns = float(np.median(samples))
    measured["relative_percentiles"] = {
        "percentiles": JITTER_PERCENTILES.tolist(),
        "latency_over_median": (np.percentile(samples, JITTER_PERCENTILES) / median_ns).tolist(),
        "note": "the measured per-call latency divided by its median, at percentiles 0..100 (jitter model)"}

    validation = None
    for key, device in cfg.device.items():
        if not device.measured_host:
            continue
        error = modeled[key]["latency_ms"] / measured["p50_ms"] - 1
        modeled[key]["error_vs_measured_p50"] = error
        modeled[key]["measured_host"] = True
        out_of_sample = device.overheads_from == "microbenchmark" and host_overheads is not None
        validation = {
            "device": key, "predicted_ms": modeled[key]["latency_ms"], "measured_p50_ms": measured["p50_ms"],
            "error": error, "target_abs_error": HOST_MODEL_TARGET,
            "within_target": bool(abs(error) <= HOST_MODEL_TARGET),
            "out_of_sample": out_of_sample,
            "method": ("spec-sheet roofline + overheads measured on Add-chain graphs (not the policy) before the "
                       "policy was timed" if out_of_sample else
                       "spec-sheet roofline + overheads from the device config: if those were tuned on this "
                       "policy, this is a calibration, not a validation")}
        log.info("host model: predicted %.4f ms, measured p50 %.4f ms, error %+.1f%% (target +-%d%%, %s)",
                 validation["predicted_ms"], validation["measured_p50_ms"], 100 * error, 100 * HOST_MODEL_TARGET,
                 "out of sample" if out_of_sample else "config overheads")

    table_key = _node_table_device(cfg.device)
    power_mode = modeled[table_key]["power_mode"]
    figures = ProfileSummary(
        policy_sha256=policy.manifest["files"][POLICY_FILE]["sha256"], host=measured, devices=modeled,
        control_rate_hz=control_rate, control_period_ms=1e3 / control_rate if control_rate else None,
        host_overheads=host_overheads, host_model_validation=validation,
        kernels={"graph_nodes": len(costs), "cpu_modeled": len(set(kernel_groups(costs, CPU_FUSION))),
                 "cpu_onnxruntime": runtime_kernel_count(policy_path)},
        node_table={"device": table_key, "power_mode": power_mode,
                    "rows": node_table(costs, cfg.device[table_key], power_mode)},
        histogram_png=f"report/{HISTOGRAM_PNG}")
    # The measured distribution as a picture for the report (`physai profile` draws the same one).
    ctx.path("report").mkdir(parents=True, exist_ok=True)
    plot_latency_histogram(samples, ctx.path("report", HISTOGRAM_PNG),
                           title=f"batch-1 latency of the bundle on {measured['where']} (measured)")
    ctx.record("profile", figures)
    logged = {"profile/host_p99_ms": measured["p99_ms"], "profile/host_p50_ms": measured["p50_ms"]}
    if validation:
        logged["profile/host_model_error"] = validation["error"]
    ctx.tracker.log(logged)
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """Measured batch-1 latency on this host and the modeled figures on every target."""
    profile = summary.get("profile")
    if not profile:
        return []
    host = profile["host"]
    lines = ["## Latency at batch 1", "", "Measured on this host (edge runtime, "
             f"{host['n']} timed calls after {host['warmup']} warm-up):", "",
             "| min | mean | p50 | p90 | p95 | p99 | max (ms) | actions/s |", "|---|---|---|---|---|---|---|---|",
             "| " + " | ".join(fmt(host[k]) for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms",
                                                       "p99_ms", "max_ms")) + f" | {host['actions_per_s']:.0f} |",
             *_histogram_lines(ctx, profile),
             "", "Modeled (roofline + per-kernel overhead from published specs; not measured):", "",
             "| target | path | latency ms | actions/s | actions/J | $ per 1M actions | meets control rate | "
             "source |", "|---|---|---|---|---|---|---|---|"]
    for device in profile["devices"].values():
        mark = path_mark(device.get("paths") or {}, device["path_used"])
        lines.append(f"| {device['device']} | {device['path_used']} | {fmt(device['latency_ms'])}{mark} | "
                     f"{device['actions_per_s']:.0f}{mark} | {fmt(device['actions_per_joule'])}{mark} | "
                     f"{fmt(device['usd_per_million_actions'])}{mark} | "
                     f"{fmt(device.get('meets_control_rate'))}{mark} | {device['source']} |")
    return lines + ["", *assumption_footnotes(profile["devices"]), "", *profile_lines(profile)]


def _histogram_lines(ctx, profile: dict) -> list[str]:
    """The batch-1 latency histogram, when the profile stage wrote one (``histogram_png``, run-relative)."""
    histogram = profile.get("histogram_png")
    if not histogram or not ctx.path(histogram).exists():
        return []
    link = os.path.relpath(ctx.path(histogram), ctx.path("report"))
    return ["", f"![batch-1 latency histogram (measured)]({link})"]
