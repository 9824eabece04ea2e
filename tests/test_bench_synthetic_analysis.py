"""The synthetic benchmark's analysis on hand-built curves whose answers are worked out by hand.

``physai bench synthetic`` spends most of an hour training; what it reports (the reference, each arm's
steps to reach it, ``real_steps_ratio`` and their 95% CIs) comes from ``first_reach``, ``reference_return``
and ``analyze_task``, checked here on curves small enough to score on paper.
"""

from __future__ import annotations

import json
import math

import pytest

from physai.bench.synthetic import TaskPlan, _plot, analyze_task, first_reach, reference_return, steps_ratio

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


# ----- the reference and the ratio -----------------------------------------------------------------
def test_reference_is_the_final_return_less_a_band_of_the_span_to_random():
    # Pendulum-like: SAC ends at -150, a random policy scores -1,200; 5% of the 1,050 span is 52.5.
    assert reference_return(-150.0, -1200.0, 0.05) == pytest.approx(-202.5)
    assert reference_return(100.0, -100.0, 0.1) == pytest.approx(80.0)
    assert reference_return(500.0, 20.0, 0.0) == pytest.approx(500.0)  # no band: SAC's own final return


@pytest.mark.parametrize("steps, other_steps, other_budget, expected", [
    (200, 400, 4000, {"value": 0.5, "below": None}),
    (200, None, 400, {"value": None, "below": 0.5}),   # the other never got there: only an upper bound
    (None, 400, 400, {"value": None, "below": None}),  # MBPO never got there: no ratio
    (0, 0, 400, {"value": None, "below": None}),       # both at step 0: 0 / 0 is no ratio
])
def test_steps_ratio(steps, other_steps, other_budget, expected):
    assert steps_ratio(steps, {"steps_to_reach": other_steps}, other_budget) == expected


# ----- analyze_task ------------------------------------------------------------------------------
def _records(curves: list[list[float]], steps: list[int]) -> list[dict]:
    return [{"seed": seed, "curve": [{"steps": s, "return": r} for s, r in zip(steps, curve)]}
            for seed, curve in enumerate(curves)]


# The high-UTD arms run 400 real steps, SAC twice that; one grid of 200 steps for all; band 10%.
PLAN = TaskPlan(budget=400, eval_every=200, eval_episodes=2, reference_factor=2, band=0.1,
                mbpo={"gradient_steps": 20})
LONG, SHORT = [0, 200, 400, 600, 800], [0, 200, 400]
RANDOM = [-90.0, -110.0]  # the random policy's episodes: mean -100
# SAC's seeds end at 90, 100, 110 (mean 100): the reference is 100 - 0.1 * (100 - -100) = 80.
# Seed means 0, 50, 80, 93.3, 100 reach 80 at 400; per seed at 600, 400, 400.
SAC = [[0.0, 40.0, 70.0, 85.0, 90.0], [0.0, 60.0, 90.0, 95.0, 100.0], [0.0, 50.0, 80.0, 100.0, 110.0]]
# SAC at MBPO's UTD: means 0, 68.3, 80.7 reach at 400, but only seed 0 does on its own.
SAC_UTD = [[0.0, 70.0, 85.0], [0.0, 75.0, 78.0], [0.0, 60.0, 79.0]]
# DroQ-regularized SAC at MBPO's UTD: means 0, 79, 87.7 reach at 400; per seed at 200, 200, 400.
DROQ = [[0.0, 85.0, 90.0], [0.0, 82.0, 88.0], [0.0, 70.0, 85.0]]
# MBPO: means 0, 85, 85 reach at 200, every seed at 200.
MBPO = [[0.0, 85.0, 90.0], [0.0, 80.0, 70.0], [0.0, 90.0, 95.0]]


def _analyze(sac=SAC, sac_utd=SAC_UTD, mbpo=MBPO, droq=DROQ):
    return analyze_task("pendulum", PLAN, {"sac": _records(sac, LONG), "sac_utd": _records(sac_utd, SHORT),
                                           "droq": _records(droq, SHORT), "mbpo": _records(mbpo, SHORT)}, RANDOM)


def test_analysis_on_hand_built_curves():
    result = _analyze()
    assert result["seeds"] == 3 and result["budget_steps"] == 400 and result["reference_budget_steps"] == 800
    assert result["random_policy_return"] == pytest.approx(-100.0)
    final = result["sac_final_return"]
    assert final["mean"] == pytest.approx(100.0) and final["std"] == pytest.approx(10.0)
    assert (final["ci95_low"], final["ci95_high"]) == pytest.approx((100 - T95_2DOF * 10 / math.sqrt(3),
                                                                     100 + T95_2DOF * 10 / math.sqrt(3)))
    assert result["reference_return"] == pytest.approx(80.0)
    sac, sac_utd, mbpo = (result["arms"][a] for a in ("sac", "sac_utd", "mbpo"))
    assert (sac["utd"], sac_utd["utd"], mbpo["utd"]) == (1, 20, 20)
    assert (sac["budget_steps"], sac_utd["budget_steps"], mbpo["budget_steps"]) == (800, 400, 400)

    assert sac["steps_to_reach"] == 400 and sac["steps_to_reach_per_seed"] == [600, 400, 400]
    # Per seed 600, 400, 400: mean 466.7, sample std sqrt(((400/3)^2 + 2 * (200/3)^2) / 2) = 115.47.
    half = T95_2DOF * 115.470054 / math.sqrt(3)
    ci = sac["steps_to_reach_ci95"]
    assert (ci["mean"], ci["ci95_low"], ci["ci95_high"]) == pytest.approx((1400 / 3, 1400 / 3 - half,
                                                                           1400 / 3 + half))
    # Every arm's return at the common 400-step budget: SAC's seeds are at 70, 90, 80 there.
    assert sac["return_at_budget"]["mean"] == pytest.approx(80.0)
    assert sac["curve"]["mean"] == pytest.approx([0.0, 50.0, 80.0, 280 / 3, 100.0])

    assert sac_utd["steps_to_reach"] == 400 and sac_utd["steps_to_reach_per_seed"] == [400, None, None]
    assert sac_utd["seeds_reached"] == 1 and sac_utd["steps_to_reach_ci95"] is None  # no CI over a subset

    assert mbpo["steps_to_reach"] == 200 and mbpo["steps_to_reach_per_seed"] == [200, 200, 200]
    ci = mbpo["steps_to_reach_ci95"]
    assert (ci["mean"], ci["ci95_low"], ci["ci95_high"]) == (200.0, 200.0, 200.0)  # no spread
    assert mbpo["best_return"] == pytest.approx(85.0) and mbpo["best_return_at_steps"] == 200  # the first best
    assert mbpo["return_at_budget"]["mean"] == pytest.approx(85.0)

    droq = result["arms"]["droq"]
    assert droq["utd"] == 20 and droq["budget_steps"] == 400
    assert droq["steps_to_reach"] == 400 and droq["steps_to_reach_per_seed"] == [200, 200, 400]
    assert result["real_steps_ratio"] == {"sac": {"value": pytest.approx(0.5), "below": None},
                                          "sac_utd": {"value": pytest.approx(0.5), "below": None},
                                          "droq": {"value": pytest.approx(0.5), "below": None}}


def test_analysis_when_the_control_arm_never_reaches():
    flat = [[0.0, 70.0, 75.0], [0.0, 75.0, 78.0], [0.0, 60.0, 79.0]]  # means 0, 68.3, 77.3
    result = _analyze(sac_utd=flat)
    assert result["arms"]["sac_utd"]["steps_to_reach"] is None
    assert result["arms"]["sac_utd"]["best_return"] == pytest.approx(232 / 3)
    # MBPO's 200 steps against more than the control arm's 400: the ratio is below 0.5.
    assert result["real_steps_ratio"]["sac_utd"] == {"value": None, "below": pytest.approx(0.5)}


def test_analysis_when_mbpo_never_reaches():
    never = [[0.0, 50.0, 60.0], [0.0, 79.0, 79.9], [0.0, 40.0, 98.0]]  # means 0, 56.3, 79.3
    result = _analyze(mbpo=never)
    mbpo = result["arms"]["mbpo"]
    assert mbpo["steps_to_reach"] is None and mbpo["steps_to_reach_per_seed"] == [None, None, 400]
    assert result["real_steps_ratio"]["sac"] == {"value": None, "below": None}


def test_analysis_uses_only_the_checkpoints_every_seed_has():
    # Seed 1 was also evaluated at 100 (an extra checkpoint): the seed means use the shared grid only.
    records = _records(MBPO, SHORT)
    records[1]["curve"].insert(1, {"steps": 100, "return": 1000.0})
    result = analyze_task("pendulum", PLAN, {"sac": _records(SAC, LONG), "sac_utd": _records(SAC_UTD, SHORT),
                                             "mbpo": records}, RANDOM)
    assert result["arms"]["mbpo"]["curve"]["steps"] == SHORT
    assert result["arms"]["mbpo"]["steps_to_reach"] == 200


def test_analysis_skips_a_nan_checkpoint():
    # Seed 0's evaluation at 200 diverged (NaN): that checkpoint's seed mean is NaN and never reaches,
    # and the best return is the best finite seed mean.
    diverged = [[0.0, NAN, 90.0], MBPO[1], MBPO[2]]
    result = _analyze(mbpo=diverged)
    mbpo = result["arms"]["mbpo"]
    assert mbpo["steps_to_reach"] == 400 and mbpo["steps_to_reach_per_seed"] == [400, 200, 200]
    assert mbpo["best_return"] == pytest.approx(85.0) and mbpo["best_return_at_steps"] == 400
    # A SAC seed whose final evaluation is NaN leaves no reference: nothing is scored against it.
    result = _analyze(sac=[SAC[0], SAC[1], [0.0, 50.0, 80.0, 100.0, NAN]])
    assert math.isnan(result["reference_return"])
    assert all(arm["steps_to_reach"] is None for arm in result["arms"].values())


def test_plot_draws_curves_with_a_nan_checkpoint(tmp_path):
    # The plot is drawn before synthetic.json is written: a NaN must not lose the run's figures.
    target = tmp_path / "curves.png"
    _plot({"pendulum": _analyze(mbpo=[[0.0, NAN, 90.0], MBPO[1], MBPO[2]])}, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, says", [
    (["--seeds", "100,x"], "--seeds 'x' is not a whole number"),
    (["--seeds", "100"], "at least 2 distinct seeds"),
    (["--seeds", "100,100"], "at least 2 distinct seeds"),
    (["--tasks", "pendulum,walker"], "'walker', which has no benchmark plan"),
])
def test_bad_arguments_fail_before_anything_trains(argv, says, tmp_path, capsys):
    from physai.run.cli import main

    assert main(["bench", "synthetic", "--out", str(tmp_path), *argv]) != 0
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_markdown_tables_come_from_the_json_as_written(tmp_path, capsys):
    from physai.run.cli import main

    detail = _analyze()
    record = {"tasks_detail": {"pendulum": detail},
              "generation": {"pendulum": {"synthetic_per_s": 200_000.0, "fastest_simulator_path": "EnvPool 64",
                                          "generation_ratio": 2.5,
                                          "simulator": {"single env": {"median": 9_000.0, "min": 8_000.0,
                                                                       "max": 9_500.0},
                                                        "EnvPool 64": {"median": 80_000.0, "min": 79_000.0,
                                                                       "max": 81_000.0}}}}}
    path = tmp_path / "synthetic.json"
    path.write_text(json.dumps(record))
    assert main(["bench", "synthetic", "--markdown", str(path)]) == 0
    text = capsys.readouterr().out
    # The hand-built curves' figures: reference 80 from SAC's 100 at 800 steps and a random policy's -100;
    # SAC reaches it at 400 (per seed 600 / 400 / 400), the control arm and DroQ at 400, MBPO at 200.
    assert "| `pendulum` (20) | 80.0 (SAC's 100.0 [" in text and "less 10% of its span to random, -100.0)" in text
    assert ("| 400 (600 / 400 / 400) | 400 (400 / - / -) | 400 (200 / 200 / 400) | 200 (200 / 200 / 200) | "
            "0.50 | 0.50 | 0.50 |") in text
    assert "| `pendulum` | 200,000 | single env 9,000 [8,000, 9,500]; EnvPool 64 80,000 [79,000, 81,000] | " \
           "EnvPool 64 | 2.50x |" in text
    assert main(["bench", "synthetic", "--markdown", str(tmp_path / "none.json")]) != 0
    assert "does not exist" in capsys.readouterr().err
