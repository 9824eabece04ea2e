"""The figures every report rests on, against values worked out by hand or known from a distribution.

A 95% CI on a sample small enough to do on paper, Student-t quantiles from a printed table, latency
percentiles of a sample whose order statistics are known, quantiles of a known distribution, and the
throughput of calls whose duration is fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from physai.deploy.latency import latency_figures
from physai.core.stats import latency_percentiles_ms, mean_ci95, t_critical_95


def test_ci95_of_samples_worked_by_hand():
    # 1..5: mean 3, sample variance 10/4 = 2.5, half-width t(4) * sqrt(2.5 / 5) = 2.776 * sqrt(0.5) = 1.96293.
    ci = mean_ci95([4.0, 1.0, 5.0, 2.0, 3.0])
    assert ci["n"] == 5 and ci["mean"] == pytest.approx(3.0) and ci["std"] == pytest.approx(math.sqrt(2.5))
    assert (ci["ci95_low"], ci["ci95_high"]) == pytest.approx((3 - 1.96293, 3 + 1.96293), abs=1e-4)
    # Two seeds 10, 20: std 7.0711, half-width t(1) * 7.0711 / sqrt(2) = 12.706 * 5 = 63.53.
    ci = mean_ci95([10.0, 20.0])
    assert (ci["mean"], ci["ci95_low"], ci["ci95_high"]) == pytest.approx((15.0, -48.53, 78.53), abs=1e-6)
    # Identical seeds: no spread, the interval is the point.
    ci = mean_ci95([7.0, 7.0, 7.0])
    assert (ci["ci95_low"], ci["ci95_high"]) == (7.0, 7.0)
    # One seed says nothing about spread: an unbounded interval, not a zero-width one.
    ci = mean_ci95([7.0])
    assert ci["n"] == 1 and ci["mean"] == 7.0 and ci["ci95_low"] == -math.inf and ci["ci95_high"] == math.inf


@pytest.mark.parametrize("dof, printed", [
    (1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423),
    # Past the table: the expansion against printed quantiles of t(0.975, dof).
    (31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799), (1000, 1.9623),
])
def test_t_quantiles_match_a_printed_table(dof, printed):
    assert t_critical_95(dof) == pytest.approx(printed, abs=1e-3)


def test_ci95_covers_the_true_mean_95_percent_of_the_time():
    # 4,000 samples of five N(10, 3^2) draws: a correct t interval holds 10 in 95% of them (binomial
    # sd 0.34%); a normal-quantile interval would hold it in ~88%.
    rng = np.random.default_rng(7)
    hits = 0
    for sample in rng.normal(10.0, 3.0, size=(4000, 5)):
        ci = mean_ci95(sample)
        hits += ci["ci95_low"] <= 10.0 <= ci["ci95_high"]
    assert hits / 4000 == pytest.approx(0.95, abs=0.012)


def test_latency_percentiles_of_known_order_statistics():
    # Calls of 1, 2, ..., 100 ms in shuffled order. With linear interpolation between order statistics
    # (numpy's and trtexec's default), percentile q sits at rank 1 + 99 q / 100: p50 between 50 and 51,
    # p90 at 90.1, p95 at 95.05, p99 at 99.01.
    samples_ns = np.random.default_rng(0).permutation(np.arange(1, 101)) * 1_000_000
    figures = latency_percentiles_ms(samples_ns)
    assert figures["n"] == 100 and figures["min_ms"] == 1.0 and figures["max_ms"] == 100.0
    expected = {"mean_ms": 50.5, "p50_ms": 50.5, "p90_ms": 90.1, "p95_ms": 95.05, "p99_ms": 99.01}
    assert {k: figures[k] for k in expected} == pytest.approx(expected)


def test_latency_percentiles_of_a_known_distribution():
    # Exponential latencies with a 1 ms mean: the q-quantile is -ln(1 - q) ms.
    samples_ns = np.random.default_rng(1).exponential(1e6, size=200_000)
    figures = latency_percentiles_ms(samples_ns)
    # 200,000 draws: the sampling sd is about 0.3% of p50 and p90 and 0.5% of p99.
    assert figures["mean_ms"] == pytest.approx(1.0, rel=0.01)
    assert figures["p50_ms"] == pytest.approx(math.log(2), rel=0.015)
    assert figures["p90_ms"] == pytest.approx(math.log(10), rel=0.015)
    assert figures["p99_ms"] == pytest.approx(math.log(100), rel=0.02)


def test_throughput_of_calls_of_fixed_duration():
    # 250 calls of exactly 2 ms, 8 actions each: 500 calls/s, 4,000 actions/s, 0.5 s in all.
    figures = latency_figures(np.full(250, 2_000_000, dtype=np.int64), batch=8)
    assert figures["throughput_qps"] == pytest.approx(500.0)
    assert figures["actions_per_s"] == pytest.approx(4000.0)
    assert figures["total_host_wall_ms"] == pytest.approx(500.0)
    assert figures["p99_ms"] == figures["min_ms"] == 2.0
