"""The synthetic benchmark's analysis on hand-built curves whose answers are worked out by hand.

``physai bench synthetic`` spends half an hour training; what it reports (steps to reach the reference,
``real_steps_ratio`` and their 95% CIs) comes from ``first_reach`` and ``analyze_task``, checked here on
curves small enough to score on paper.
"""

from __future__ import annotations

import math

import pytest

from physai.bench.synthetic import PLANS, _plot, analyze_task, first_reach

NAN = math.nan
T95_2DOF = 4.303  # two-sided 95% Student t, 2 degrees of freedom (three seeds), from any t table


# ----- first_reach -------------------------------------------------------------------------------
@pytest.mark.parametrize("returns, target, expected", [
    ([-5.0, -3.0, -1.0, 0.0], -1.0, 200),     # reaching the target exactly counts
    ([-5.0, -3.0, -1.5, -1.1], -1.0, None),   # never reached
    ([2.0, -3.0, -1.0, 0.0], -1.0, 0),        # reached at the first checkpoint (step 0, before training)
    ([-5.0, 0.0, -5.0, -5.0], -1.0, 100),     # reached, then lost: the first crossing is what counts
    ([NAN, NAN, -0.5, -2.0], -1.0, 200),      # a NaN checkpoint (a diverged evaluation) never reaches
    ([NAN, NAN, NAN, NAN], -1.0, None),
    ([-5.0, -3.0, -1.0, 0.0], NAN, None),     # a NaN reference is never reached
])
def test_first_reach_on_hand_built_curves(returns, target, expected):
    assert first_reach([0, 100, 200, 300], returns, target) == expected


# ----- analyze_task ------------------------------------------------------------------------------
def _records(curves: list[list[float]], steps: list[int]) -> list[dict]:
    return [{"seed": seed, "curve": [{"steps": s, "return": r} for s, r in zip(steps, curve)]}
            for seed, curve in enumerate(curves)]


SAC_STEPS = [0, 500, 1000]
MBPO_STEPS = [0, 100, 200, 300, 400]
# SAC's three seeds end at 90, 100, 110: the reference is 100 (95% CI 100 +- 4.303 * 10 / sqrt(3)).
# Their mean is already 100 at step 500, so SAC itself first reaches the reference there.
SAC = [[0.0, 90.0, 90.0], [0.0, 100.0, 100.0], [0.0, 110.0, 110.0]]
# MBPO's seeds first reach 100 at 200, 300 (and lose it again at 400), 200; their mean
# (0, 56.7, 101.7, 98.3, 106.7) crosses at 200, dips below at 300 and is best at 400.
MBPO = [[0.0, 50.0, 100.0, 120.0, 130.0], [0.0, 80.0, 95.0, 105.0, 90.0], [0.0, 40.0, 110.0, 70.0, 100.0]]


def _analyze(sac=SAC, mbpo=MBPO, sac_steps=SAC_STEPS, mbpo_steps=MBPO_STEPS):
    return analyze_task("pendulum", PLANS["pendulum"], _records(sac, sac_steps), _records(mbpo, mbpo_steps))


def test_analysis_on_hand_built_curves():
    result = _analyze()
    assert result["sac_budget_steps"] == 1000 and result["mbpo_budget_steps"] == 400 and result["seeds"] == 3
    assert result["reference_return"] == pytest.approx(100.0)
    final = result["sac_final_return"]
    assert final["mean"] == pytest.approx(100.0) and final["std"] == pytest.approx(10.0)
    assert (final["ci95_low"], final["ci95_high"]) == pytest.approx((100 - T95_2DOF * 10 / math.sqrt(3),
                                                                     100 + T95_2DOF * 10 / math.sqrt(3)))
    assert result["mbpo_steps_to_reach"] == 200
    assert result["mbpo_steps_to_reach_per_seed"] == [200, 300, 200] and result["seeds_reached"] == 3
    # Per-seed steps 200, 300, 200: mean 233.3, sample std sqrt(((-100/3)^2 * 2 + (200/3)^2) / 2) = 57.735.
    half = T95_2DOF * 57.735027 / math.sqrt(3)
    ci = result["mbpo_steps_to_reach_ci95"]
    assert ci["mean"] == pytest.approx(700 / 3) and ci["n"] == 3
    assert (ci["ci95_low"], ci["ci95_high"]) == pytest.approx((700 / 3 - half, 700 / 3 + half))
    assert result["real_steps_ratio"] == pytest.approx(0.2)  # 200 real steps against SAC's 1,000
    ratio_ci = result["real_steps_ratio_ci95"]
    assert (ratio_ci["mean"], ratio_ci["ci95_low"], ratio_ci["ci95_high"]) == pytest.approx(
        (0.7 / 3, (700 / 3 - half) / 1000, (700 / 3 + half) / 1000))
    assert result["sac_steps_to_reach"] == 500
    assert result["real_steps_ratio_vs_sac_first_reach"] == pytest.approx(0.4)  # 200 / 500
    assert result["mbpo_best_return"] == pytest.approx(320 / 3) and result["mbpo_best_return_at_steps"] == 400
    assert result["mbpo_final_return"]["mean"] == pytest.approx(320 / 3)
    assert result["curves"]["mbpo"]["mean"] == pytest.approx([0.0, 170 / 3, 305 / 3, 295 / 3, 320 / 3])
    assert result["curves"]["sac"]["steps"] == SAC_STEPS


def test_analysis_when_mbpo_never_reaches_the_reference():
    never = [[0.0, 50.0, 60.0, 70.0, 99.0], [0.0, 80.0, 95.0, 99.5, 90.0], [0.0, 40.0, 98.0, 70.0, 99.0]]
    result = _analyze(mbpo=never)
    assert result["mbpo_steps_to_reach"] is None and result["real_steps_ratio"] is None
    assert result["mbpo_steps_to_reach_per_seed"] == [None, None, None] and result["seeds_reached"] == 0
    assert result["mbpo_steps_to_reach_ci95"] is None and result["real_steps_ratio_ci95"] is None
    assert result["real_steps_ratio_vs_sac_first_reach"] is None
    # The best it got instead: the seed means are 0, 56.7, 84.3, 79.8, 96.
    assert result["mbpo_best_return"] == pytest.approx(96.0) and result["mbpo_best_return_at_steps"] == 400


def test_analysis_when_one_seed_never_reaches():
    # Seed 2 never gets to 100 (its best is 99.9).
    result = _analyze(mbpo=[MBPO[0], MBPO[1], [0.0, 40.0, 99.9, 70.0, 90.0]])
    assert result["mbpo_steps_to_reach_per_seed"] == [200, 300, None] and result["seeds_reached"] == 2
    # (100 + 95 + 99.9) / 3 = 98.3: the mean does not cross at 200; (120 + 105 + 70) / 3 = 98.3 at 300;
    # (130 + 90 + 90) / 3 = 103.3 at 400.
    assert result["mbpo_steps_to_reach"] == 400 and result["real_steps_ratio"] == pytest.approx(0.4)
    # A CI over the seeds that reached would hide the one that did not: none is given.
    assert result["mbpo_steps_to_reach_ci95"] is None and result["real_steps_ratio_ci95"] is None


def test_analysis_when_mbpo_reaches_at_its_first_checkpoint():
    # A task SAC barely learns: MBPO's untrained policy already scores the reference at step 0.
    flat_sac = [[9.0, 10.0, 10.0], [11.0, 10.0, 10.0], [10.0, 10.0, 10.0]]
    early = [[10.0, 10.0, 10.0, 10.0, 10.0], [10.0, 9.0, 9.0, 9.0, 9.0], [10.0, 11.0, 11.0, 11.0, 11.0]]
    result = _analyze(sac=flat_sac, mbpo=early)
    assert result["reference_return"] == pytest.approx(10.0)
    assert result["mbpo_steps_to_reach"] == 0 and result["real_steps_ratio"] == 0.0
    assert result["mbpo_steps_to_reach_per_seed"] == [0, 0, 0]
    ci = result["mbpo_steps_to_reach_ci95"]
    assert (ci["mean"], ci["ci95_low"], ci["ci95_high"]) == (0.0, 0.0, 0.0)  # every seed at 0: no spread
    assert result["sac_steps_to_reach"] == 0
    # SAC also reached it at step 0: a ratio against 0 steps is undefined, so none is given.
    assert result["real_steps_ratio_vs_sac_first_reach"] is None


def test_analysis_uses_only_the_checkpoints_every_seed_has():
    # Seed 1 was also evaluated at 150 (an extra checkpoint): the seed means use the shared grid only.
    records = _records(MBPO, MBPO_STEPS)
    records[1]["curve"].insert(2, {"steps": 150, "return": 1000.0})
    result = analyze_task("pendulum", PLANS["pendulum"], _records(SAC, SAC_STEPS), records)
    assert result["curves"]["mbpo"]["steps"] == MBPO_STEPS
    assert result["mbpo_steps_to_reach"] == 200 and result["mbpo_steps_to_reach_per_seed"] == [200, 300, 200]


def test_analysis_skips_a_nan_checkpoint():
    # Seed 0's evaluation at 400 diverged (NaN): that checkpoint's seed mean is NaN and never reaches,
    # and the best return is the best finite seed mean, 101.7 at 200 (not the NaN).
    diverged = [[0.0, 50.0, 100.0, 120.0, NAN], MBPO[1], MBPO[2]]
    result = _analyze(mbpo=diverged)
    assert result["mbpo_steps_to_reach"] == 200 and result["mbpo_steps_to_reach_per_seed"] == [200, 300, 200]
    assert result["mbpo_best_return"] == pytest.approx(305 / 3) and result["mbpo_best_return_at_steps"] == 200
    # A SAC seed whose final evaluation is NaN leaves no reference: nothing is scored against it.
    result = _analyze(sac=[SAC[0], SAC[1], [0.0, 110.0, NAN]])
    assert math.isnan(result["reference_return"]) and result["mbpo_steps_to_reach"] is None
    assert result["real_steps_ratio"] is None and result["sac_steps_to_reach"] is None


def test_plot_draws_curves_with_a_nan_checkpoint(tmp_path):
    # The plot is drawn before synthetic.json is written: a NaN must not lose the run's figures.
    diverged = [[0.0, 50.0, 100.0, 120.0, NAN], MBPO[1], MBPO[2]]
    target = tmp_path / "curves.png"
    _plot({"pendulum": _analyze(mbpo=diverged)}, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
