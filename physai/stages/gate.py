"""Release gates: does the exported policy keep its quality, meet the latency budget, and still solve
its task with the action delay each target imposes (read from delay_eval)?"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from physai.core.errors import ConfigError
from physai.deploy.gates import GateFigures, delay_gates, gate_result, latency_gates, quality_drop_gate
from physai.report.format import fmt
from physai.train.evaluation import ReturnFigures

if TYPE_CHECKING:  # the sections the gate reads, named for the reader; importing the stages would load torch
    from physai.stages.delay_eval import DelayEvalSummary
    from physai.stages.evaluate import EvalSummary
    from physai.stages.export import BundleSummary
    from physai.stages.profile import ProfileSummary

REQUIRES = ["summary:eval", "summary:bundle", "summary:profile"]
PRODUCES = ["summary:gates"]
OPTIONAL = ["summary:delay_eval"]  # its solves-under-delay gates
SUMMARY = GateFigures

log = logging.getLogger(__name__)


def _check_same_policy(summary: dict) -> None:
    """Gates compare figures of one policy; after a partial rerun they may describe different ones."""
    evaluation: EvalSummary = summary["eval"]
    bundle: BundleSummary = summary["bundle"]
    profile: ProfileSummary = summary["profile"]
    stale = []
    if evaluation.get("checkpoint_timesteps") != bundle.get("timesteps"):
        stale.append(f"eval is of the checkpoint at step {evaluation.get('checkpoint_timesteps')}, the bundle of "
                     f"step {bundle.get('timesteps')} (rerun evaluate or export)")
    if evaluation.get("seeds") != bundle["eval"].get("seeds"):
        stale.append("eval and the bundle's evaluation used different seeds (rerun evaluate and export)")
    if profile.get("policy_sha256") != bundle.get("policy_sha256"):
        stale.append("profile measured another bundle than the current one (rerun profile)")
    delayed: DelayEvalSummary | None = summary.get("delay_eval")
    if delayed is not None and delayed.get("policy_sha256") != bundle.get("policy_sha256"):
        stale.append("delay_eval evaluated another bundle than the current one (rerun delay_eval)")
    if stale:
        raise ConfigError("the gate would compare figures of different policies: " + "; ".join(stale))


def run(cfg, ctx) -> GateFigures:
    summary = ctx.summary()
    _check_same_policy(summary)
    reference: EvalSummary = summary["eval"]
    bundle_eval: ReturnFigures = summary["bundle"]["eval"]
    profile: ProfileSummary = summary["profile"]
    gates = [quality_drop_gate(reference["episode_returns"], bundle_eval["episode_returns"],
                               reference.get("solved_threshold"), cfg.gate.quality_max_drop_points, paired=True,
                               how="the bundle against the checkpoint it came from, on the same seeds")]
    modeled = {key: device for key, device in profile.get("devices", {}).items() if not device.get("measured_host")}
    gates += latency_gates(profile["host"]["p99_ms"], cfg.gate.latency_p99_max_ms, profile.get("control_period_ms"),
                           cfg.gate.latency_within_control_period, modeled,
                           unknown_rate_fix="set env.control_rate_hz to judge this gate")
    # Does the release still solve its task with the delay each target imposes?
    devices = {key: device.get("device", key) for key, device in profile.get("devices", {}).items()}
    gates += delay_gates(summary.get("delay_eval"), devices, required=cfg.gate.require_delay_eval,
                         missing="delay_eval did not run (put it before gate in pipeline.stages)")
    figures: GateFigures = {"passed": all(g["passed"] for g in gates), "gates": gates}
    ctx.record("gates", figures)
    for gate in gates:
        threshold_text = "unknown" if gate["threshold"] is None else f"{gate['threshold']:.4g}"
        value_text = "-" if gate["value"] is None else f"{gate['value']:.4g}"
        log.info("gate %-45s %s  %s %s (threshold %s)%s", gate["name"], gate_result(gate), value_text, gate["unit"],
                 threshold_text, f": {gate['detail']}" if gate.get("basis") == "delay_eval" else "")
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """Every gate with its value, threshold, result and why."""
    gates = summary.get("gates")
    if not gates:
        return []
    lines = [f"## Release gates: {'PASS' if gates['passed'] else 'FAIL'}", "",
             "| gate | value | threshold | unit | result | why |", "|---|---|---|---|---|---|"]
    for gate in gates["gates"]:
        tag = " (modeled)" if gate.get("modeled") else ""
        why = gate.get("detail", "").replace("|", "\\|")  # a literal | would split the Markdown cell
        lines.append(f"| {gate['name']}{tag} | {fmt(gate['value'])} | {fmt(gate['threshold'])} | "
                     f"{gate['unit']} | {gate_result(gate)} | {why} |")
    return lines + [""]
