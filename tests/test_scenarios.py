"""Scenario prompts: the shipped library applies to its tasks; bad prompts are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from physai.envs.gym_task import GymTask
from physai.envs.spec import TaskError
from physai.run.pipeline import prepare
from physai.envs.registry import packaged_env_configs
from physai.synthetic.scenario import ScenarioError, Starts, resolve_scenario, sample_starts
from physai.synthetic.staging import stage_scenario
from physai.synthetic.trust import context_extrapolation
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


# ----- scenarios staged in the real simulator ----------------------------------------------------------
def _staged(env_option: str, scenario: str):
    cfg = compose_config([f"env={env_option}", f"scenario={env_option}/{scenario}"])
    task = _task(env_option)
    return task, *stage_scenario(task, resolve_scenario(cfg.scenario, cfg.env.id, *task.signal_names()))


def _qvel_per_step(task, seed: int, steps: int) -> np.ndarray:
    env = task.make()
    try:
        env.reset(seed=seed)
        engine = env.unwrapped.engine
        rows = [engine.qvel[0].copy()]
        for _ in range(steps):
            env.step(np.zeros(env.action_space.shape))
            rows.append(engine.qvel[0].copy())
        return np.array(rows), engine
    finally:
        env.close()


def test_a_staged_scenario_runs_its_physics_range_and_one_shove_per_episode():
    task, staged, record = _staged("cartpole_balance", "heavy_pole_push")
    assert record["context"] == {"mass_scale/pole": [1.3, 1.6]}
    for seed in range(5):  # every episode draws its pole from the scenario's range, not the training range
        env = staged.make()
        env.reset(seed=seed)
        assert 1.3 <= env.unwrapped.engine.physics_context["mass_scale/pole"][0] <= 1.6
        env.close()
    unkicked = staged.with_task_changes(events=task.task["events"])  # same physics, no shove
    kicked, engine = _qvel_per_step(staged, seed=3, steps=12)
    calm, _ = _qvel_per_step(unkicked, seed=3, steps=12)
    hinge = engine.model.joint("hinge").dofadr[0]
    apart = np.flatnonzero(np.abs(kicked - calm).max(axis=1) > 0)
    assert apart.size and 2 <= apart[0] <= 5  # the shove lands once, at a step of at_steps = [2, 5] ...
    jump = kicked[apart[0]] - calm[apart[0]]
    assert 0 < abs(jump[hinge]) <= 1.5 and np.count_nonzero(jump) == 1  # ... on the pole's hinge, within ±1.5
    jumps = np.abs(np.diff(kicked[:, hinge] - calm[:, hinge]))
    assert (jumps > 0.5 * abs(jump[hinge])).sum() == 1  # and never again in the episode


def test_a_velocimeter_kick_pushes_the_car_sideways_in_its_own_frame():
    task, staged, record = _staged("car_lane", "low_friction_push")
    assert [push["fn"] for kick in record["kicks"] for push in kick["pushes"]] == ["push_body_velocity"]
    unkicked = staged.with_task_changes(events=task.task["events"])
    kicked, engine = _qvel_per_step(staged, seed=5, steps=8)
    calm, _ = _qvel_per_step(unkicked, seed=5, steps=8)
    step = int(np.flatnonzero(np.abs(kicked - calm).max(axis=1) > 0)[0])
    assert 2 <= step <= 6
    env = staged.make()  # the chassis orientation at that step, to read the push in the car's frame
    env.reset(seed=5)
    for _ in range(step):
        env.step(np.zeros(env.action_space.shape))
    root = engine.model.joint("root")
    w, x, y, z = env.unwrapped.engine.qpos[0, root.qposadr[0] + 3:root.qposadr[0] + 7]
    env.close()
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    local = rotation.T @ (kicked[step] - calm[step])[root.dofadr[0]:root.dofadr[0] + 3]
    # The velocimeter column is scaled by 0.2, so the prompt's ±0.3 is ±1.5 m/s, all of it sideways.
    assert 0 < abs(local[1]) <= 1.5 and abs(local[0]) < 1e-9 and abs(local[2]) < 1e-9


@pytest.mark.parametrize("changes, message", [
    ({"perturbations": [{"name": "nudge", "observations": ["cart_pos"], "delta_range": [0, 0.1]}]},
     "perturbations.nudge on 'cart_pos': the simulator can push only joint-velocity columns"),
])
def test_a_scenario_the_simulator_cannot_stage_is_refused_naming_the_field(changes, message):
    task = _task("cartpole_balance")
    scenario = resolve_scenario(_scenario(**changes), "physai/CartpoleBalance-v0", *task.signal_names())
    with pytest.raises(ScenarioError, match=message):
        stage_scenario(task, scenario)


def test_only_a_physai_task_can_stage_a_scenario():
    task = GymTask(id="Pendulum-v1")
    scenario = resolve_scenario(_scenario(task="Pendulum-v1"), "Pendulum-v1", *task.signal_names())
    with pytest.raises(ScenarioError, match="only physai tasks"):
        stage_scenario(task, scenario)


@pytest.mark.parametrize("task_changes, message", [
    ({"events": {"shove": {"fn": "push_joints", "mode": "once", "params": {"joints": ["hinge"],
                                                                            "vel_range": [0, 1]}}}},
     r"events.shove.every_steps=\[0, 0\] must be \[low, high\]"),
    ({"context_ranges": {"mass_scale/pole": [0.0, 1.2]}}, "context_ranges.mass_scale/pole"),
])
def test_a_staged_task_definition_is_checked_like_any_other(task_changes, message):
    task = _task("cartpole_balance")
    with pytest.raises(TaskError, match=message):
        task.with_task_changes(**task_changes)


def test_a_scenario_beyond_the_real_datas_physics_is_flagged_with_the_distance():
    prompt = _scenario(context={"mass_scale/pole": [1.3, 1.6], "actuator_strength/push": [0.9, 1.0]})
    scenario = resolve_scenario(prompt, "physai/CartpoleBalance-v0", CARTPOLE_COLUMNS, CARTPOLE_CONTEXT)
    real = np.array([[0.8, 0.7], [1.2, 1.3], [1.0, 1.0]])  # columns: actuator_strength/push, mass_scale/pole
    flags = context_extrapolation(scenario, real, CARTPOLE_CONTEXT)
    assert flags["mass_scale/pole"]["real"] == [0.7, 1.3] and flags["mass_scale/pole"]["extrapolation"]
    assert flags["mass_scale/pole"]["outside_by"] == pytest.approx(0.3)
    assert flags["mass_scale/pole"]["outside_spans"] == pytest.approx(0.5)
    assert not flags["actuator_strength/push"]["extrapolation"] and flags["actuator_strength/push"]["outside_by"] == 0
    unrecorded = context_extrapolation(scenario, None, [])
    assert unrecorded["mass_scale/pole"]["extrapolation"] and unrecorded["mass_scale/pole"]["real"] is None


def test_a_kick_on_several_columns_lands_on_all_of_them_at_once():
    task = _task("cartpole_balance")
    kick = {"name": "both", "observations": ["velocities[0]", "velocities[1]"], "delta_range": [0.5, 1.0],
            "at_steps": [2, 5]}
    staged, record = stage_scenario(task, resolve_scenario(_scenario(perturbations=[kick]),
                                                           "physai/CartpoleBalance-v0", *task.signal_names()))
    assert [len(k["pushes"]) for k in record["kicks"]] == [2]
    kicked, _ = _qvel_per_step(staged, seed=1, steps=8)
    calm, _ = _qvel_per_step(staged.with_task_changes(events=task.task["events"]), seed=1, steps=8)
    first = np.flatnonzero(np.abs(kicked - calm).max(axis=1) > 0)[0]
    jump = kicked[first] - calm[first]
    assert np.all((jump >= 0.5) & (jump <= 1.0))  # both dofs (slider, hinge) pushed at the same step


def test_the_synthetic_pipeline_still_takes_a_gymnasium_id(tmp_path):
    prepare(compose_config(["env=pendulum", "pipeline=synthetic", "scenario=pendulum/hanging_kick"]), tmp_path / "run")
    with pytest.raises(ScenarioError, match="only physai tasks"):  # the edge-case pipeline needs the simulator
        prepare(compose_config(["env=pendulum", "pipeline=synthetic_edge_case", "scenario=pendulum/hanging_kick"]),
                tmp_path / "run")
