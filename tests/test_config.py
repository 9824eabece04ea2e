"""Every config group composes, and bad values are refused with the key named."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from physai.config.compose import build_task
from omegaconf.errors import OmegaConfBaseException

from conftest import CONFIGS, compose_config
from physai.config import validate_config
from physai.core.errors import ConfigError


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["env", "algo", "pipeline", "tracking", "device", "experiment"])
def test_every_option_of_every_group_composes(group):
    options = _options(group)
    assert options, f"configs/{group} is empty"
    for option in options:
        overrides = [f"{group}={option}"] if group != "device" else [f"device=[{option}]"]
        if (group, option) == ("env", "gym"):
            overrides.append("env.id=Walker2d-v5")  # the generic option needs an id
        cfg = compose_config(overrides)
        validate_config(cfg)
        if group == "env":
            task = build_task(cfg.env)
            assert task.id == cfg.env.id


def test_every_preset_is_applied_to_its_algo_and_env():
    envs = set(_options("env"))
    for preset in _options("preset"):
        algo, env = preset.split("_", 1)
        if env in envs:  # <algo>_<env>: applied automatically
            cfg = compose_config([f"algo={algo}", f"env={env}"])
        else:  # <algo>_<env>_<variant>: chosen with preset=..., e.g. ppo_half_cheetah_batched
            env = max((e for e in envs if env.startswith(e + "_")), key=len, default=None)
            assert env is not None, f"preset {preset} names no env option"
            cfg = compose_config([f"algo={algo}", f"env={env}", f"preset={preset}"])
        validate_config(cfg)
        assert cfg.algo.name == algo
        # A misnamed preset file would be skipped silently (it is optional): prove this one applied.
        assert cfg.algo.tuned_for == cfg.env.id, preset
    assert compose_config(["algo=ppo", "env=hopper"]).algo.total_timesteps == 1_000_000


def test_a_preset_never_applies_to_another_env_id():
    cfg = compose_config(["env=inverted_pendulum", "env.id=Hopper-v5"])  # the pendulum's preset, Hopper's id
    with pytest.raises(ConfigError, match="tuned for InvertedPendulum-v5.*env=gym env.id=Hopper-v5"):
        validate_config(cfg)


def test_env_id_alone_routes_to_its_own_option_or_the_generic_one():
    from physai.run.cli import route_env_id

    assert route_env_id(["train.py", "env.id=Hopper-v5"]) == ["train.py", "env=hopper", "env.id=Hopper-v5"]
    assert route_env_id(["train.py", "env.id=Walker2d-v5"])[1] == "env=gym"
    assert route_env_id(["train.py", "env=hopper", "env.id=Hopper-v5"]) == ["train.py", "env=hopper",
                                                                             "env.id=Hopper-v5"]
    cfg = compose_config(route_env_id(["train.py", "env.id=Walker2d-v5"])[1:])
    validate_config(cfg)
    assert cfg.env.solved_threshold is None and cfg.algo.tuned_for is None


def test_default_config_names_the_documented_defaults():
    cfg = compose_config()
    assert cfg.env.id == "physai/CartpoleBalance-v0"
    assert cfg.algo.name == "ppo"
    assert cfg.tracking.mode == "offline"
    assert list(cfg.pipeline.stages) == ["train", "evaluate", "export", "profile", "delay_eval", "gate", "report"]
    assert set(cfg.device) == set(_options("device"))  # every target: profiling is cheap
    assert all(device.source for device in cfg.device.values())


@pytest.mark.parametrize("override, needle", [
    (["algo.n_env=4"], "Key 'n_env' not in 'PPOConfig'"),                       # typo'd key
    (["algo.n_envs=four"], "Value 'four' of type 'str' could not be converted to Integer"),
    (["algo=dqn"], "Could not find 'algo/dqn'"),                                # unknown algorithm
    (["env=walker9000"], "Could not find 'env/walker9000'"),                    # unknown env option
    (["algo.learning_rate=fast"], "could not be converted to Float"),
    (["tracking.project=[1,2]"], "project"),
])
def test_composition_refuses_unknown_keys_and_wrong_types(override, needle):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as info:
        compose_config(override)
    message = f"{info.value} {info.value.__cause__}"
    assert needle in message
    if "Could not find" in needle:
        assert "Available options" in message  # the fix: which options exist


@pytest.mark.parametrize("override, key", [
    (["algo.n_envs=0"], "algo.n_envs"),
    (["algo.learning_rate=-0.001"], "algo.learning_rate"),
    (["algo.gamma=1.5"], "algo.gamma"),
    (["algo.total_timesteps=0"], "algo.total_timesteps"),
    (["evaluate.n_episodes=1"], "evaluate.n_episodes"),
    (["profile.iterations=10"], "profile.iterations"),
    (["tracking.mode=sometimes"], "tracking.mode"),
    (["algo.activation=swish"], "algo.activation"),
    (["algo.batch_size=100000"], "algo.batch_size"),
    (["algo=sac", "algo.tau=0"], "algo.tau"),
    (["algo=sac", "algo.critic_dropout=1.0"], "algo.critic_dropout"),
    (["+algo.critic_layer_norm=true"], "algo.critic_layer_norm is not a setting of PPO"),
    (["device.jetson_orin_nano.power_w=0"], "device.jetson_orin_nano.power_w"),
    (["+algo.n_env=4"], "algo.n_env is not a setting of PPO"),
    (["algo=sac", "algo.learning_starts=5000", "algo.total_timesteps=2000"], "algo.learning_starts=5000"),
])
def test_validation_refuses_out_of_range_values_naming_the_key(override, key):
    cfg = compose_config(override)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert key in str(info.value)


@pytest.mark.parametrize("stages", ["[train,deploy]", "[export,train]", "[]", "[report,train]"])
def test_a_stage_list_that_cannot_run_is_refused_naming_the_key(stages):
    from physai.run.pipeline import check_stages

    cfg = compose_config([f"pipeline.stages={stages}"])
    with pytest.raises(ConfigError, match="pipeline.stages"):
        check_stages(list(cfg.pipeline.stages))


def test_unknown_env_id_is_refused_with_a_suggestion():
    cfg = compose_config(["env.id=Hoper-v5"])
    with pytest.raises(ConfigError) as info:
        build_task(cfg.env)
    message = str(info.value)
    assert "env.id='Hoper-v5'" in message and "Hopper-v5" in message


def test_any_gymnasium_id_builds_a_task_with_the_spec_threshold():
    walker = build_task(compose_config(["env=gym", "env.id=Walker2d-v5"]).env)
    assert walker.solved_threshold is None  # gymnasium publishes none for Walker2d
    assert walker.control_rate_hz() == pytest.approx(125.0)
    hopper = build_task(compose_config(["env=gym", "env.id=Hopper-v5"]).env)
    assert hopper.solved_threshold == 3800.0
