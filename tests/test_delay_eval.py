"""Delay-aware closed-loop evaluation: the convention, the mechanics, and a trained policy that a slow board breaks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_train
from physai.deploy.delayed_evaluation import delay_steps, delayed_episode, evaluate_delays, jitter_ratios


def test_latency_becomes_control_steps_by_the_configured_convention():
    period = 20.0
    assert delay_steps(0.005, period, "synchronous") == 1   # a fast board still waits for the next tick
    assert delay_steps(20.0, period, "synchronous") == 1
    assert delay_steps(20.5, period, "synchronous") == 2
    assert delay_steps(0.0, period, "synchronous") == 0
    assert delay_steps(0.005, period, "asynchronous") == 0  # applied as soon as it is ready
    assert delay_steps(45.0, period, "asynchronous") == 2
    assert list(delay_steps(np.array([1.0, 30.0, 61.0]), period)) == [1, 2, 4]
    with pytest.raises(ValueError):
        delay_steps(1.0, period, "sometimes")


def test_jitter_follows_the_measured_distribution():
    relative = {"percentiles": [0.0, 50.0, 100.0], "latency_over_median": [0.5, 1.0, 3.0]}
    assert list(jitter_ratios(relative, np.array([0.0, 0.5, 0.75, 1.0]))) == [0.5, 1.0, 2.0, 3.0]
    assert list(jitter_ratios(None, np.array([0.2, 0.9]))) == [1.0, 1.0]


class _TickEnv:
    """Observation = tick index; records the action applied at every tick."""

    def __init__(self, steps: int = 8) -> None:
        self.steps, self.applied, self.t = steps, [], 0

    def reset(self, seed=None):
        self.t, self.applied = 0, []
        return np.array([0.0]), {}

    def step(self, action):
        self.applied.append(float(np.asarray(action).ravel()[0]))
        self.t += 1
        return np.array([float(self.t)]), 1.0, False, self.t >= self.steps, {}


def test_the_action_from_an_older_observation_is_applied_and_the_last_one_held():
    env, neutral = _TickEnv(), np.array([-1.0])
    total, used = delayed_episode(env, lambda obs: obs.copy(), 0, np.full(8, 2), neutral)
    assert env.applied == [-1, -1, 0, 1, 2, 3, 4, 5] and total == 8 and used == [2] * 8
    # Jitter: the action of tick 0 arrives at tick 3, after the one of tick 1 (arrived at 1): it is stale, dropped.
    delayed_episode(env, lambda obs: obs.copy(), 0, np.array([3, 0, 0, 5, 5, 5, 5, 5]), neutral)
    assert env.applied == [-1, 1, 2, 2, 2, 2, 2, 2]
    delayed_episode(env, lambda obs: obs.copy(), 0, np.zeros(8, dtype=int), neutral)
    assert env.applied == [0, 1, 2, 3, 4, 5, 6, 7]


def test_training_with_a_fixed_engine_delay_is_the_delay_that_delay_eval_imposes():
    """randomize_action_delay (training) and the delay_eval harness follow one convention: same returns."""
    import copy

    import gymnasium as gym

    import physai.envs  # noqa: F401  registers physai/<Task>-v0
    from physai.envs.registry import packaged_tasks

    nominal = copy.deepcopy(packaged_tasks()["physai/Reach2D-v0"])
    delayed = copy.deepcopy(nominal)
    delayed["events"]["action_delay"] = {"fn": "randomize_action_delay", "mode": "reset", "params": {"steps": [1, 1]}}
    harness_env, delayed_env = gym.make("physai/Reach2D-v0", task=nominal), gym.make("physai/Reach2D-v0", task=delayed)
    weights = np.random.default_rng(0).normal(size=(harness_env.observation_space.shape[0], 2))

    def act(obs):
        return np.tanh(obs @ weights).astype(np.float32)

    for seed in (3, 4):
        expected, _ = delayed_episode(harness_env, act, seed, np.ones(1000, dtype=np.int64), np.zeros(2, np.float32))
        obs, _ = delayed_env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = delayed_env.step(act(obs))
            total, done = total + float(reward), terminated or truncated
        assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    harness_env.close()
    delayed_env.close()


def test_the_stage_reports_every_device_beside_the_zero_delay_return(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    section, profile = summary["delay_eval"], summary["profile"]
    assert section["controller"] == "synchronous" and section["jitter"] is True
    assert section["control_period_ms"] == pytest.approx(profile["control_period_ms"])
    assert set(section["devices"]) == set(profile["devices"])
    for key, device in section["devices"].items():
        assert device["modeled"] is True
        assert device["latency_ms"] == pytest.approx(profile["devices"][key]["latency_ms"])
        assert device["delay_steps_mean"] >= 1 and device["nominal_delay_steps"] >= 1  # synchronous
        assert device["ci95_low"] <= device["mean_return"] <= device["ci95_high"]
        assert isinstance(device["solves_task"], bool) and device["source"]
    steps = [p["delay_steps"] for p in section["sweep"]]
    assert steps == list(range(len(steps))) and len(steps) >= 2
    # Zero delay through the edge runtime is the bundle's own evaluation, episode for episode, on shared seeds.
    bundle_eval = summary["bundle"]["eval"]
    shared = [s for s in bundle_eval["seeds"] if s in section["seeds"]]
    assert shared
    zero = dict(zip(section["seeds"], section["zero_delay"]["episode_returns"]))
    assert [zero[s] for s in shared] == pytest.approx(
        [r for s, r in zip(bundle_eval["seeds"], bundle_eval["episode_returns"]) if s in shared])
    # Devices whose delays coincide share a run: fewer simulator runs than sweep points plus devices.
    assert section["simulator_runs"] < len(steps) + len(section["devices"])
    assert (smoke_run / section["plot"]).stat().st_size > 0
    report = (smoke_run / "report" / "report.md").read_text()
    assert "## Delay-aware evaluation" in report and "Host model check" in report


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A cart-pole balance policy that solves the task (~20 s on 2 cores): the smoke budget does not."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_train([f"hydra.run.dir={run_dir}", "tracking=none", "pipeline.stages=[train,export]",
                        "algo.total_timesteps=50000", "evaluate.n_episodes=2", "export.fp16_variant=false",
                        "export.int8_variant=false"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def test_a_large_delay_costs_a_trained_policy_its_task(trained_run):
    from physai.edge.runtime import EdgePolicy
    from physai.train.evaluation import evaluation_seeds
    from physai.config.compose import build_task

    cfg = OmegaConf.load(trained_run / "config.yaml")
    task = build_task(cfg.env)
    policy = EdgePolicy.load(trained_run / "bundle")
    period = 1e3 / policy.control_rate_hz
    seeds = evaluation_seeds(0, cfg.evaluate.seed_offset, 3)
    latencies = {"fast_board": 0.01, "slow_board": 10.5 * period}
    section = evaluate_delays(task, policy.act, seeds, latencies, period, sweep_max_steps=0,
                              solved_threshold=task.solved_threshold)
    zero, fast, slow = section["zero_delay"], section["devices"]["fast_board"], section["devices"]["slow_board"]
    assert zero["solves_task"] is True
    assert slow["nominal_delay_steps"] == 11 and slow["delay_steps_mean"] == 11
    assert slow["mean_return"] <= zero["mean_return"] and slow["solves_task"] is False
    assert fast["delay_steps_mean"] == 1 and fast["solves_task"] is True
    asynchronous = evaluate_delays(task, policy.act, seeds, {"fast_board": 0.01}, period, controller="asynchronous",
                                   sweep_max_steps=0, solved_threshold=task.solved_threshold)
    assert asynchronous["devices"]["fast_board"]["episode_returns"] == zero["episode_returns"]
    assert asynchronous["simulator_runs"] == 1  # the 0-step board shares the zero-delay run
