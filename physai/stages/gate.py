"""Release gates: does the exported policy keep its quality and meet the latency budget?"""

from __future__ import annotations

import logging

from physai.evaluation import score_points

REQUIRES = ["summary:eval", "summary:bundle", "summary:profile"]
PRODUCES = ["summary:gates"]

log = logging.getLogger(__name__)


def _gate(name: str, value: float, threshold: float, unit: str, passed: bool, **extra) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "unit": unit, "passed": bool(passed), **extra}


def run(cfg, ctx) -> dict:
    summary = ctx.summary()
    reference, bundle_eval, profile = summary["eval"], summary["bundle"]["eval"], summary["profile"]
    threshold = reference.get("solved_threshold")
    ref_points = score_points(reference["mean_return"], threshold, reference["mean_return"])
    bundle_points = score_points(bundle_eval["mean_return"], threshold, reference["mean_return"])
    drop = ref_points - bundle_points
    gates = [_gate("quality_drop", drop, cfg.gate.quality_max_drop_points, "score points",
                   drop <= cfg.gate.quality_max_drop_points,
                   detail=f"bundle {bundle_points:.2f} vs reference {ref_points:.2f} points "
                          f"(100 = {'solved threshold' if threshold else 'reference return'})")]
    p99 = profile["host"]["p99_ms"]
    gates.append(_gate("host_latency_p99", p99, cfg.gate.latency_p99_max_ms, "ms",
                       p99 <= cfg.gate.latency_p99_max_ms, modeled=False))
    period = profile.get("control_period_ms")
    if cfg.gate.latency_within_control_period and period:
        gates.append(_gate("host_latency_p99_within_control_period", p99, period, "ms", p99 <= period,
                           modeled=False))
        for key, device in profile.get("devices", {}).items():
            if key == "host_cpu":
                continue
            gates.append(_gate(f"{key}_latency_within_control_period", device["latency_ms"], period, "ms",
                               device["latency_ms"] <= period, modeled=True, source=device["source"]))
    figures = {"passed": all(g["passed"] for g in gates), "gates": gates}
    ctx.record("gates", figures)
    for gate in gates:
        log.info("gate %-45s %s  %.4g %s (threshold %.4g)", gate["name"], "PASS" if gate["passed"] else "FAIL",
                 gate["value"], gate["unit"], gate["threshold"])
    return figures
