"""Delay-aware closed-loop evaluation: the return a policy keeps when its board is slow.

A policy is trained and evaluated with its action applied in the same step as the
observation it was computed from. On a robot, inference takes time: the command lands later,
and the actuators hold the previous one meanwhile. This module replays that in the simulator.

Convention (``delay_eval.controller``):

- ``synchronous`` (default): sensors are read and commands written on control ticks. The action
  computed from the observation of tick t is applied from tick t + ceil(latency / period) on,
  so any latency above zero costs at least one step: the classic one-step delay of a
  fixed-rate loop, and the conservative choice.
- ``asynchronous``: a command is written as soon as it is ready; the part of a period it
  arrives late is ignored, so it applies from tick t + floor(latency / period) (0 for a
  board faster than the loop). An optimistic bound.

Every tick the policy is run on the newest observation (inferences may overlap when the
latency exceeds the period: a pipelined controller; whether the board can sustain that rate is
the profile's ``meets_control_rate``). At each tick the newest-observation action that has
arrived is applied; until the first arrives the actuators hold a neutral command (zero,
clipped into the action space; action 0 for a discrete space).

Jitter: the latency of each step is the device's modeled latency times a ratio drawn from the
host's measured latency distribution (sample / median), so a board inherits the shape of the
runtime's tail but not the host's speed. Draws are common random numbers: for a given episode
seed every device sees the same ratio sequence, so devices differ only by their latency, and
devices whose delay sequences coincide share one simulator run.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Optional, Sequence, TypedDict

import numpy as np

from physai.report.format import fmt, save_png
from physai.core.stats import mean_ci95

ActFn = Callable[[np.ndarray], np.ndarray]
CONTROLLERS = ("synchronous", "asynchronous")
DEFAULT_HORIZON = 100_000


def delay_steps(latency_ms: np.ndarray | float, period_ms: float, controller: str = "synchronous") -> np.ndarray:
    """Control steps between the observation an action is computed from and the tick it applies at."""
    if controller not in CONTROLLERS:
        raise ValueError(f"controller {controller!r} is not one of {CONTROLLERS}")
    ratio = np.asarray(latency_ms, dtype=np.float64) / period_ms
    # A hair of tolerance so a latency of exactly k periods is k steps, not k + 1 from rounding.
    steps = np.ceil(ratio - 1e-9) if controller == "synchronous" else np.floor(ratio + 1e-9)
    return np.maximum(steps, 0).astype(np.int64)


def jitter_ratios(relative: Optional[Mapping[str, Sequence[float]]], u: np.ndarray) -> np.ndarray:
    """Latency / median at uniform draws ``u``, by the inverse of the measured distribution."""
    if not relative:
        return np.ones_like(u)
    percentiles = np.asarray(relative["percentiles"], dtype=np.float64)
    ratios = np.asarray(relative["latency_over_median"], dtype=np.float64)
    return np.interp(u * 100.0, percentiles, ratios)


def uniform_draws(seed: int, horizon: int) -> np.ndarray:
    """The per-step uniform draws of one episode: the same for every device (common random numbers)."""
    return np.random.default_rng([int(seed), 0x5EED]).random(horizon)


def neutral_action(action_space: Any) -> np.ndarray:
    if hasattr(action_space, "n") and not hasattr(action_space, "low"):
        return np.asarray(0, dtype=np.int64)
    zeros = np.zeros(action_space.shape, dtype=action_space.dtype)
    return np.clip(zeros, action_space.low, action_space.high).astype(action_space.dtype)


def delayed_episode(env: Any, act: ActFn, seed: int, delays: np.ndarray,
                    neutral: np.ndarray) -> tuple[float, list[int]]:
    """One episode with per-step action delays; returns the return and the delays actually used."""
    obs, _ = env.reset(seed=int(seed))
    pending: dict[int, tuple[int, np.ndarray]] = {}  # arrival tick -> (observation tick, action)
    applied, applied_from = neutral, -1
    total, t, used = 0.0, 0, []
    while True:
        action = np.array(act(obs), copy=True)
        delay = int(delays[min(t, len(delays) - 1)])
        used.append(delay)
        queued = pending.get(t + delay)
        if queued is None or queued[0] < t:
            pending[t + delay] = (t, action)
        ready = pending.pop(t, None)
        if ready is not None and ready[0] > applied_from:
            applied_from, applied = ready
        obs, reward, terminated, truncated, _ = env.step(applied)
        total += float(reward)
        t += 1
        if terminated or truncated:
            return total, used


def _sequence_key(sequences: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha1()
    for sequence in sequences:
        digest.update(np.ascontiguousarray(sequence, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def episode_horizon(task: Any) -> int:
    env = task.make()
    try:
        steps = getattr(env.spec, "max_episode_steps", None) if env.spec is not None else None
    finally:
        env.close()
    return int(steps) if steps else DEFAULT_HORIZON


class DelayFigures(TypedDict):
    """Closed-loop returns with action delay: a fixed-delay sweep and each device's modeled delay."""

    controller: str
    control_period_ms: float
    seeds: list[int]
    jitter: bool
    solved_threshold: Optional[float]
    zero_delay: dict[str, Any]          # the sweep's 0-step row
    sweep: list[dict[str, Any]]         # delay_steps, mean_return, ci95_low/high, solves_task, ...
    devices: dict[str, dict[str, Any]]  # device key -> latency_ms, nominal_delay_steps, mean_return, solves_task, ...
    simulator_runs: int


def evaluate_delays(task: Any, act: ActFn, seeds: Sequence[int], latencies_ms: Mapping[str, float],
                    period_ms: float, controller: str = "synchronous",
                    relative: Optional[Mapping[str, Sequence[float]]] = None, sweep_max_steps: int = 5,
                    solved_threshold: Optional[float] = None, horizon: Optional[int] = None) -> DelayFigures:
    """Returns per device (its modeled latency as delay, with jitter when ``relative`` is given) and per fixed delay.

    Runs are cached by their delay sequences: devices (and sweep points) that would impose the
    same delays on every step of every episode share one set of episodes.
    """
    horizon = horizon or episode_horizon(task)
    draws = [jitter_ratios(relative, uniform_draws(seed, horizon)) for seed in seeds]
    plans: dict[str, list[np.ndarray]] = {}
    for delay in range(sweep_max_steps + 1):
        plans[f"fixed:{delay}"] = [np.full(horizon, delay, dtype=np.int64) for _ in seeds]
    for key, latency in latencies_ms.items():
        plans[f"device:{key}"] = [delay_steps(latency * ratio, period_ms, controller) for ratio in draws]
    cache: dict[str, dict[str, Any]] = {}
    env = task.make()
    neutral = neutral_action(env.action_space)
    try:
        results = {}
        for name, sequences in plans.items():
            key = _sequence_key(sequences)
            if key not in cache:
                returns, used = [], []
                for seed, sequence in zip(seeds, sequences):
                    total, delays = delayed_episode(env, act, seed, sequence, neutral)
                    returns.append(total)
                    used.extend(delays)
                cache[key] = {"returns": returns, "used": np.asarray(used), "run": len(cache)}
            results[name] = cache[key]
    finally:
        env.close()

    def figures(entry: dict[str, Any]) -> dict[str, Any]:
        stats = mean_ci95(entry["returns"])
        return {"mean_return": stats["mean"], "ci95_low": stats["ci95_low"], "ci95_high": stats["ci95_high"],
                "n_episodes": stats["n"], "episode_returns": [float(r) for r in entry["returns"]],
                "delay_steps_mean": float(entry["used"].mean()), "delay_steps_max": int(entry["used"].max()),
                "solves_task": None if solved_threshold is None else bool(stats["mean"] >= solved_threshold),
                "run": entry["run"]}

    sweep = [{"delay_steps": d, **figures(results[f"fixed:{d}"])} for d in range(sweep_max_steps + 1)]
    zero = sweep[0]
    devices = {}
    for key, latency in latencies_ms.items():
        entry = figures(results[f"device:{key}"])
        entry.update({"modeled": True, "latency_ms": float(latency),
                      "nominal_delay_steps": int(delay_steps(latency, period_ms, controller)),
                      "return_change_vs_zero_delay": entry["mean_return"] - zero["mean_return"]})
        devices[key] = entry
    return {"controller": controller, "control_period_ms": period_ms, "seeds": [int(s) for s in seeds],
            "jitter": bool(relative), "solved_threshold": solved_threshold, "zero_delay": zero, "sweep": sweep,
            "devices": devices, "simulator_runs": len(cache)}


def plot_return_vs_delay(section: Mapping[str, Any], labels: Mapping[str, str], target) -> bool:
    """Return vs delay steps (mean and 95% CI), the solved threshold, and each device at its mean delay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = section["sweep"]
    steps = [p["delay_steps"] for p in sweep]
    means = np.array([p["mean_return"] for p in sweep])
    low = np.array([p["ci95_low"] for p in sweep])
    high = np.array([p["ci95_high"] for p in sweep])
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    finite = np.isfinite(low) & np.isfinite(high)
    ax.plot(steps, means, "-o", color="C0", lw=1.5, label="fixed delay (mean)")
    if finite.any():
        ax.fill_between(np.array(steps)[finite], low[finite], high[finite], color="C0", alpha=0.2, label="95% CI")
    threshold = section.get("solved_threshold")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label="solved threshold")
    markers = "sD^vP*Xhp<>"
    for i, (key, device) in enumerate(section["devices"].items()):
        ax.plot(device["delay_steps_mean"], device["mean_return"], markers[i % len(markers)], ms=7,
                color=f"C{(i + 1) % 10}",
                label=f"{labels.get(key, key)} ({device['latency_ms'] * 1e3:.3g} us, modeled)")
    ax.set_xlabel(f"action delay (control steps of {section['control_period_ms']:.3g} ms, {section['controller']})")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=6.5)
    fig.tight_layout()
    save_png(fig, target)
    return True


def report_lines(section: Mapping[str, Any], device_names: Mapping[str, str]) -> list[str]:
    """The report's delay-aware table (markdown)."""
    zero = section["zero_delay"]
    lines = ["## Delay-aware evaluation (modeled latency as action delay)", "",
             f"Each device's modeled latency becomes an action delay in closed loop ({section['controller']} "
             f"controller at {section['control_period_ms']:.3g} ms per step"
             f"{', jitter from the measured host distribution' if section['jitter'] else ''}); the bundle runs "
             f"through the edge runtime on the evaluation seeds. Zero-delay return: {fmt(zero['mean_return'])} "
             f"[{fmt(zero['ci95_low'])}, {fmt(zero['ci95_high'])}], n={zero['n_episodes']}.", "",
             "| device | modeled latency ms | delay steps (mean / max) | return | 95% CI | vs zero delay | "
             "solves task |", "|---|---|---|---|---|---|---|"]
    for key, device in section["devices"].items():
        lines.append(f"| {device_names.get(key, key)} | {fmt(device['latency_ms'])} | "
                     f"{device['delay_steps_mean']:.3g} / {device['delay_steps_max']} | "
                     f"{fmt(device['mean_return'])} | "
                     f"[{fmt(device['ci95_low'])}, {fmt(device['ci95_high'])}] | "
                     f"{device['return_change_vs_zero_delay']:+.4g} | {fmt(device['solves_task'])} |")
    lines += ["", "Fixed delays: " + ", ".join(
        f"{p['delay_steps']} step(s) {fmt(p['mean_return'])}" for p in section["sweep"]) +
        f" (solved threshold {fmt(section['solved_threshold'])}).", ""]
    if section.get("plot"):
        lines += ["![return vs action delay](delay_return.png)", ""]
    return lines
