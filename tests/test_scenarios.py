"""Scenario prompts: the shipped library applies to its tasks; bad prompts are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from physai.envs.gym_task import GymTask
from physai.envs.registry import packaged_env_configs
from physai.synthetic.scenario import ScenarioError, Starts, resolve_scenario, sample_starts
from conftest import CONFIGS, compose_config

LIBRARY = sorted((CONFIGS / "scenario").glob("*/*.yaml"))


def _task(env_option: str) -> GymTask:
    config = packaged_env_configs()[env_option]
    return GymTask(id=config["id"], task=config.get("task"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_scenario_composes_and_resolves_against_its_task(path: Path):
    env_option = path.parent.name
    cfg = compose_config([f"env={env_option}", f"scenario={env_option}/{path.stem}"])
    task = _task(env_option)
    scenario = resolve_scenario(cfg.scenario, cfg.env.id, *task.signal_names())
    assert scenario.name == path.stem and scenario.horizon >= 1


def test_library_has_edge_cases_for_the_car():
    names = {p.stem for p in LIBRARY if p.parent.name == "car_lane"}
    assert {"low_friction_push", "obstacle_late"} <= names


def _scenario(**changes):
    base = {"name": "probe", "task": "physai/CartpoleBalance-v0", "start": "real", "start_ranges": {},
            "context": {}, "perturbations": [], "horizon": 10, "branches": 8, "max_disagreement": 1.0}
    base.update(changes)
    return OmegaConf.create(base)


CARTPOLE_COLUMNS = ["cart_pos", "pole_angle[0]", "pole_angle[1]", "velocities[0]", "velocities[1]"]
CARTPOLE_CONTEXT = ["actuator_strength/push", "mass_scale/pole"]


@pytest.mark.parametrize("changes, message", [
    ({"context": {"mass_scale/pol": [1.0, 1.2]}}, "context.mass_scale/pol is not a physics context parameter"),
    ({"context": {"mass_scale/pole": [1.4, 1.2]}}, "low > high"),
    ({"context": {"mass_scale/pole": [-1.0, 1.2]}}, "must stay above 0"),
    ({"start_ranges": {"cart_position": [0, 1]}}, "start_ranges.cart_position is not a observation column"),
    ({"start": "ranges"}, "start=ranges needs start_ranges"),
    ({"task": "physai/CarLane-v0"}, "written for task 'physai/CarLane-v0'"),
    ({"perturbations": [{"name": "kick", "observations": ["velocities[1]"], "delta_range": [0, 1],
                         "at_steps": [3, 12]}]}, "perturbations.kick.at_steps=[3, 12]"),
    ({"perturbations": [{"name": "kick", "observations": ["speed"], "delta_range": [0, 1]}]},
     "perturbations.kick.observations.speed"),
    ({"start_ranges": {"cart_pos": ["a", 1]}}, "must be a [low, high] pair"),
])
def test_bad_scenarios_are_refused_naming_the_field(changes, message):
    with pytest.raises(ScenarioError) as info:
        resolve_scenario(_scenario(**changes), "physai/CartpoleBalance-v0", CARTPOLE_COLUMNS, CARTPOLE_CONTEXT)
    assert message in str(info.value) and "probe" in str(info.value)


def test_context_on_a_task_without_randomization_is_refused():
    with pytest.raises(ScenarioError, match="randomizes none"):
        resolve_scenario(_scenario(task="Pendulum-v1", context={"friction_scale": [0.5, 0.6]}), "Pendulum-v1",
                         ["obs[0]", "obs[1]", "obs[2]"], [])


def test_starts_follow_the_prompt():
    scenario = resolve_scenario(_scenario(start_ranges={"cart_pos": [0.5, 0.6]},
                                          context={"mass_scale/pole": [1.5, 1.6]}, branches=500),
                                "physai/CartpoleBalance-v0", CARTPOLE_COLUMNS, CARTPOLE_CONTEXT)
    rng = np.random.default_rng(0)
    real_obs = rng.normal(size=(100, 5)).astype(np.float32)
    real_context = np.ones((100, 2), np.float32)
    starts: Starts = sample_starts(scenario, rng, real_obs, real_context, np.arange(100, 200))
    assert ((starts.obs[:, 0] >= 0.5) & (starts.obs[:, 0] <= 0.6)).all()
    assert ((starts.context[:, 1] >= 1.5) & (starts.context[:, 1] <= 1.6)).all()
    assert (starts.context[:, 0] == 1.0).all()  # unnamed context keeps the real draw
    assert set(starts.parent_state_id) <= set(range(100, 200))
    # Columns the prompt leaves alone come from real states.
    assert np.isin(starts.obs[:, 3], real_obs[:, 3]).all()
