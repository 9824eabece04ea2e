"""The training benchmarks at toy budgets, with real parts: wall-clock to a return (physai vs the stock RL
Zoo recipe on gymnasium's HalfCheetah) and edge-case robustness (nominal SAC, prompted MBPO, SAC with
the scenario as domain randomization)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from physai.bench.jobs import JobStore, run_jobs
from physai.bench.robustness import ARMS, analyze_scenario, arm_overrides, bench_robustness, PLANS
from physai.bench.time_to_return import bench_time_to_return
from physai.core.errors import ConfigError
from physai.core.stats import mean_ci95


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_time_to_return_scores_both_arms_by_the_first_evaluation_at_the_target(tmp_path):
    # A target below any return: both arms reach it at their first evaluation and stop there.
    low = bench_time_to_return(["zoo", "physai"], seed=0, budget=20_000, eval_every=1024, eval_episodes=1,
                               target=-1e9, out_dir=tmp_path, torch_threads=1,
                               overrides={"physai": ["algo.n_steps=64"]}, command="pytest")
    for name, record in low["arms"].items():
        first = record["curve"][0]
        assert len(record["curve"]) == 1 and record["steps_to_target"] == first["steps"] >= 1024, name
        assert record["seconds_to_target"] == first["seconds"] > 0
        assert record["steps"] < 20_000  # stopped at the target, not at the budget
    # The zoo arm is the stock recipe on gymnasium's own env; physai's is the batched twin with its preset.
    assert low["arms"]["zoo"]["n_envs"] == 1 and low["arms"]["physai"]["n_envs"] == 16
    assert low["wall_clock_ratio"] == pytest.approx(low["arms"]["physai"]["seconds_to_target"]
                                                    / low["arms"]["zoo"]["seconds_to_target"])
    saved = json.loads((tmp_path / "time_to_return.json").read_text())
    assert saved["target"] == -1e9 and (tmp_path / "time_to_return.png").stat().st_size > 0
    # A target above any return: never reached, every evaluation of the budget recorded, no ratio.
    high = bench_time_to_return(["physai"], seed=0, budget=2048, eval_every=1024, eval_episodes=1, target=1e9,
                                out_dir=None, torch_threads=1, overrides={"physai": ["algo.n_steps=64"]})
    record = high["arms"]["physai"]
    assert record["steps_to_target"] is None and record["seconds_to_target"] is None
    assert [p["steps"] for p in record["curve"]] == [1024, 2048] and "wall_clock_ratio" not in high
    seconds = [p["seconds"] for p in record["curve"]]
    assert seconds[0] < seconds[1] <= record["training_seconds"]


def _record(scenario, nominal, physics=0, kicked=0):
    return {"scenario_returns": [scenario], "nominal_returns": [nominal], "steps_in_scenario_physics": physics,
            "steps_in_kicked_episodes": kicked}


def test_robustness_targets_on_hand_built_results():
    records = {"nominal": [_record(50, 110), _record(60, 112), _record(55, 108)],
               "prompted": [_record(70, 109), _record(75, 112), _record(72, 108)],
               "randomized": [_record(68, 100, 300, 1000), _record(71, 104, 320, 1000), _record(70, 101, 310, 1000)],
               "unprompted": [_record(60, 110), _record(62, 111), _record(61, 109)]}
    result = analyze_scenario(records, margin=10.0)
    assert result["prompted_minus_nominal_on_scenario"]["mean"] == pytest.approx((20 + 15 + 17) / 3)
    assert result["prompted_minus_nominal_on_nominal"] == mean_ci95([-1, 0, 0])
    assert result["prompted_minus_randomized_on_scenario"]["mean"] == pytest.approx((2 + 4 + 2) / 3)
    assert result["prompted_minus_unprompted_on_scenario"]["mean"] == pytest.approx((10 + 13 + 11) / 3)
    assert result["targets"] == {"prompted_beats_nominal_on_scenario": True, "prompted_keeps_nominal_return": True,
                                 "prompted_matches_randomized_with_fewer_edge_steps": True}
    # A gain below the margin, a nominal loss beyond the CI half-width, and (c) ahead under the scenario.
    records["prompted"] = [_record(58, 100), _record(66, 103), _record(60, 99)]
    assert not any(analyze_scenario(records, margin=10.0)["targets"].values())


def test_robustness_arms_differ_only_in_their_experience():
    plan = PLANS["car_lane/low_friction_push"]
    nominal, prompted, randomized, unprompted = (arm_overrides(arm, "car_lane/low_friction_push", plan)
                                                 for arm in ARMS)
    assert nominal == randomized and "algo=sac" in nominal
    # The prompted arm is MBPO on the SAC preset of the same env, prompted by the same scenario; its
    # control differs only in the prompt's share of branches.
    assert {"algo=mbpo", "preset=sac_car_lane", "scenario=car_lane/low_friction_push",
            "algo.prompt_share=0.5", "synthetic.world_model.use_context=true"} <= set(prompted)
    assert [o for o in prompted if o != "algo.prompt_share=0.5"] == [o for o in unprompted
                                                                      if o != "algo.prompt_share=0.0"]


@pytest.mark.slow  # trains every arm of the robustness benchmark end to end (about 15 s); its analysis is tested on hand-built curves
def test_bench_robustness_trains_every_arm_and_stages_the_scenario(tmp_path, capsys):
    toy = {"budget": 1100, "eval_episodes": 2, "mbpo": {"rollout_batch": 200, "model_train_every": 100}}
    # The SAC arms first, alone: kept in the work folder, nothing analyzed or written to the results folder.
    assert bench_robustness(["cartpole_balance/heavy_pole_push"], [0, 1], tmp_path, workers=1,
                            plans={"cartpole_balance/heavy_pole_push": toy}, command="pytest",
                            work_dir=tmp_path / "work", arms=["randomized", "nominal"]) is None
    assert not (tmp_path / "robustness.json").exists() and len(list((tmp_path / "work").glob("*.json"))) == 4
    record = bench_robustness(["cartpole_balance/heavy_pole_push"], [0, 1], tmp_path, workers=1,
                              plans={"cartpole_balance/heavy_pole_push": toy}, command="pytest",
                              work_dir=tmp_path / "work")
    saved = json.loads((tmp_path / "robustness.json").read_text())
    runs = saved["runs"]["cartpole_balance/heavy_pole_push"]
    for arm in ARMS:
        assert [r["real_steps"] for r in runs[arm]] >= [1100, 1100], arm
        assert all(len(r["scenario_returns"]) == len(r["nominal_returns"]) == 2 for r in runs[arm])
    # Only the randomized arm spends real steps on the edge case: its kicks land in every episode, and
    # some of its 16 envs drew a pole 1.3-1.6x heavier (the hull of 0.7-1.3 and the prompt's range).
    assert all(r["steps_in_kicked_episodes"] == r["real_steps"] for r in runs["randomized"])
    assert all(r["steps_in_kicked_episodes"] == r["steps_in_scenario_physics"] == 0
               for r in runs["nominal"] + runs["prompted"] + runs["unprompted"])
    assert runs["randomized"][0]["trained_on"]["context"] == {"mass_scale/pole": [0.7, 1.6]}
    # The prompted arm made synthetic branches from the prompt.
    assert all(r["model_based"]["prompt"] == "heavy_pole_push" and r["model_based"]["synthetic_prompted"] > 0
               for r in runs["prompted"])
    assert all(r["model_based"]["prompt"] is None and r["model_based"]["synthetic_prompted"] == 0
               for r in runs["unprompted"])
    result = saved["scenarios"]["cartpole_balance/heavy_pole_push"]
    assert result["margin"] == pytest.approx(0.1 * 450)  # 10% of the solved threshold, fixed by rule
    expected = np.mean([np.mean(r["scenario_returns"]) for r in runs["prompted"]])
    assert result["arms"]["prompted"]["scenario_return"]["mean"] == pytest.approx(expected)
    assert (tmp_path / "robustness.png").stat().st_size > 0 and record["seeds"] == [0, 1]
    # Run again on the same work folder: every run is read back, none trained, the analysis unchanged.
    again = bench_robustness(["cartpole_balance/heavy_pole_push"], [0, 1], tmp_path / "again", workers=1,
                             plans={"cartpole_balance/heavy_pole_push": toy}, command="pytest",
                             work_dir=tmp_path / "work")
    assert record["runs_resumed"] == 4 and again["runs_resumed"] == len(ARMS) * 2
    assert again["scenarios"] == json.loads(json.dumps(record["scenarios"]))
    # The README's tables come back from the saved JSON alone.
    from physai.run.cli import main

    capsys.readouterr()
    assert main(["bench", "robustness", "--markdown", str(tmp_path / "robustness.json")]) == 0
    assert "| `cartpole_balance/heavy_pole_push` | (b0) MBPO, unprompted (control) |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--seeds", "100"], "at least 2 distinct seeds"),
    (["--scenarios", "cartpole_balance/nope"], "'cartpole_balance/nope', which has no benchmark plan"),
    (["--arms", "nominal,dreamed"], "choose one or more of nominal, prompted, randomized, unprompted"),
    (["--arms", "nominal", "--work", ""], "its runs must be kept: give --work"),
])
def test_robustness_bad_arguments_fail_before_anything_trains(argv, says, tmp_path, capsys):
    from physai.run.cli import main

    assert main(["bench", "robustness", "--out", str(tmp_path), *argv]) != 0
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@dataclasses.dataclass(frozen=True)
class _ToyJob:
    name: str
    seed: int


def test_a_benchmark_killed_part_way_trains_only_the_jobs_it_lacks_when_run_again(tmp_path):
    jobs = [_ToyJob("a", 0), _ToyJob("a", 1), _ToyJob("b", 0)]
    trained, records = [], {}

    def run_one(job, events, fail_on=None):
        if job == fail_on:
            raise RuntimeError("killed")
        trained.append(job)
        # A diverged evaluation is NaN, and comes back from the store as NaN.
        return {"return": float(job.seed) + len(job.name), "curve": [np.float64(1.0), np.nan]}

    store = JobStore(tmp_path / "work")
    with pytest.raises(RuntimeError, match="killed"):
        run_jobs(jobs, lambda job, events: run_one(job, events, fail_on=jobs[2]), 1, print,
                 lambda job, record: records.update({job: record}), store)
    assert trained == jobs[:2]
    trained.clear()
    resumed = run_jobs(jobs, run_one, 1, print, lambda job, record: records.update({job: record}), store)
    assert resumed == 2 and trained == [jobs[2]]
    assert {job: record["return"] for job, record in records.items()} == {
        job: float(job.seed) + len(job.name) for job in jobs}
    assert all(record["curve"][0] == 1.0 and np.isnan(record["curve"][1]) for record in records.values())
    # A damaged record is named, with the remedy, and nothing is trained over it.
    damaged = next((tmp_path / "work").glob("*.json"))
    damaged.write_text("{")
    trained.clear()
    with pytest.raises(ConfigError, match=f"{damaged.name}.*delete that file"):
        run_jobs(jobs, run_one, 1, print, lambda job, record: None, store)
    assert trained == []
