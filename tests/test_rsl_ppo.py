"""algo=rsl_ppo: rsl-rl's PPO trains on the batched engine, and what the later stages load is what it trained."""

from __future__ import annotations

import contextlib
import io
import json
import types
import zipfile

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from conftest import compose_config
from physai.config import validate_config
from physai.config.compose import build_task
from physai.core.errors import ConfigError
from physai.run.tracking import NullTracker
from physai.train.checkpoints import CHECKPOINT_DIR, FINAL_NAME, CheckpointError
from physai.train.rsl_env import rsl_rl_process_state, runner_config
from physai.train.rsl_ppo import RslPPO, check_rsl_ppo, train_rsl_ppo
from physai.train.sb3 import load_checkpoint, read_curve, train_policy

TINY = ["algo=rsl_ppo", "experiment=smoke", "algo.total_timesteps=1024", "algo.n_envs=16", "algo.n_steps=16"]


def _rsl_networks(algo, state_file, obs_dim: int, num_actions: int):
    """rsl-rl's actor and critic rebuilt from a checkpoint's rsl_state.pt, independently of physai's copy."""
    from rsl_rl.algorithms import PPO

    env = types.SimpleNamespace(num_envs=4, num_actions=num_actions)
    obs = TensorDict({"policy": torch.zeros(4, obs_dim)}, batch_size=[4])
    with contextlib.redirect_stdout(io.StringIO()), rsl_rl_process_state():
        alg = PPO.construct_algorithm(obs, env, runner_config(algo), "cpu")
    alg.load(torch.load(state_file, weights_only=True), None, strict=True)
    alg.eval_mode()
    return alg


def test_the_policy_later_stages_load_acts_and_values_as_rsl_rl_trained_it(tmp_path, one_torch_thread):
    cfg = compose_config(TINY)
    validate_config(cfg)
    task = build_task(cfg.env)
    run_dir = tmp_path / "run"
    figures = train_rsl_ppo(task, cfg.algo, 0, run_dir, NullTracker(), resume=False)
    assert figures["timesteps"] == 1024 and figures["episodes"] > 0
    final = run_dir / CHECKPOINT_DIR / FINAL_NAME
    model = load_checkpoint(cfg.algo, final, run_dir=run_dir, task=task)  # the evaluate/export stages' loader
    assert type(model) is RslPPO and model.num_timesteps == 1024
    alg = _rsl_networks(cfg.algo, final / RslPPO.RSL_STATE_FILE, model.observation_space.shape[0],
                        model.action_space.shape[0])
    # The empirical normalization learned something, so folding it into the first layer is exercised.
    assert not torch.allclose(alg.actor.obs_normalizer.mean, torch.zeros_like(alg.actor.obs_normalizer.mean))
    obs = np.random.default_rng(0).normal(scale=2.0, size=(256, model.observation_space.shape[0])).astype(np.float32)
    with torch.no_grad():
        expected_action = alg.actor(TensorDict({"policy": torch.from_numpy(obs)}, batch_size=[256])).numpy()
        expected_value = alg.critic(TensorDict({"policy": torch.from_numpy(obs)}, batch_size=[256])).numpy()
        mean = model.policy.get_distribution(torch.from_numpy(obs)).distribution.mean.numpy()
        value = model.policy.predict_values(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(mean, expected_action, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value, expected_value, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.policy.log_std.detach().numpy(),
                               alg.actor.distribution.std_param.detach().log().numpy(), rtol=1e-6)
    # SB3's deterministic prediction is that mean within the action bounds, as the engine would clip it.
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], np.clip(expected_action, -1, 1),
                               rtol=1e-4, atol=1e-5)


def test_checkpoints_do_not_change_what_is_trained(tmp_path, one_torch_thread):
    """Writing a checkpoint (building SB3's carrier seeds its generators) leaves rsl-rl's draws alone, and
    model.zip does not pickle rsl-rl's state (it has its own file)."""
    finals = []
    for every in (256, 1024):
        cfg = compose_config([*TINY, f"algo.checkpoint_every_steps={every}"])
        run_dir = tmp_path / str(every)
        train_rsl_ppo(build_task(cfg.env), cfg.algo, 0, run_dir, NullTracker(), resume=False)
        finals.append(torch.load(run_dir / CHECKPOINT_DIR / FINAL_NAME / RslPPO.RSL_STATE_FILE, weights_only=True))
        with zipfile.ZipFile(run_dir / CHECKPOINT_DIR / FINAL_NAME / "model.zip") as archive:
            assert "rsl_state" not in json.loads(archive.read("data"))
    assert len(list((tmp_path / "256" / CHECKPOINT_DIR).glob("step_*"))) == 3
    for name, weights in finals[0]["actor_state_dict"].items():
        assert torch.equal(weights, finals[1]["actor_state_dict"][name]), name


def test_training_with_rsl_ppo_leaves_sb3s_nan_checks_on(tmp_path, one_torch_thread):
    """rsl-rl turns torch.distributions' argument checks off process-wide; SB3 reports a NaN policy output
    through them, so a process that trains both (physai bench trainers) must get them back."""
    cfg = compose_config([*TINY, "algo.total_timesteps=256"])
    train_rsl_ppo(build_task(cfg.env), cfg.algo, 0, tmp_path / "run", NullTracker(), resume=False)
    with pytest.raises(ValueError, match="invalid values"):
        torch.distributions.Normal(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_an_rsl_ppo_run_continues_from_its_checkpoint(tmp_path, one_torch_thread):
    cfg = compose_config(TINY)
    task = build_task(cfg.env)
    run_dir = tmp_path / "run"
    train_rsl_ppo(task, cfg.algo, 0, run_dir, NullTracker(), resume=False)
    first = read_curve(run_dir / "train_curve.csv")
    longer = compose_config([*TINY[:-3], "algo.total_timesteps=2048", *TINY[-2:]])
    figures = train_rsl_ppo(task, longer.algo, 0, run_dir, NullTracker(), resume=True)
    assert figures["resumed_from_step"] == 1024 and figures["timesteps"] == 2048
    curve = read_curve(run_dir / "train_curve.csv")
    assert curve[:len(first)] == first and curve[-1]["timesteps"] > 1024  # the curve goes on
    state = torch.load(run_dir / CHECKPOINT_DIR / FINAL_NAME / RslPPO.RSL_STATE_FILE, weights_only=True)
    assert state["iteration"] == 2048 // (16 * 16)
    # An SB3 run's checkpoint is not continued as rsl-rl's, nor the other way round.
    sb3_cfg = compose_config(["experiment=smoke", "algo.total_timesteps=256", "algo.n_steps=128"])
    sb3_dir = tmp_path / "sb3"
    sb3_dir.mkdir()
    train_policy(task, sb3_cfg.algo, 0, sb3_dir, NullTracker(), resume=False)
    with pytest.raises(CheckpointError, match="not written by algo=rsl_ppo"):
        train_rsl_ppo(task, cfg.algo, 0, sb3_dir, NullTracker(), resume=True)


@pytest.mark.parametrize("overrides, says", [
    (["env=half_cheetah"], "gymnasium id; choose a physai task"),
    (["env=cartpole_balance_pixels"], "camera images"),
    (["algo.normalize_reward=true"], "algo.normalize_reward=false"),
    (["evaluate.interval_steps=512"], "evaluate.interval_steps=null"),
    (["algo.net_arch=[]"], "at least one hidden layer"),
    (["algo.batch_size=100"], r"does not divide a rollout .* = 256\); .* algo.batch_size=128"),
    pytest.param(["algo.device=cuda"], "finds no CUDA device on this machine; set algo.device=cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_what_rsl_ppo_cannot_train_is_refused_before_training(overrides, says):
    cfg = compose_config([*TINY, *overrides])
    with pytest.raises(ConfigError, match=says):
        check_rsl_ppo(cfg, build_task(cfg.env))


def test_the_trainer_benchmark_gives_both_arms_the_same_settings():
    from omegaconf import OmegaConf

    from physai.bench.trainers import SHARED_KEYS, arm_configs
    from physai.config.schema import PPOConfig

    arms = arm_configs("quadruped_velocity", 4096)
    rsl, sb3 = (OmegaConf.to_container(arms[name].algo, resolve=True) for name in ("rsl-rl PPO", "SB3 PPO"))
    assert {key: rsl[key] for key in SHARED_KEYS} == {key: sb3[key] for key in SHARED_KEYS}
    assert rsl["schedule"] == "fixed"  # the adaptive learning rate would change the work, not only its speed
    # SB3's other settings are its schema's defaults: nothing leaks in from a preset tuned for another recipe.
    defaults = OmegaConf.to_container(OmegaConf.structured(PPOConfig))
    assert {k: v for k, v in sb3.items() if k not in SHARED_KEYS and k != "tuned_for"} == \
        {k: v for k, v in defaults.items() if k not in SHARED_KEYS and k != "tuned_for"}


@pytest.mark.slow  # compiles Warp's kernels on the CPU device when its cache is cold (about 40 s)
def test_rsl_ppo_trains_on_the_warp_backend(tmp_path, one_torch_thread):
    cfg = compose_config([*TINY, "env.backend=warp"])
    task = build_task(cfg.env)
    figures = train_rsl_ppo(task, cfg.algo, 0, tmp_path / "run", NullTracker(), resume=False)
    assert figures["timesteps"] == 1024 and figures["episodes"] > 0
    curve = read_curve(tmp_path / "run" / "train_curve.csv")
    assert all(np.isfinite(row["episode_return"]) for row in curve)


def test_the_trainer_benchmark_refuses_what_rsl_ppo_cannot_train_before_anything_runs(tmp_path, capsys):
    from physai.run.cli import main

    assert main(["bench", "trainers", "--tasks", "cartpole_balance,nope", "--out", str(tmp_path)]) != 0
    assert "--tasks names ['nope']" in capsys.readouterr().err
    assert main(["bench", "trainers", "--tasks", "cartpole_balance_pixels", "--out", str(tmp_path)]) != 0
    assert "camera images" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
