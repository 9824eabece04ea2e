"""Measure the bundle's host latency at batch 1 and model it on the configured compute targets."""

from __future__ import annotations

import platform

import numpy as np

from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE

REQUIRES = [f"bundle/{MANIFEST_FILE}"]
PRODUCES = ["summary:profile"]


def run(cfg, ctx) -> dict:
    from physai.devices.onnx_cost import node_costs
    from physai.devices.roofline import model_device
    from physai.edge.runtime import EdgePolicy
    from physai.latency import latency_figures, time_calls

    policy = EdgePolicy.load(ctx.path("bundle"), intra_op_threads=cfg.profile.intra_op_threads)
    rng = np.random.default_rng(cfg.seed)
    obs = rng.normal(size=policy.obs_dim).astype(np.float32)
    costs = node_costs(ctx.path("bundle", POLICY_FILE), batch=1)
    control_rate = policy.control_rate_hz
    # The device model speaks first, so its host prediction is made before the measurement it is checked against.
    modeled = {key: model_device(costs, device, control_rate) for key, device in cfg.device.items()}
    samples = time_calls(lambda: policy.act(obs), cfg.profile.warmup, cfg.profile.iterations)
    measured = latency_figures(samples, batch=1)
    measured.update({"modeled": False, "where": f"this host ({platform.processor() or platform.machine()})",
                     "intra_op_threads": cfg.profile.intra_op_threads, "warmup": cfg.profile.warmup})
    for key, device in cfg.device.items():
        if device.measured_host:
            modeled[key]["error_vs_measured_p50"] = modeled[key]["latency_ms"] / measured["p50_ms"] - 1
            modeled[key]["measured_host"] = True
    figures = {"policy_sha256": policy.manifest["files"][POLICY_FILE]["sha256"], "host": measured, "devices": modeled,
               "control_rate_hz": control_rate, "control_period_ms": 1e3 / control_rate if control_rate else None}
    ctx.record("profile", figures)
    ctx.tracker.log({"profile/host_p99_ms": measured["p99_ms"], "profile/host_p50_ms": measured["p50_ms"]})
    return figures
