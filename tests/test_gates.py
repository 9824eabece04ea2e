"""Release gates compare what the bundle does with what the trained policy did, and with the budget."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose_config
from physai.evaluation import score_points
from physai.io import read_summary, update_summary
from physai.pipeline import RunContext
from physai.stages import gate
from physai.tracking import NullTracker


def _run_gates(tmp_path, reference, bundle, p99_ms, control_rate_hz=25.0, threshold=950.0, overrides=()):
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
                                         "devices": {"jetson_orin_nano": {"latency_ms": 0.05, "source": "url"}}})
    gate.run(cfg, RunContext(run_dir=tmp_path, cfg=cfg, tracker=NullTracker()))
    gates = read_summary(tmp_path)["gates"]
    return gates["passed"], {g["name"]: g for g in gates["gates"]}


def test_all_gates_pass_for_a_faithful_fast_bundle(tmp_path):
    passed, gates = _run_gates(tmp_path, reference=1000.0, bundle=995.0, p99_ms=0.02)
    assert passed
    assert gates["quality_drop"]["value"] == pytest.approx(100 * 5 / 950)
    assert gates["jetson_orin_nano_latency_within_control_period"]["modeled"] is True


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


def test_points_grow_with_return_for_negative_thresholds():
    assert score_points(-150.0, -200.0, -150.0) > score_points(-250.0, -200.0, -150.0)
    assert score_points(950.0, 950.0, 1.0) == pytest.approx(100.0)
