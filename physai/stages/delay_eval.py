"""Closed-loop return per device with the action delay its modeled latency would impose.

Reads the profile's modeled latency of each device (default power mode) and the measured host
latency distribution, runs the bundle through the edge runtime on the evaluation seeds with
those delays (see ``physai.deploy.delayed_evaluation`` for the convention), and reports per device whether
the policy still solves the task on that board, beside the zero-delay return and a sweep of
fixed delays (plotted in report/delay_return.png).
"""

from __future__ import annotations

import logging
from typing import Optional

from physai.core.errors import ConfigError
from physai.deploy.delayed_evaluation import DelayFigures, evaluate_delays, plot_return_vs_delay
from physai.deploy.delayed_evaluation import report_lines as delay_lines
from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE
from physai.edge.runtime import EdgePolicy
from physai.train.evaluation import evaluation_seeds


class DelayEvalSummary(DelayFigures):
    """The bundle's returns under each target's action delay, and the policy they were measured on."""

    policy: str
    policy_sha256: str
    jitter_source: Optional[str]
    plot: Optional[str]


REQUIRES = [f"bundle/{MANIFEST_FILE}", "summary:profile"]
PRODUCES = ["summary:delay_eval"]
SUMMARY = DelayEvalSummary
PLOT_FILE = "delay_return.png"

log = logging.getLogger(__name__)


def run(cfg, ctx) -> DelayEvalSummary:
    profile = ctx.summary()["profile"]
    policy = EdgePolicy.load(ctx.path("bundle"))
    if profile.get("policy_sha256") != policy.manifest["files"][POLICY_FILE]["sha256"]:
        raise ConfigError("the profile in summary.json measured another bundle than the current one; rerun "
                          "profile before delay_eval (pipeline.stages=[profile,delay_eval])")
    period_ms = profile.get("control_period_ms")
    if not period_ms:
        raise ConfigError("the bundle has no control rate, so latency cannot be turned into control steps; set "
                          "env.control_rate_hz and re-export")
    settings = cfg.delay_eval
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, settings.n_episodes)
    latencies = {key: device["latency_ms"] for key, device in profile["devices"].items()}
    relative = profile["host"].get("relative_percentiles") if settings.jitter else None
    section: DelayEvalSummary = evaluate_delays(
        ctx.task, policy.act, seeds, latencies, period_ms, controller=settings.controller, relative=relative,
        sweep_max_steps=settings.sweep_max_steps, solved_threshold=ctx.task.solved_threshold)
    for key, device in section["devices"].items():
        modeled = profile["devices"][key]
        device.update({"device": modeled["device"], "source": modeled["source"],
                       "power_mode": modeled.get("power_mode"), "path_used": modeled.get("path_used")})
    section["policy"] = "bundle/policy.onnx through the edge runtime"
    section["policy_sha256"] = profile["policy_sha256"]
    section["jitter_source"] = "profile.host.relative_percentiles (measured on this host)" if relative else None
    labels = {key: device["device"] for key, device in profile["devices"].items()}
    target = ctx.path("report", PLOT_FILE)
    section["plot"] = f"report/{PLOT_FILE}" if plot_return_vs_delay(section, labels, target) else None
    ctx.record("delay_eval", section)
    ctx.tracker.log({"delay_eval/zero_delay_return": section["zero_delay"]["mean_return"],
                     **{f"delay_eval/{key}_return": d["mean_return"] for key, d in section["devices"].items()}})
    if section["plot"]:
        ctx.tracker.log_image("report/delay_return", target)
    for key, device in section["devices"].items():
        log.info("delay %-24s %.3g ms -> %.2f steps: return %.4g (zero delay %.4g)%s", key, device["latency_ms"],
                 device["delay_steps_mean"], device["mean_return"], section["zero_delay"]["mean_return"],
                 "" if device["solves_task"] is None else (" solves" if device["solves_task"] else " does NOT solve"))
    return section


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """Return with each target's action delay beside the zero-delay return, and the return-vs-delay plot."""
    if not summary.get("delay_eval"):
        return []
    names = {key: d["device"] for key, d in (summary.get("profile") or {}).get("devices", {}).items()}
    return delay_lines(summary["delay_eval"], names)
