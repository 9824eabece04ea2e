"""Every config group composes, and bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from physai.pipeline import build_task
from omegaconf.errors import OmegaConfBaseException

from conftest import CONFIGS, compose_config
from physai.config import validate_config
from physai.errors import ConfigError


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["env", "algo", "pipeline", "tracking", "device", "experiment"])
def test_every_option_of_every_group_composes(group):
    options = _options(group)
    assert options, f"configs/{group} is empty"
    for option in options:
        cfg = compose_config([f"{group}={option}"] if group != "device" else [f"device=[{option}]"])
        validate_config(cfg)
        if group == "env":
            task = build_task(cfg.env)
            assert task.id == cfg.env.id


def test_every_preset_composes_with_its_algo_and_env():
    for preset in _options("preset"):
        algo, env = preset.split("_", 1)
        cfg = compose_config([f"algo={algo}", f"env={env}"])
        validate_config(cfg)
        assert cfg.algo.name == algo


def test_default_config_names_the_documented_defaults():
    cfg = compose_config()
    assert cfg.env.id == "InvertedPendulum-v5"
    assert cfg.algo.name == "ppo"
    assert cfg.tracking.mode == "offline"
    assert list(cfg.pipeline.stages) == ["train", "evaluate", "export", "profile", "gate", "report"]
    assert set(cfg.device) == {"host_cpu", "jetson_orin_nano"}
    assert all(device.source for device in cfg.device.values())


@pytest.mark.parametrize("override, key", [
    (["algo.n_env=4"], "n_env"),                      # typo'd key
    (["algo.n_envs=four"], "n_envs"),                 # wrong type
    (["algo=dqn"], "algo"),                           # unknown algorithm
    (["env=walker9000"], "env"),                      # unknown env preset
    (["algo.learning_rate=fast"], "learning_rate"),
    (["tracking.project=[1,2]"], "project"),
])
def test_composition_refuses_unknown_keys_and_wrong_types(override, key):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as info:
        compose_config(override)
    assert key in str(info.value) or key in str(info.value.__cause__)


@pytest.mark.parametrize("override, key", [
    (["algo.n_envs=0"], "algo.n_envs"),
    (["algo.learning_rate=-0.001"], "algo.learning_rate"),
    (["algo.gamma=1.5"], "algo.gamma"),
    (["algo.total_timesteps=0"], "algo.total_timesteps"),
    (["evaluate.n_episodes=1"], "evaluate.n_episodes"),
    (["profile.iterations=10"], "profile.iterations"),
    (["tracking.mode=sometimes"], "tracking.mode"),
    (["algo.activation=swish"], "algo.activation"),
    (["pipeline.stages=[train,deploy]"], "pipeline.stages"),
    (["pipeline.stages=[export,train]"], "pipeline.stages"),
    (["pipeline.stages=[]"], "pipeline.stages"),
    (["algo.batch_size=100000"], "algo.batch_size"),
    (["algo=sac", "algo.tau=0"], "algo.tau"),
    (["device.jetson_orin_nano.power_w=0"], "device.jetson_orin_nano.power_w"),
])
def test_validation_refuses_out_of_range_values_naming_the_key(override, key):
    cfg = compose_config(override)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert key in str(info.value)


def test_unknown_env_id_is_refused_with_a_suggestion():
    cfg = compose_config(["env.id=Hoper-v5"])
    with pytest.raises(ConfigError) as info:
        build_task(cfg.env)
    message = str(info.value)
    assert "env.id='Hoper-v5'" in message and "Hopper-v5" in message


def test_any_gymnasium_id_works_where_a_preset_does():
    cfg = compose_config(["env.id=Walker2d-v5"])
    task = build_task(cfg.env)
    assert task.solved_threshold is None or task.solved_threshold > 0
    assert task.control_rate_hz() == pytest.approx(125.0)
