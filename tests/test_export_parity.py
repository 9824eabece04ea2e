"""The ONNX bundle computes what SB3's deterministic ``predict`` computes, to 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from physai.edge import EdgePolicy
from physai.deploy.onnx_export import write_bundle
from physai.deploy.parity import random_observations
from physai.train.normalization import NORMALIZATION_FILE, load_obs_normalization, save_vecnormalize
from physai.train.sb3 import build_model, build_vec_env
from hydra.utils import instantiate


def _trained_briefly(algo: str, env: str, normalize: bool, steps: int = 600):
    overrides = [f"algo={algo}", f"env={env}", f"algo.normalize_obs={normalize}", "algo.n_envs=1"]
    if algo == "ppo":
        overrides += ["algo.n_steps=256", "algo.batch_size=64", "algo.n_epochs=1"]
    else:
        overrides += ["algo.learning_starts=100", "algo.batch_size=64", "algo.buffer_size=1000"]
    cfg = compose_config(overrides)
    task = instantiate(cfg.env)
    venv = build_vec_env(task, cfg.algo, seed=0)
    model = build_model(cfg.algo, venv, seed=0)
    model.learn(steps)  # moves weights and normalization statistics away from their initial values
    return model, venv


@pytest.mark.parametrize("algo, env, normalize", [
    ("ppo", "inverted_pendulum", True),
    ("ppo", "inverted_pendulum", False),
    ("sac", "pendulum", True),
    ("sac", "pendulum", False),
])
def test_bundle_matches_sb3_predict_on_1000_random_observations(tmp_path: Path, algo, env, normalize):
    model, venv = _trained_briefly(algo, env, normalize)
    obs_norm = None
    if normalize:
        save_vecnormalize(venv, tmp_path / NORMALIZATION_FILE)
        obs_norm = load_obs_normalization(tmp_path / NORMALIZATION_FILE)
        assert obs_norm is not None and not np.allclose(obs_norm.mean, 0.0)
    write_bundle(model, obs_norm, tmp_path / "bundle", opset=18, control_rate_hz=25.0, provenance={})
    observations = random_observations(model.observation_space, 1000, seed=1)
    model_input = observations if obs_norm is None else venv.normalize_obs(observations)
    expected, _ = model.predict(model_input, deterministic=True)
    actual = EdgePolicy.load(tmp_path / "bundle").act(observations)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) <= 1e-5
    single = EdgePolicy.load(tmp_path / "bundle").act(observations[0])
    assert np.max(np.abs(single - expected[0])) <= 1e-5


def test_discrete_policy_exports_the_argmax_action(tmp_path: Path):
    cfg = compose_config(["env.id=CartPole-v1", "algo.n_envs=1", "algo.n_steps=128", "algo.batch_size=64",
                          "algo.n_epochs=1"])
    task = instantiate(cfg.env)
    venv = build_vec_env(task, cfg.algo, seed=0)
    model = build_model(cfg.algo, venv, seed=0)
    model.learn(256)
    save_vecnormalize(venv, tmp_path / NORMALIZATION_FILE)
    obs_norm = load_obs_normalization(tmp_path / NORMALIZATION_FILE)
    write_bundle(model, obs_norm, tmp_path / "bundle", opset=18, control_rate_hz=50.0, provenance={})
    observations = random_observations(model.observation_space, 1000, seed=2)
    expected, _ = model.predict(venv.normalize_obs(observations), deterministic=True)
    actual = EdgePolicy.load(tmp_path / "bundle").act(observations)
    assert actual.dtype == np.int64
    np.testing.assert_array_equal(actual, expected)
