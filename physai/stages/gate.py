"""Release gates: does the exported policy keep its quality, meet the latency budget, and still solve
its task with the action delay each target imposes (read from delay_eval)?"""

from __future__ import annotations

import logging

from physai.errors import ConfigError
from physai.evaluation import score_points
from physai.stats import mean_ci95

REQUIRES = ["summary:eval", "summary:bundle", "summary:profile"]
PRODUCES = ["summary:gates"]

log = logging.getLogger(__name__)


def _gate(name: str, value, threshold, unit: str, passed: bool, **extra) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "unit": unit, "passed": bool(passed), **extra}


def _check_same_policy(summary: dict) -> None:
    """Gates compare figures of one policy; after a partial rerun they may describe different ones."""
    evaluation, bundle, profile = summary["eval"], summary["bundle"], summary["profile"]
    stale = []
    if evaluation.get("checkpoint_timesteps") != bundle.get("timesteps"):
        stale.append(f"eval is of the checkpoint at step {evaluation.get('checkpoint_timesteps')}, the bundle of "
                     f"step {bundle.get('timesteps')} (rerun evaluate or export)")
    if evaluation.get("seeds") != bundle["eval"].get("seeds"):
        stale.append("eval and the bundle's evaluation used different seeds (rerun evaluate and export)")
    if profile.get("policy_sha256") != bundle.get("policy_sha256"):
        stale.append("profile measured another bundle than the current one (rerun profile)")
    delayed = summary.get("delay_eval")
    if delayed is not None and delayed.get("policy_sha256") != bundle.get("policy_sha256"):
        stale.append("delay_eval evaluated another bundle than the current one (rerun delay_eval)")
    if stale:
        raise ConfigError("the gate would compare figures of different policies: " + "; ".join(stale))


def run(cfg, ctx) -> dict:
    from physai.delay_eval import delay_gates, gate_result

    summary = ctx.summary()
    _check_same_policy(summary)
    reference, bundle_eval, profile = summary["eval"], summary["bundle"]["eval"], summary["profile"]
    threshold = reference.get("solved_threshold")

    def points(value: float) -> float:
        return score_points(value, threshold, reference["mean_return"])

    # Paired over the same seeds. Contact-rich tasks are chaotic: float32 rounding alone moves single
    # episodes, so the gate fails only when the drop exceeds the limit with 95% confidence.
    drops = [points(r) - points(b) for r, b in zip(reference["episode_returns"], bundle_eval["episode_returns"])]
    drop = mean_ci95(drops)
    limit = cfg.gate.quality_max_drop_points
    gates = [_gate("quality_drop", drop["mean"], limit, "score points", drop["ci95_low"] <= limit,
                   ci95=[drop["ci95_low"], drop["ci95_high"]], n=drop["n"],
                   detail=f"bundle {points(bundle_eval['mean_return']):.2f} vs reference "
                          f"{points(reference['mean_return']):.2f} points (100 = "
                          f"{'|solved threshold|' if threshold else '|reference return|'}); paired drop "
                          f"{drop['mean']:.2f} [{drop['ci95_low']:.2f}, {drop['ci95_high']:.2f}]")]
    p99 = profile["host"]["p99_ms"]
    gates.append(_gate("host_latency_p99", p99, cfg.gate.latency_p99_max_ms, "ms",
                       p99 <= cfg.gate.latency_p99_max_ms, modeled=False))
    if cfg.gate.latency_within_control_period:
        period = profile.get("control_period_ms")
        if not period:
            gates.append(_gate("host_latency_p99_within_control_period", p99, None, "ms", False, modeled=False,
                               detail="control rate unknown: set env.control_rate_hz to judge this gate"))
        else:
            gates.append(_gate("host_latency_p99_within_control_period", p99, period, "ms", p99 <= period,
                               modeled=False))
            for key, device in profile.get("devices", {}).items():
                if device.get("measured_host"):
                    continue
                gates.append(_gate(f"{key}_latency_within_control_period", device["latency_ms"], period, "ms",
                                   device["latency_ms"] <= period, modeled=True, source=device["source"]))
    # Does the release still solve its task with the delay each target imposes? (shared with `physai gate`)
    devices = {key: device.get("device", key) for key, device in profile.get("devices", {}).items()}
    gates += delay_gates(summary.get("delay_eval"), devices, required=cfg.gate.require_delay_eval,
                         missing="delay_eval did not run (put it before gate in pipeline.stages)")
    figures = {"passed": all(g["passed"] for g in gates), "gates": gates}
    ctx.record("gates", figures)
    for gate in gates:
        threshold_text = "unknown" if gate["threshold"] is None else f"{gate['threshold']:.4g}"
        value_text = "-" if gate["value"] is None else f"{gate['value']:.4g}"
        log.info("gate %-45s %s  %s %s (threshold %s)%s", gate["name"], gate_result(gate), value_text, gate["unit"],
                 threshold_text, f": {gate['detail']}" if gate.get("basis") == "delay_eval" else "")
    return figures
