"""physai bench sim measures the engine beside its real peers, on the same work, with the spread."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import run_cli
from physai.bench.sim import PhysicsReplay, target_checks
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import build_spec
from physai.envs.vector import PhysaiVectorEnv
from physai.run.cli import main

TINY = ["--envs", "4", "--threads", "1,2", "--seconds", "0.1", "--rounds", "2", "--ppo-timesteps", "0"]


def test_bench_sim_runs_every_peer_but_envpool_interleaved_with_the_spread(tmp_path):
    result = run_cli(["bench", "sim", "--task", "physai_hopper", *TINY, "--no-envpool", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["peers"]["gymnasium"] == "Hopper-v5" and figures["peers"]["identical"] is True
    one, two = figures["points"]
    assert (one["num_envs"], one["threads"], two["threads"]) == (4, 1, 2)
    # gymnasium's wrappers are measured once per size (Sync is single-threaded, Async one process per env).
    assert set(one["contenders"]) == {"physai", "bare rollout", "gymnasium Sync", "gymnasium Async"}
    assert set(two["contenders"]) == {"physai", "bare rollout"}
    for contender in one["contenders"].values():
        assert contender["rounds"] == 2 and contender["min"] <= contender["median"] <= contender["max"]
        assert contender["physics_steps_per_s"] == pytest.approx(4 * contender["median"])  # Hopper: frame skip 4
    assert one["contenders"]["gymnasium Async"]["threads"] == 4
    assert (tmp_path / "sim_scaling_physai_hopper.png").stat().st_size > 1000


def test_a_task_without_a_gymnasium_twin_is_measured_against_its_single_env_in_gymnasiums_wrappers(tmp_path):
    result = run_cli(["bench", "sim", "--task", "cartpole_balance", *TINY, "--no-envpool", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["peers"] == {"identical": False, "gymnasium": "physai/CartpoleBalance-v0",
                                "gymnasium_frame_skip": 2, "envpool": None}


@pytest.mark.skipif(importlib.util.find_spec("envpool") is None,
                    reason="EnvPool comes with the bench extra: pip install -e '.[bench]'")
def test_envpool_steps_the_identical_gymnasium_task_on_the_threads_it_is_given(tmp_path):
    result = run_cli(["bench", "sim", "--task", "physai_half_cheetah", *TINY, "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for point in figures["points"]:
        envpool = point["contenders"]["EnvPool"]
        assert envpool["threads"] == point["threads"] and envpool["median"] > 0
        assert point["ratio_vs_envpool_physics_steps"] > 0


def test_bare_rollout_redoes_the_physics_the_engine_did_since_its_last_round():
    """The ceiling is the same work: each replayed step gives the physics result the engine's own step had."""
    venv = PhysaiVectorEnv(build_spec(**packaged_task_configs()["physai_half_cheetah"]["task"]), 4, seed=0, nthread=1)
    venv.reset(seed=0)
    engine, actions = venv.engine, np.random.default_rng(0).uniform(-1, 1, size=(7, 4, 6))
    replay, physics = PhysicsReplay(engine), []

    def engine_steps(batch):
        for action in batch:
            replay.record(lambda: venv.step(action))
            physics.append(engine._state_out[:, -1].copy())  # the physics result, before resets and events

    try:
        engine_steps(actions[:4])
        for i in range(6):  # a round longer than the steps recorded cycles through them
            replay.replay(i)
            np.testing.assert_array_equal(replay.state_out[:, -1], physics[i % 4])
        engine_steps(actions[4:])
        for i in range(3):  # the next round redoes only the steps made since the last one began
            replay.replay(i)
            np.testing.assert_array_equal(replay.state_out[:, -1], physics[4 + i])
    finally:
        venv.close()


def _point(n, threads, physai, bare, envpool=None):
    contenders = {"physai": {"median": physai, "threads": threads}, "bare rollout": {"median": bare}}
    if envpool is not None:
        contenders["EnvPool"] = {"median": envpool}
    return {"num_envs": n, "threads": threads, "contenders": contenders, "fraction_of_bare_rollout": physai / bare}


def test_targets_are_judged_by_the_issues_rules_on_hand_built_figures():
    points = [_point(64, 1, 900, 1000, envpool=1000), _point(64, 2, 1700, 1750, envpool=1600),
              _point(256, 1, 1000, 1000, envpool=900), _point(256, 2, 950, 1000, envpool=900)]
    checks = {c["target"]: c for c in target_checks("physai_half_cheetah", points, {"envpool": "x", "identical": True})}
    assert checks["physai >= EnvPool at 64 envs, 1 thread(s)"]["met"] is False
    assert checks["physai >= EnvPool at 64 envs, 1 thread(s)"]["value"] == pytest.approx(0.9)
    assert checks["physai >= EnvPool at 64 envs, 2 thread(s)"]["met"] is True
    assert checks["physai >= 95% of bare rollout at 64 envs, 1 thread(s)"]["met"] is False
    assert checks["physai >= 95% of bare rollout at 64 envs, 2 thread(s)"]["value"] == pytest.approx(1700 / 1750)
    assert checks["a second thread is never slower than one, 256 envs"]["met"] is False
    assert checks["a second thread is never slower than one, 64 envs"]["value"] == pytest.approx(1700 / 900)
    cartpole = {c["target"] for c in target_checks("cartpole_balance", points, {"envpool": "x", "identical": False})}
    assert "physai >= 85% of bare rollout at 256 envs, 1 thread(s)" in cartpole
    assert not any("EnvPool" in target for target in cartpole)  # a similar model is no identical work


def test_markdown_prints_the_readme_table_from_a_saved_result(tmp_path, capsys):
    point = _point(64, 1, 35_000, 37_000, envpool=31_000)
    for figures in point["contenders"].values():
        figures.update(min=figures["median"] - 1000, max=figures["median"] + 500)
    (tmp_path / "sim.json").write_text(json.dumps({"points": [point]}))
    assert main(["bench", "sim", "--markdown", str(tmp_path / "sim.json")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "| 64 | 1 | 35.0k (34-36) | 1 | 37.0k (36-38) | 31.0k (30-32) | – | – | 95% |"
