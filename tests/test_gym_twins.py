"""physai/HalfCheetah-v5, physai/Hopper-v5 and physai/Walker2d-v5 step the same MDP as gymnasium's own envs."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import physai.envs  # noqa: F401  registers physai/<Task>-v0
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_tasks
from physai.envs.spec import TaskError, build_spec

from conftest import compose_config

TWINS = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"]
# Hopper and Walker2d fall within a few dozen steps of full random actions; smaller ones keep them
# healthy longer, so the comparison covers both healthy and terminated steps.
ACTION_SCALE = {"HalfCheetah-v5": 1.0, "Hopper-v5": 0.4, "Walker2d-v5": 0.4}


def _spec(gym_id: str, **changes):
    task = copy.deepcopy(packaged_tasks()[f"physai/{gym_id}"])
    task.update(changes)
    return build_spec(**task)


def _gym_env(gym_id: str):
    return gym.make(gym_id).unwrapped  # no wrappers: it may be stepped past a termination here


def _assert_same_step(gym_id, step, physai_obs, physai_reward, physai_term, physai_qpos, physai_qvel, genv, out):
    obs, reward, terminated, _, _ = out
    where = f"{gym_id} step {step}"
    # physai's observations are float32: compare within its rounding, the float64 state to 1e-6 absolute.
    np.testing.assert_allclose(physai_obs, obs, rtol=1e-6, atol=1e-6, err_msg=where)
    np.testing.assert_allclose(physai_qpos, genv.data.qpos, rtol=0, atol=1e-6, err_msg=where)
    np.testing.assert_allclose(physai_qvel, genv.data.qvel, rtol=0, atol=1e-6, err_msg=where)
    assert abs(physai_reward - reward) <= 1e-6, where
    assert bool(physai_term) == bool(terminated), where


@pytest.mark.parametrize("gym_id", TWINS)
def test_a_batch_matches_gymnasium_step_for_step(gym_id):
    """Several envs in one batch, each against its own gymnasium env from the same start state."""
    num_envs, steps = 3, 50
    engine = BatchedEngine(_spec(gym_id), num_envs=num_envs, seed=1, nthread=1)
    genvs = [_gym_env(gym_id) for _ in range(num_envs)]
    for i, genv in enumerate(genvs):
        genv.reset(seed=i)
        genv.set_state(engine.qpos[i].copy(), engine.qvel[i].copy())
        np.testing.assert_allclose(engine.observe()[i], genv._get_obs(), rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(7)
    terminations = 0
    for step in range(1, steps + 1):
        actions = (ACTION_SCALE[gym_id] * rng.uniform(-1, 1, size=(num_envs, engine.num_actions))).astype(np.float32)
        out = engine.step(actions, autoreset=False)
        for i, genv in enumerate(genvs):
            _assert_same_step(gym_id, step, out["obs"][i], out["reward"][i], out["terminated"][i], engine.qpos[i],
                              engine.qvel[i], genv, genv.step(actions[i]))
        terminations += int(out["terminated"].sum())
        assert not out["truncated"].any()
    if gym_id != "HalfCheetah-v5":
        assert 0 < terminations < num_envs * steps, "the comparison should see healthy and unhealthy steps"


@pytest.mark.parametrize("gym_id", TWINS)
def test_one_env_carries_the_solver_warm_start_and_stays_identical_across_resets(gym_id):
    """gym.make's single env keeps each step's warm start, so it follows gymnasium bit for bit, far beyond
    the batch's horizon; a reset starts the solver cold again, as gymnasium's mj_resetData does."""
    env, genv = gym.make(f"physai/{gym_id}").unwrapped, _gym_env(gym_id)
    rng = np.random.default_rng(3)
    for episode, steps in enumerate((60, 150)):
        obs, _ = env.reset(seed=10 + episode)
        gobs, _ = genv.reset(seed=10 + episode)  # the same seed draws the same reset noise
        np.testing.assert_array_equal(env.engine.qpos[0], genv.data.qpos)
        np.testing.assert_array_equal(env.engine.qvel[0], genv.data.qvel)
        np.testing.assert_array_equal(obs, gobs.astype(np.float32))
        for step in range(1, steps + 1):
            action = (ACTION_SCALE[gym_id] * rng.uniform(-1, 1, size=env.action_space.shape)).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            gobs, greward, gterminated, _, _ = genv.step(action)
            np.testing.assert_array_equal(env.engine.qpos[0], genv.data.qpos, err_msg=f"{gym_id} step {step}")
            np.testing.assert_array_equal(env.engine.qvel[0], genv.data.qvel, err_msg=f"{gym_id} step {step}")
            np.testing.assert_array_equal(obs, gobs.astype(np.float32))
            assert abs(reward - greward) <= 1e-6 and terminated == gterminated and not truncated
    env.close()


@pytest.mark.parametrize("gym_id, qpos_kind, qvel_kind, scale", [
    ("HalfCheetah-v5", "uniform", "normal", 0.1),
    ("Hopper-v5", "uniform", "uniform", 5e-3),
    ("Walker2d-v5", "uniform", "uniform", 5e-3),
])
def test_reset_noise_has_gymnasiums_distribution_and_scale(gym_id, qpos_kind, qvel_kind, scale):
    engine = BatchedEngine(_spec(gym_id), num_envs=2000, seed=5, nthread=1)
    for name, noise, kind in (("qpos", engine.qpos - engine.model.qpos0, qpos_kind), ("qvel", engine.qvel, qvel_kind)):
        samples = noise.ravel() / scale  # ~18k draws; the bounds below are >= 6 standard errors wide
        assert abs(samples.mean()) < 0.05, name
        if kind == "uniform":  # U(-1, 1): bounded, std 1/sqrt(3) = 0.577; a unit normal has std 1
            assert np.abs(samples).max() <= 1.0, name
            assert abs(samples.std() - 1 / np.sqrt(3)) < 0.02, name
            assert abs(np.mean(np.abs(samples) > 0.5) - 0.5) < 0.03, name
        else:  # N(0, 1): std 1 and 31.7% beyond one std; U(-1, 1) has none
            assert abs(samples.std() - 1.0) < 0.03, name
            assert abs(np.mean(np.abs(samples) > 1.0) - 0.3173) < 0.025, name


def test_gymnasiums_env_checker_passes_and_actions_reach_the_motors_unchanged():
    env = gym.make("physai/HalfCheetah-v5")
    check_env(env.unwrapped, skip_render_check=True)
    engine = env.unwrapped.engine
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, size=6).astype(np.float32)
    env.step(action)
    np.testing.assert_array_equal(engine._control[0], np.tile(action.astype(np.float64), (5, 1)))
    assert env.unwrapped.dt == pytest.approx(0.05) and engine.spec.episode_steps == 1000
    env.close()


def test_the_episode_ends_by_truncation_at_1000_steps():
    engine = BatchedEngine(_spec("HalfCheetah-v5"), num_envs=2, seed=0, nthread=1)
    for _ in range(999):
        assert not engine.step(np.zeros((2, 6)))["truncated"].any()
    assert engine.step(np.zeros((2, 6)))["truncated"].all()


def test_terminate_when_unhealthy_can_be_switched_off():
    task = copy.deepcopy(packaged_tasks()["physai/Hopper-v5"])
    task["terminations"]["unhealthy"] = None
    engine = BatchedEngine(build_spec(**task), num_envs=2, seed=0, nthread=1)
    engine.qpos[:, 1] = 0.5  # below healthy z: no healthy reward, and no termination
    out = engine.step(np.zeros((2, 3)))
    assert not out["terminated"].any()
    assert np.allclose(out["reward"], (engine.qpos[:, 0] - engine.qpos_before_step[:, 0]) / engine.dt)


def test_an_mjcf_from_gymnasium_that_does_not_exist_is_named_with_the_choices():
    with pytest.raises(TaskError, match=r"mjcf='gymnasium:half_cheeta.xml' names no file.*gymnasium:half_cheetah.xml"):
        _spec("HalfCheetah-v5", mjcf="gymnasium:half_cheeta.xml")
    with pytest.raises(TaskError, match=r"unknown source 'dm_control'.*gymnasium:<file>"):
        _spec("HalfCheetah-v5", mjcf="dm_control:cheetah.xml")


@pytest.mark.parametrize("algo, twin, preset_id", [("ppo", "physai_half_cheetah", "HalfCheetah-v5"),
                                                   ("sac", "physai_half_cheetah", "HalfCheetah-v5"),
                                                   ("ppo", "physai_hopper", "Hopper-v5"),
                                                   ("sac", "physai_hopper", "Hopper-v5")])
def test_a_preset_tuned_for_gymnasiums_id_serves_its_batched_twin(algo, twin, preset_id):
    from physai.config import validate_config

    cfg = compose_config([f"algo={algo}", f"env={twin}"])
    validate_config(cfg)
    own = compose_config([f"algo={algo}", f"env={twin.removeprefix('physai_')}"])
    assert cfg.env.id == f"physai/{preset_id}" and cfg.algo.tuned_for == preset_id
    assert cfg.algo == own.algo
