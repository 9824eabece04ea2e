"""Release gates compare what the bundle does with what the trained policy did, and with the budget."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose_config
from physai.deploy.gates import latency_gates, score_points
from physai.core.io import read_summary, update_summary
from physai.run.pipeline import RunContext
from physai.stages import gate
from physai.run.tracking import NullTracker


def _delay_section(threshold, zero, delayed, sha="ab") -> dict:
    """A delay_eval section with known figures: one device, whose delay gives ``delayed`` per episode."""
    def figures(returns):
        return {"mean_return": float(np.mean(returns)), "ci95_low": float(np.min(returns)),
                "ci95_high": float(np.max(returns)), "n_episodes": len(returns), "episode_returns": list(returns),
                "delay_steps_mean": 1.0, "delay_steps_max": 1}
    return {"controller": "synchronous", "control_period_ms": 40.0, "solved_threshold": threshold,
            "policy_sha256": sha, "zero_delay": figures(zero), "sweep": [],
            "devices": {"jetson_orin_nano": {**figures(delayed), "latency_ms": 0.05, "source": "url",
                                             "device": "Jetson Orin Nano 8GB"}}}


SOLVES = "solves"  # the default delay_eval: the device's delay keeps the task solved


def _run_gates(tmp_path, reference, bundle, p99_ms, control_rate_hz=25.0, threshold=950.0, overrides=(),
               delay=SOLVES):
    cfg = compose_config(["tracking=none", *overrides])
    ref_returns = np.atleast_1d(reference).astype(float).tolist()
    bundle_returns = np.atleast_1d(bundle).astype(float).tolist()
    if len(ref_returns) == 1:  # identical episodes: a deterministic task
        ref_returns, bundle_returns = ref_returns * 5, bundle_returns * 5
    seeds = list(range(len(ref_returns)))
    update_summary(tmp_path, "eval", {"mean_return": float(np.mean(ref_returns)), "episode_returns": ref_returns,
                                      "solved_threshold": threshold, "seeds": seeds, "checkpoint_timesteps": 10})
    update_summary(tmp_path, "bundle", {"eval": {"mean_return": float(np.mean(bundle_returns)),
                                                 "episode_returns": bundle_returns, "seeds": seeds},
                                        "timesteps": 10, "policy_sha256": "ab"})
    update_summary(tmp_path, "profile", {"host": {"p99_ms": p99_ms}, "control_period_ms": 1e3 / control_rate_hz,
                                         "policy_sha256": "ab",
                                         "devices": {"jetson_orin_nano": {"latency_ms": 0.05, "source": "url",
                                                                          "device": "Jetson Orin Nano 8GB"}}})
    if delay == SOLVES:
        delay = _delay_section(threshold, ref_returns, ref_returns)
    if delay is not None:
        update_summary(tmp_path, "delay_eval", delay)
    gate.run(cfg, RunContext(run_dir=tmp_path, cfg=cfg, tracker=NullTracker()))
    gates = read_summary(tmp_path)["gates"]
    return gates["passed"], {g["name"]: g for g in gates["gates"]}


def test_all_gates_pass_for_a_faithful_fast_bundle(tmp_path):
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=995.0, p99_ms=0.02)
    assert passed
    assert gates["quality_drop"]["value"] == pytest.approx(100 * 5 / 950)
    assert gates["jetson_orin_nano_latency"]["modeled"] is True


def test_quality_gate_fails_beyond_two_points(tmp_path):
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=970.0, p99_ms=0.02)
    assert not passed and not gates["quality_drop"]["passed"]


def test_quality_gate_reads_noise_as_noise_but_a_consistent_drop_as_a_drop(tmp_path):
    rng = np.random.default_rng(0)
    reference = 700 + rng.normal(0, 40, 10)
    passed, gates = _run_gates(tmp_path, reference, reference + rng.normal(0, 40, 10), p99_ms=0.02)
    assert gates["quality_drop"]["passed"], gates["quality_drop"]  # float noise on a chaotic task
    passed, gates = _run_gates(tmp_path, reference, reference - 60 + rng.normal(0, 5, 10), p99_ms=0.02)
    assert not gates["quality_drop"]["passed"]  # a consistent 60-return (6.3-point) drop


def test_latency_gates_use_the_control_period_and_the_absolute_cap(tmp_path):
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=1000.0, p99_ms=45.0)
    assert not passed
    assert gates["host_latency_p99"]["passed"]                       # 45 ms <= 50 ms
    assert not gates["host_latency_p99_within_control_period"]["passed"]  # 45 ms > 40 ms at 25 Hz
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=1000.0, p99_ms=45.0,
                               overrides=["gate.latency_p99_max_ms=40"], control_rate_hz=10.0)
    assert not gates["host_latency_p99"]["passed"] and gates["host_latency_p99_within_control_period"]["passed"]


def test_a_modeled_target_meets_both_the_cap_and_the_control_period():
    board = {"latency_ms": 30.0, "source": "url"}
    # 50 ms cap, 25 Hz (40 ms period): 30 ms is within both.
    gates = {g["name"]: g for g in latency_gates(1.0, 50.0, 40.0, True, {"board": board}, "fix")}
    assert gates["board_latency"]["passed"] and gates["board_latency"]["threshold"] == 40.0
    # 20 ms cap, 10 Hz (100 ms period): the cap is the tighter limit and 30 ms breaks it.
    gates = {g["name"]: g for g in latency_gates(1.0, 20.0, 100.0, True, {"board": board}, "fix")}
    assert not gates["board_latency"]["passed"] and gates["board_latency"]["threshold"] == 20.0
    # 50 ms cap, 50 Hz (20 ms period), but the period is not a gate: only the cap holds, and the host
    # gets no period gate either.
    gates = {g["name"]: g for g in latency_gates(1.0, 50.0, 20.0, False, {"board": board}, "fix")}
    assert gates["board_latency"]["passed"] and gates["board_latency"]["threshold"] == 50.0
    assert "host_latency_p99_within_control_period" not in gates
    # An unknown control rate fails the host's period gate and says how to give one.
    gates = {g["name"]: g for g in latency_gates(1.0, 50.0, None, True, {}, "set env.control_rate_hz")}
    row = gates["host_latency_p99_within_control_period"]
    assert not row["passed"] and row["threshold"] is None and "set env.control_rate_hz" in row["detail"]


def test_points_grow_with_return_for_negative_thresholds():
    assert score_points(-150.0, -200.0, -150.0) > score_points(-250.0, -200.0, -150.0)
    assert score_points(950.0, 950.0, 1.0) == pytest.approx(100.0)


DELAY_GATE = "jetson_orin_nano_solves_under_delay"


def test_a_release_that_does_not_solve_under_a_devices_delay_fails_that_devices_gate(tmp_path):
    delay = _delay_section(-12.0, zero=[-6.0, -7.0, -6.5], delayed=[-13.0, -15.5, -14.0])
    passed, gates = _run_gates(tmp_path, reference=-6.5, bundle=-6.5, p99_ms=0.02, threshold=-12.0, delay=delay)
    row = gates[DELAY_GATE]
    assert not passed and not row["passed"] and row["status"] == "fail"
    assert gates["quality_drop"]["passed"] and gates["jetson_orin_nano_latency"]["passed"]
    assert row["device"] == "Jetson Orin Nano 8GB" and row["value"] == pytest.approx(-14.1666, abs=1e-3)
    assert row["ci95"] == [-15.5, -13.0] and row["threshold"] == -12.0 and row["n"] == 3
    for text in ("Jetson Orin Nano 8GB", "-14.17 [-15.5, -13]", "threshold -12", "solves only without delay"):
        assert text in row["detail"], row["detail"]
    # Trained for the delay: the same device now passes.
    delay = _delay_section(-12.0, zero=[-6.0, -7.0, -6.5], delayed=[-8.0, -9.0, -8.5])
    passed, gates = _run_gates(tmp_path, reference=-6.5, bundle=-6.5, p99_ms=0.02, threshold=-12.0, delay=delay)
    assert passed and gates[DELAY_GATE]["status"] == "pass"


def test_a_policy_that_never_solved_is_told_apart_from_one_the_delay_broke(tmp_path):
    delay = _delay_section(-12.0, zero=[-20.0, -21.0], delayed=[-22.0, -23.0])
    _, gates = _run_gates(tmp_path, reference=-20.5, bundle=-20.5, p99_ms=0.02, threshold=-12.0, delay=delay)
    assert not gates[DELAY_GATE]["passed"] and "does not solve at zero delay either" in gates[DELAY_GATE]["detail"]


def test_without_a_solved_threshold_the_delay_check_says_it_does_not_apply(tmp_path):
    delay = _delay_section(None, zero=[100.0, 110.0], delayed=[10.0, 12.0])
    passed, gates = _run_gates(tmp_path, reference=105.0, bundle=105.0, p99_ms=0.02, threshold=None, delay=delay)
    row = gates[DELAY_GATE]
    assert passed and row["status"] == "not applicable" and "no solved threshold" in row["detail"]


def test_when_delay_eval_did_not_run_the_check_reads_not_run_and_fails_unless_waived(tmp_path):
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=1000.0, p99_ms=0.02, delay=None)
    row = gates[DELAY_GATE]
    assert not passed and row["status"] == "not run" and row["value"] is None
    assert "delay_eval did not run" in row["detail"]
    passed, gates = _run_gates(tmp_path / "waived", reference=1000.0, bundle=1000.0, p99_ms=0.02, delay=None,
                               overrides=["gate.require_delay_eval=false"])
    assert passed and gates[DELAY_GATE]["status"] == "not run"


def test_a_delay_eval_of_another_bundle_is_refused(tmp_path):
    from physai.core.errors import ConfigError

    with pytest.raises(ConfigError, match="delay_eval evaluated another bundle"):
        _run_gates(tmp_path, reference=1000.0, bundle=1000.0, p99_ms=0.02,
                   delay=_delay_section(950.0, [1000.0] * 2, [1000.0] * 2, sha="cd"))
