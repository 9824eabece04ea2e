"""The lane-keeping car (physai/CarLane-v0) in real MuJoCo: driving, leaving the road, barrels, ice."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_tasks
from physai.envs.spec import TaskError, build_spec

ENV_ID = "physai/CarLane-v0"
FULL_THROTTLE_STRAIGHT = (1.0, 0.0)


def _task(**events) -> dict:
    """The packaged task, with some events' params replaced (None switches an event off)."""
    task = copy.deepcopy(packaged_tasks()[ENV_ID])
    for name, params in events.items():
        if params is None:
            task["events"][name] = None
        else:
            task["events"][name]["params"].update(params)
    return task


def _calm_task(**events) -> dict:
    """Start centered and straight, no gusts, dry patches: only what a test puts on the road."""
    base = {"gust": None, "start_pose": {"y_range": [0.0, 0.0], "yaw_range": [0.0, 0.0]},
            "patches": {"friction": [1.0, 1.0]}}
    return _task(**{**base, **events})


def _engine(task: dict, num_envs: int = 4, seed: int = 0) -> BatchedEngine:
    return BatchedEngine(build_spec(**task), num_envs=num_envs, seed=seed, nthread=1)


def _drive(engine: BatchedEngine, action, steps: int):
    actions = np.tile(np.asarray(action, dtype=np.float64), (engine.num_envs, 1))
    return [engine.step(actions, autoreset=False) for _ in range(steps)]


def _until_terminated(engine: BatchedEngine, action, steps: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """Per env: the step its episode terminated (-1: never), its reward-term sums and x there."""
    actions = np.tile(np.asarray(action, dtype=np.float64), (engine.num_envs, 1))
    ended_at = np.full(engine.num_envs, -1)
    terms = {name: np.zeros(engine.num_envs) for name in engine.reward_sums}
    x_end = np.full(engine.num_envs, np.nan)
    for step in range(steps):
        out = engine.step(actions, autoreset=False)
        newly = out["terminated"] & (ended_at < 0)
        if newly.any():
            ended_at[newly] = step
            x_end[newly] = engine.qpos[newly, 0]
            rows = np.isin(out["info"]["done_ids"], np.flatnonzero(newly))
            for name, sums in out["info"]["episode_terms"].items():
                terms[name][out["info"]["done_ids"][rows]] = sums[rows]
        if (ended_at >= 0).all():
            break
    return ended_at, terms, x_end


def test_driving_straight_down_an_empty_road_makes_progress_without_ending():
    engine = _engine(_calm_task(obstacles={"present": 0.0}))
    outs = _drive(engine, FULL_THROTTLE_STRAIGHT, 100)  # 5 s
    assert not any(out["terminated"].any() for out in outs)
    x, y = engine.qpos[:, 0], engine.qpos[:, 1]
    assert np.all(x > 20.0), x                      # ~6 m/s top speed after ~1.5 s of acceleration
    assert np.all(np.abs(y) < 0.2), y
    np.testing.assert_allclose(engine.reward_sums["progress"], x, atol=0.5)  # progress is meters driven
    assert np.all(engine.reward_sums["collision"] == 0) and np.all(engine.reward_sums["off_road"] == 0)
    engine.close()


def test_steering_hard_off_the_road_terminates_with_the_penalty():
    engine = _engine(_calm_task(obstacles={"present": 0.0}))
    ended_at, terms, _ = _until_terminated(engine, (0.5, 1.0), 80)  # half speed, full left lock
    assert (ended_at >= 0).all() and ended_at.max() < 60, ended_at  # off the road within 3 s
    np.testing.assert_allclose(terms["off_road"], -20.0)
    np.testing.assert_allclose(terms["collision"], 0.0)
    engine.close()


def test_obstacles_are_laid_out_per_env_per_seed_in_the_physics():
    task = _task()
    params = task["events"]["obstacles"]["params"]
    first, again, other = (_engine(task, num_envs=8, seed=s) for s in (0, 0, 1))
    layout = first.extras["obstacles"]
    assert layout.shape == (8, 4, 2)
    assert len({tuple(row.round(6).ravel()) for row in layout}) == 8          # every env its own road
    np.testing.assert_array_equal(layout, again.extras["obstacles"])          # same seed, same roads
    assert not np.array_equal(layout, other.extras["obstacles"])              # another seed, other roads
    on_road = layout[..., 0] > -100
    assert on_road.mean() > 0.5
    xs, ys = layout[..., 0], layout[..., 1]
    assert np.all((xs[on_road] >= params["x_range"][0]) & (xs[on_road] <= params["x_range"][1]))
    assert np.all((ys >= params["y_range"][0]) & (ys <= params["y_range"][1]))
    gaps = np.diff(xs, axis=1)[on_road[:, 1:] & on_road[:, :-1]]
    assert np.all(gaps >= params["min_gap"] - 1e-9)
    bodies = [first.id_of("body", b) for b in params["bodies"]]
    for i, model in enumerate(first.models):  # the physics has the barrels where the terms think they are
        np.testing.assert_array_equal(model.body_pos[bodies, :2], layout[i])
    # a new episode is a new road
    before = layout[0].copy()
    first.reset_envs(np.array([0]))
    assert not np.array_equal(before, first.extras["obstacles"][0])
    for engine in (first, again, other):
        engine.close()


def test_driving_into_a_barrel_is_a_collision_and_a_real_contact():
    barrel_ahead = {"bodies": ["obstacle0"], "x_range": [10.0, 10.0], "y_range": [0.0, 0.0], "min_gap": 0.0,
                    "present": 1.0}
    engine = _engine(_calm_task(obstacles=barrel_ahead), num_envs=2)
    ended_at, terms, x_end = _until_terminated(engine, FULL_THROTTLE_STRAIGHT, 80)
    assert (ended_at >= 0).all(), ended_at
    np.testing.assert_allclose(terms["collision"], -20.0)
    # the bumper (1.0 m ahead of the center) meets the barrel (radius 0.4) at x = 8.6
    assert np.all(np.abs(x_end - 8.6) < 0.15), x_end
    engine.close()

    # Without the termination the barrel still stops the car: it is a contact, not a reward rule.
    task = _calm_task(obstacles=barrel_ahead)
    task["terminations"]["collision"] = None
    engine = _engine(task, num_envs=2)
    _drive(engine, FULL_THROTTLE_STRAIGHT, 100)
    assert np.all(engine.qpos[:, 0] < 8.7), engine.qpos[:, 0]
    assert np.all(engine.reward_sums["collision"] < -20.0)  # in contact for many steps
    engine.close()


def test_an_icy_patch_under_the_wheels_takes_away_grip():
    def launch(mu: float) -> tuple[float, float]:
        patch_at_start = {"bodies": ["patch0"], "x_range": [-3.0, 3.0], "y_range": [0.0, 0.0],
                          "friction": [mu, mu]}
        engine = _engine(_calm_task(obstacles={"present": 0.0}, patches=patch_at_start), num_envs=1)
        assert engine.extras["patch_friction"][0, 0] == mu
        _drive(engine, FULL_THROTTLE_STRAIGHT, 10)  # 0.5 s of full throttle from rest
        ground_speed = float(engine.qvel[0, 0])
        wheel_speed = float(engine.sensordata[0, engine.sensor("rear_wheel_speed")][0]) * 0.2  # radius
        engine.close()
        return ground_speed, wheel_speed

    dry_speed, dry_wheel = launch(1.0)
    ice_speed, ice_wheel = launch(0.05)
    assert ice_speed < 0.5 * dry_speed, (ice_speed, dry_speed)
    assert ice_wheel > 2.0 * ice_speed           # the wheels spin on ice ...
    assert abs(dry_wheel - dry_speed) < 0.3      # ... and roll on asphalt


@pytest.mark.parametrize("event, params, message", [
    ("obstacles", {"x_range": [100.0, 12.0]}, "events.obstacles .*x_range.*low > high"),
    ("obstacles", {"bodies": ["obstacle0", "cone9"]}, "events.obstacles: .*body 'cone9'"),
    ("obstacles", {"x_range": [12.0, 20.0]}, "events.obstacles .*too short for 4 obstacles"),
    ("patches", {"friction": [-0.1, 0.2]}, "events.patches .*negative"),
    ("motor_strength", {"scale_range": [1.2, 0.8]}, "events.motor_strength .*low > high"),
])
def test_bad_layout_parameters_fail_when_the_task_is_built(event, params, message):
    with pytest.raises(TaskError, match=message) as info:
        _engine(_task(**{event: params}), num_envs=2)
    assert "car_lane" in str(info.value)


def test_layouts_get_per_env_models_even_without_startup_randomization():
    no_startup = _task(chassis_mass=None, motor_strength=None, steering_strength=None, road_grip=None)
    engine = _engine(no_startup, num_envs=2)
    assert engine.models[0] is not engine.models[1]
    obstacle = engine.id_of("body", "obstacle0")
    assert not np.array_equal(engine.models[0].body_pos[obstacle], engine.models[1].body_pos[obstacle])
