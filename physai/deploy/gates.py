"""The release gates, written once: the pipeline's gate stage and ``physai gate`` build every row here.

Every check is a ``GateRow`` (a JSON-ready dict with typed keys). The two callers differ only in what
they compare (the pipeline: the bundle against the checkpoint it came from; ``physai gate``: a candidate
bundle against a reference bundle) and in the checks that need a second bundle (p99 and cost ratios).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, TypedDict

import numpy as np

from physai.core.stats import mean_ci95, t_critical_95


class _GateRowKeys(TypedDict):
    name: str
    value: Any
    threshold: Any
    unit: str
    passed: bool


class GateRow(_GateRowKeys, total=False):
    """One release check; the keys below are optional. ``status`` says when it did not decide ("not run",
    "not applicable")."""

    ci95: list[float]
    n: int
    modeled: bool
    source: str
    basis: str
    status: str
    detail: str


class GateFigures(TypedDict):
    """Every gate, and whether all of them passed: the ``gates`` section and ``physai gate``'s verdict."""

    passed: bool
    gates: list[GateRow]


def gate_row(name: str, value: Any, threshold: Any, unit: str, passed: bool, **extra: Any) -> GateRow:
    return {"name": name, "value": value, "threshold": threshold, "unit": unit, "passed": bool(passed), **extra}


def gate_result(gate: Mapping[str, Any]) -> str:
    """PASS / FAIL, or what a check that did not decide was (not run, not applicable)."""
    status = gate.get("status")
    if status in ("not run", "not applicable"):
        return status.upper() + ("" if gate["passed"] else " (FAIL)")
    return "PASS" if gate["passed"] else "FAIL"


# ----- quality -----------------------------------------------------------------------------------------
def score_points(mean_return: float, solved_threshold: float | None, reference: float) -> float:
    """Return in score points: 100 points = |solved threshold| (or |reference| when a task has none).

    Dividing by the magnitude keeps "more return = more points" for tasks with negative thresholds.
    """
    scale = abs(solved_threshold) if solved_threshold else abs(reference) or 1.0
    return 100.0 * mean_return / scale


def welch_difference(reference: Sequence[float], candidate: Sequence[float]) -> dict[str, float]:
    """Welch's difference of means (reference - candidate) with a 95% CI, for returns on different seeds."""
    a, b = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:  # one episode on a side: no spread to judge by, so no bound on the drop
        return {"mean": mean, "ci95_low": -math.inf, "ci95_high": math.inf, "n": int(min(a.size, b.size))}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else 1
    half = t_critical_95(max(1, int(dof))) * se if se > 0 else 0.0
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "n": int(min(a.size, b.size))}


def quality_drop_gate(reference_returns: Sequence[float], candidate_returns: Sequence[float],
                      solved_threshold: Optional[float], limit: float, *, paired: bool, how: str) -> dict[str, Any]:
    """``quality_drop``: how many score points the candidate loses against the reference.

    Contact-rich tasks are chaotic: float32 rounding alone moves single episodes, so the gate fails only
    when the drop exceeds ``limit`` with 95% confidence. Returns on the same seeds are paired episode by
    episode; on different seeds the difference of means is Welch's.
    """
    reference_mean = float(np.mean(reference_returns))
    candidate_mean = float(np.mean(candidate_returns))

    def points(value: float) -> float:
        return score_points(value, solved_threshold, reference_mean)

    if paired:
        drop = mean_ci95([points(r) - points(c) for r, c in zip(reference_returns, candidate_returns)])
    else:
        drop = welch_difference([points(r) for r in reference_returns], [points(c) for c in candidate_returns])
    scale = "|solved threshold|" if solved_threshold else "|reference return|"
    return gate_row("quality_drop", drop["mean"], limit, "score points", drop["ci95_low"] <= limit,
                    ci95=[drop["ci95_low"], drop["ci95_high"]], n=drop["n"], modeled=False, basis="evaluation",
                    candidate_points=points(candidate_mean), reference_points=points(reference_mean),
                    detail=f"candidate {points(candidate_mean):.2f} vs reference {points(reference_mean):.2f} "
                           f"points (100 = {scale}); drop {drop['mean']:.2f} [{drop['ci95_low']:.2f}, "
                           f"{drop['ci95_high']:.2f}]; {how}; fails when the drop exceeds the limit with 95% "
                           f"confidence")


# ----- latency -----------------------------------------------------------------------------------------
def latency_gates(host_p99_ms: float, cap_ms: float, period_ms: Optional[float], within_control_period: bool,
                  modeled: Mapping[str, Mapping[str, Any]], unknown_rate_fix: str) -> list[dict[str, Any]]:
    """The host's measured p99 against the cap and the control period; each modeled target's latency
    against the cap and, when ``within_control_period``, the control period.

    ``modeled`` maps a target's key to its ``latency_ms`` and ``source`` (the measured host is not in it);
    ``unknown_rate_fix`` tells the user how to give the control rate when it is unknown.
    """
    gates = [gate_row("host_latency_p99", host_p99_ms, cap_ms, "ms", host_p99_ms <= cap_ms, modeled=False,
                      detail="batch-1 p99 measured on this host")]
    if within_control_period:
        if not period_ms:
            gates.append(gate_row("host_latency_p99_within_control_period", host_p99_ms, None, "ms", False,
                                  modeled=False, detail=f"control rate unknown: {unknown_rate_fix}"))
        else:
            gates.append(gate_row("host_latency_p99_within_control_period", host_p99_ms, period_ms, "ms",
                                  host_p99_ms <= period_ms, modeled=False,
                                  detail=f"control period {period_ms:.4g} ms"))
    limit = min(cap_ms, period_ms) if (within_control_period and period_ms) else cap_ms
    why = (f"limit min({cap_ms:g} ms cap, control period)" if limit != cap_ms else f"limit {cap_ms:g} ms cap")
    for key, device in modeled.items():
        gates.append(gate_row(f"{key}_latency", device["latency_ms"], limit, "ms", device["latency_ms"] <= limit,
                              modeled=True, source=device.get("source"), detail=f"modeled batch-1 latency; {why}"))
    return gates


# ----- solving under delay -----------------------------------------------------------------------------
GATE_SUFFIX = "_solves_under_delay"


def delay_gates(section: Optional[Mapping[str, Any]], devices: Mapping[str, str], *, required: bool = True,
                missing: str = "delay_eval did not run") -> list[dict[str, Any]]:
    """One gate per target: does the policy still solve its task with the delay that target's latency imposes?

    ``section`` is a delay_eval summary section (or None when none was run); ``devices`` maps each
    target's key to its display name. A target passes when its delayed mean return reaches the
    task's solved threshold (delay_eval's own "solves task" rule). Without a threshold the check does
    not apply and says so; without an evaluation for a target the check was not run, which fails the
    gate when ``required`` (a gate passes only on what it checked).
    """
    gates = []
    for key, name in devices.items():
        device = (section or {}).get("devices", {}).get(key)
        row: dict[str, Any] = {"name": f"{key}{GATE_SUFFIX}", "device": name, "unit": "return", "modeled": True,
                               "basis": "delay_eval"}
        if device is None:
            reason = missing if section is None else f"delay_eval has no result for {name} (rerun delay_eval)"
            gates.append({**row, "value": None, "threshold": None, "passed": not required, "status": "not run",
                          "detail": f"{name}: not checked: {reason}; whether the policy solves under this target's "
                                    f"delay is unknown" + ("" if required else " (gate.require_delay_eval=false)")})
            continue
        threshold = section.get("solved_threshold")
        zero = section["zero_delay"]
        figures = (f"{name}: return {device['mean_return']:.4g} [{device['ci95_low']:.4g}, "
                   f"{device['ci95_high']:.4g}] (95% CI, n={device['n_episodes']}) with "
                   f"{device['delay_steps_mean']:.3g} control step(s) of delay (max {device['delay_steps_max']}; "
                   f"{device['latency_ms']:.3g} ms modeled, {section['controller']} controller); zero delay "
                   f"{zero['mean_return']:.4g}")
        row.update({"value": device["mean_return"], "threshold": threshold,
                    "ci95": [device["ci95_low"], device["ci95_high"]], "n": device["n_episodes"],
                    "delay_steps_mean": device["delay_steps_mean"], "delay_steps_max": device["delay_steps_max"],
                    "latency_ms": device["latency_ms"], "zero_delay_return": zero["mean_return"],
                    "source": device.get("source")})
        if threshold is None:
            gates.append({**row, "passed": True, "status": "not applicable",
                          "detail": f"{figures}; the task has no solved threshold, so whether it solves under "
                                    f"delay cannot be judged"})
        elif device["mean_return"] >= threshold:
            gates.append({**row, "passed": True, "status": "pass",
                          "detail": f"{figures}; solves (threshold {threshold:.4g})"})
        else:
            why = ("it does not solve at zero delay either" if zero["mean_return"] < threshold else
                   "it solves only without delay: train for the delay (randomize_action_delay in env.train_events) "
                   "or use a board and controller that act sooner")
            gates.append({**row, "passed": False, "status": "fail",
                          "detail": f"{figures}; below the solved threshold {threshold:.4g}: {why}"})
    return gates
