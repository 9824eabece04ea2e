"""The batched engine: gymnasium and SB3 APIs, determinism, NaN isolation, per-env physics, clear errors."""

from __future__ import annotations

import copy
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import physai.envs  # noqa: F401  registers physai/<Task>-v0
from physai.envs.backends import RolloutBackend
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_tasks
from physai.envs.spec import TaskError, Term, build_spec
from physai.envs.vector import PhysaiVectorEnv
from physai.train.vec_env import PhysaiSB3VecEnv, make_training_vec_env

TASK_IDS = sorted(packaged_tasks())


def _task(env_id: str) -> dict:
    return copy.deepcopy(packaged_tasks()[env_id])


def _rendering_available() -> bool:
    import ctypes.util
    import os

    return os.environ.get("MUJOCO_GL") == "egl" or bool(ctypes.util.find_library("OSMesa"))


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_every_task_is_a_checked_gymnasium_env(env_id):
    env = gym.make(env_id)
    # The render check needs an off-screen GL backend (libosmesa6 on CPU machines).
    check_env(env.unwrapped, skip_render_check=not _rendering_available())
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_vector_env_declares_autoreset_and_steps_a_batch(env_id):
    venv = PhysaiVectorEnv(build_spec(**_task(env_id)), num_envs=8, seed=0, nthread=2)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)  # flat float32 rows, or a camera task's dict of batches
    obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert reward.shape == (8,) and terminated.dtype == bool and truncated.dtype == bool
    venv.close()


def test_same_seed_same_trajectories():
    spec = build_spec(**_task("physai/CartpoleBalance-v0"))

    def trajectory(seed: int) -> np.ndarray:
        engine = BatchedEngine(spec, num_envs=16, seed=seed, nthread=2)
        actions = np.random.default_rng(123).uniform(-1, 1, size=(300, 16, engine.num_actions))
        rows = [engine.step(a)["obs"] for a in actions]
        engine.close()
        return np.stack(rows)

    np.testing.assert_array_equal(trajectory(7), trajectory(7))
    assert not np.array_equal(trajectory(7), trajectory(8))


def test_startup_events_give_every_env_its_own_physics():
    engine = BatchedEngine(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=8, seed=0)
    pole = engine.id_of("body", "pole")
    masses = np.array([m.body_mass[pole] for m in engine.models])
    assert len(set(masses.round(9))) == 8
    assert np.all((masses >= 0.07 - 1e-9) & (masses <= 0.13 + 1e-9))


@pytest.mark.parametrize("steps_before", [0, 1, 5])
def test_an_exploding_env_is_reset_alone_flagged_and_truncated(steps_before):
    engine = BatchedEngine(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=4, seed=0)
    reference = BatchedEngine(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=4, seed=0)
    for _ in range(steps_before):
        last = engine.step(np.zeros((4, 1)))["obs"]
        reference.step(np.zeros((4, 1)))
    engine.qvel[2] = np.nan  # even on the first step of an episode, where MuJoCo's own reset is easiest to miss
    out = engine.step(np.zeros((4, 1)))
    clean = reference.step(np.zeros((4, 1)))
    assert out["info"]["exploded"].tolist() == [False, False, True, False]
    assert out["truncated"][2] and not out["terminated"][2]  # the simulator failed, not the policy
    assert np.isfinite(out["obs"]).all() and np.isfinite(out["reward"]).all()
    assert engine.episode_step[2] == 0 and engine.episode_step[0] == steps_before + 1
    np.testing.assert_array_equal(out["obs"][[0, 1, 3]], clean["obs"][[0, 1, 3]])  # the batch never notices
    if steps_before:
        np.testing.assert_array_equal(out["info"]["final_obs"][0], last[2])  # the last real observation


def test_single_env_and_vector_env_repeat_with_the_same_seed():
    def single(seed: int) -> np.ndarray:
        env = gym.make("physai/CartpoleBalance-v0")
        obs = [env.reset(seed=seed)[0]]
        actions = np.random.default_rng(1).uniform(-1, 1, size=(200, 1))
        obs += [env.step(a)[0] for a in actions]
        env.close()
        return np.stack(obs)

    np.testing.assert_array_equal(single(3), single(3))
    assert not np.array_equal(single(3), single(4))

    def vector(seed: int) -> np.ndarray:
        venv = PhysaiVectorEnv(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=4, nthread=2)
        rows = [venv.reset(seed=seed)[0]]
        rows += [venv.step(np.full((4, 1), 0.5))[0] for _ in range(100)]
        venv.close()
        return np.stack(rows)

    np.testing.assert_array_equal(vector(3), vector(3))


def test_actions_map_onto_each_actuators_ctrlrange():
    task = _task("physai/CarLane-v0")
    engine = BatchedEngine(build_spec(**task), num_envs=1, seed=0)
    engine.step(np.array([[1.0, -1.0]]))
    ranges = engine.model.actuator_ctrlrange[engine.actuator_ids]
    np.testing.assert_allclose(engine._control[0, 0, engine.actuator_ids], [ranges[0, 1], ranges[1, 0]])
    engine.step(np.array([[5.0, 0.0]]))  # out of range: clipped to the range, never beyond
    assert engine._control[0, 0, engine.actuator_ids[0]] == pytest.approx(ranges[0, 1])


def test_a_bad_interval_event_fails_at_build_not_when_it_first_fires():
    task = _task("physai/CartpoleBalance-v0")
    task["events"]["nudge"]["params"]["vel_range"] = [0.3, -0.3]
    with pytest.raises(TaskError, match="events.nudge.*low > high"):
        BatchedEngine(build_spec(**task), num_envs=2, seed=0)


def test_sensor_noise_bursts_raise_observation_noise_for_a_while():
    task = _task("physai/CartpoleBalance-v0")
    task["events"] = {"burst": {"fn": "sensor_noise_burst", "mode": "interval", "every_steps": [1, 1],
                                "params": {"std": 1.0, "duration_steps": [3, 3]}}}
    noisy = BatchedEngine(build_spec(**task), num_envs=8, seed=0)
    quiet = BatchedEngine(build_spec(**_task("physai/CartpoleBalance-v0") | {"events": {}}), num_envs=8, seed=0)
    gap = np.abs(noisy.step(np.zeros((8, 1)))["obs"] - quiet.step(np.zeros((8, 1)))["obs"])
    assert gap.mean() > 0.3


def test_sb3_adapter_reports_episodes_like_monitor():
    venv = PhysaiSB3VecEnv(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=4, seed=0)
    venv.reset()
    episodes = []
    for _ in range(600):
        _, _, dones, infos = venv.step(np.ones((4, 1)))  # full push: the pole falls quickly
        for done, info in zip(dones, infos):
            if done:
                episodes.append(info)
    assert episodes
    assert {"terminal_observation", "episode", "TimeLimit.truncated"} <= set(episodes[0])
    assert {"upright", "centered", "effort"} == set(episodes[0]["episode"]["terms"])
    assert episodes[0]["episode"]["l"] >= 1


def test_wrong_action_shape_is_refused_with_the_task_named():
    engine = BatchedEngine(build_spec(**_task("physai/CartpoleBalance-v0")), num_envs=4, seed=0)
    with pytest.raises(TaskError, match="cartpole_balance: actions of shape \\(4, 3\\); expected \\(4, 1\\)"):
        engine.step(np.zeros((4, 3)))


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t["rewards"]["upright"]["params"].update(joint="elbow"), "rewards.upright: .*joint 'elbow'"),
    (lambda t: t["events"]["pole_mass"]["params"].update(bodies=["wheel"]), "events.pole_mass: .*body 'wheel'"),
    (lambda t: t["events"]["pole_mass"]["params"].update(scale_range=[1.3, 0.7]), "pole_mass.*low > high"),
    (lambda t: t["events"]["pole_mass"]["params"].update(scale_range=[-1.0, 0.5]), "pole_mass.*negative"),
    (lambda t: t["events"]["pole_mass"]["params"].update(scale_range=[0.0, 0.0]), "pole_mass.*above 0"),
    (lambda t: t.update(episode_step=10), "unknown field\\(s\\) \\['episode_step'\\]"),
    (lambda t: t["actions"].update(actuator=["push"]), "actions has unknown field"),
    (lambda t: t["observations"]["cart_pos"]["params"].update(joints=["slider", "hinge", "nope"]), "joint 'nope'"),
    (lambda t: t["rewards"]["upright"].update(fn="no_such_fn"), "rewards.upright.fn='no_such_fn'"),
    (lambda t: t["events"]["nudge"].update(mode="sometimes"), "events.nudge.mode='sometimes'"),
    (lambda t: t["observations"]["cart_pos"].update(fn="sensor", params={"name": "lidar"}), "sensor 'lidar'"),
])
def test_bad_task_definitions_fail_when_the_task_is_built(mutate, message):
    task = _task("physai/CartpoleBalance-v0")
    mutate(task)
    with pytest.raises(TaskError, match=message) as info:
        BatchedEngine(build_spec(**task), num_envs=2, seed=0)
    assert "cartpole_balance" in str(info.value)


def test_a_free_joint_where_one_coordinate_is_expected_is_refused():
    task = _task("physai/QuadrupedVelocity-v0")
    task["observations"]["joint_pos"]["params"]["joints"] = ["root"]
    with pytest.raises(TaskError, match="joint 'root' is a free or ball joint"):
        BatchedEngine(build_spec(**task), num_envs=2, seed=0)


def test_an_mjcf_that_does_not_parse_names_the_line(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco>\n<worldbody>\n<geom type='sphere' size='0.1' colour='red'/>\n</worldbody>\n</mujoco>\n")
    task = _task("physai/CartpoleBalance-v0")
    task["mjcf"] = str(broken)
    with pytest.raises(TaskError, match="(?s)cartpole_balance: MJCF .*broken.xml does not load.*line 3"):
        BatchedEngine(build_spec(**task), num_envs=2, seed=0)


def test_the_physics_backend_is_swappable_and_a_bad_one_is_named():
    spec = build_spec(**_task("physai/CartpoleBalance-v0"))

    class CountingBackend(RolloutBackend):
        calls = 0

        def step(self, *args):
            CountingBackend.calls += 1
            super().step(*args)

    module = types.ModuleType("physai_test_backend")
    module.CountingBackend = CountingBackend
    sys.modules["physai_test_backend"] = module
    engine = BatchedEngine(spec, num_envs=2, seed=0, backend="physai_test_backend.CountingBackend")
    engine.step(np.zeros((2, 1)))
    assert CountingBackend.calls == 1
    with pytest.raises(TaskError, match="env.backend='no.such.Backend' cannot be imported"):
        BatchedEngine(spec, num_envs=2, seed=0, backend="no.such.Backend")


def _delayed_reach(steps, mode="reset") -> dict:
    task = _task("physai/Reach2D-v0")
    task["events"]["action_delay"] = {"fn": "randomize_action_delay", "mode": mode, "params": {"steps": steps}}
    return task


def test_a_fixed_action_delay_applies_the_action_sent_d_steps_ago_and_a_reset_clears_it():
    engine = BatchedEngine(build_spec(**_delayed_reach([2, 2])), num_envs=3, seed=0)
    assert engine.physics_context["action_delay_steps"].tolist() == [2, 2, 2]
    sent = np.random.default_rng(5).uniform(-1, 1, size=(12, 3, engine.num_actions))
    ranges = engine.model.actuator_ctrlrange[engine.actuator_ids]
    mid, half = ranges.mean(axis=1), (ranges[:, 1] - ranges[:, 0]) / 2
    for t, action in enumerate(sent):
        engine.step(action)
        expected = sent[t - 2] if t >= 2 else np.zeros_like(action)  # zeros until the first action lands
        np.testing.assert_allclose(engine.action, expected)
        np.testing.assert_allclose(engine._control[:, 0, engine.actuator_ids], mid + half * expected)
    engine.reset_envs(np.array([1]))
    for t in range(3):
        engine.step(sent[t])
        np.testing.assert_allclose(engine.action[1], sent[t - 2][1] if t >= 2 else 0.0)  # a fresh queue
        np.testing.assert_allclose(engine.action[0], sent[10 + t][0] if t < 2 else sent[0][0])


def test_a_delay_range_gives_envs_different_delays_each_acting_on_its_own():
    engine = BatchedEngine(build_spec(**_delayed_reach([0, 3], mode="startup")), num_envs=32, seed=1)
    delays = engine.action_delay.copy()
    assert set(delays.tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(engine.physics_context["action_delay_steps"], delays)
    sent = np.random.default_rng(2).uniform(-1, 1, size=(6, 32, engine.num_actions))
    for t, action in enumerate(sent):
        engine.step(action)
    rows = np.arange(32)
    expected = sent[5 - delays, rows]
    np.testing.assert_allclose(engine.action, expected)
    engine.reset_envs(rows)
    np.testing.assert_array_equal(engine.action_delay, delays)  # startup: drawn once per env
    reset_mode = BatchedEngine(build_spec(**_delayed_reach([0, 3])), num_envs=32, seed=1)
    before = reset_mode.action_delay.copy()
    reset_mode.reset_envs(rows)
    assert not np.array_equal(before, reset_mode.action_delay)  # reset: redrawn every episode


def test_no_delay_event_no_action_queue():
    engine = BatchedEngine(build_spec(**_task("physai/Reach2D-v0")), num_envs=2, seed=0)
    engine.step(np.full((2, engine.num_actions), 0.5))
    assert engine.action_delay is None and engine._action_fifo is None
    np.testing.assert_allclose(engine.action, 0.5)


@pytest.mark.parametrize("steps, message", [([-1, 2], "steps=.*cannot be negative"),
                                            ([2, 1], "steps=.*low > high"),
                                            ([0.5, 2], "whole control steps"),
                                            ([3], r"\[low, high\]")])
def test_a_bad_delay_range_is_refused_naming_the_event_and_the_fix(steps, message):
    with pytest.raises(TaskError, match=f"events.action_delay.*{message}"):
        BatchedEngine(build_spec(**_delayed_reach(steps)), num_envs=2, seed=0)


def test_train_events_reach_the_training_batch_only():
    from physai.envs.gym_task import GymTask
    from physai.core.errors import ConfigError

    events = {"action_delay": {"fn": "randomize_action_delay", "mode": "reset", "params": {"steps": [1, 1]}}}
    task = GymTask("physai/Reach2D-v0", task=_task("physai/Reach2D-v0"), train_events=events)
    env = task.make()
    assert env.unwrapped.engine.action_delay is None  # evaluation, parity and delay_eval: the nominal loop
    env.close()
    venv = make_training_vec_env(task, 2, seed=0)
    assert venv.engine.action_delay.tolist() == [1, 1]
    venv.close()
    with pytest.raises(ConfigError, match="env.train_events applies to physai tasks"):
        GymTask("Pendulum-v1", train_events=events)
    clash = {"start_pose": events["action_delay"]}
    with pytest.raises(ConfigError, match="env.train_events.start_pose"):
        GymTask("physai/Reach2D-v0", task=_task("physai/Reach2D-v0"), train_events=clash)


def test_sensors_of_reset_envs_match_a_fresh_forward_pass():
    import mujoco

    spec = build_spec(**packaged_tasks()["physai/Reach2D-v0"])
    engine = BatchedEngine(spec, num_envs=6, seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(40, 6, engine.num_actions))
    for action in actions[:20]:
        engine.step(action)
    engine.reset_envs(np.array([1, 4]))  # new start poses: their sensors are recomputed when read
    data = mujoco.MjData(engine.model)
    for i in range(6):
        mujoco.mj_setState(engine.models[i], data, engine.state[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(engine.models[i], data)
        if i in (1, 4):
            np.testing.assert_allclose(engine.sensordata[i], data.sensordata, rtol=0, atol=1e-12)
    assert engine.sensordata.shape == (6, engine.model.nsensordata)


def test_the_backend_keeps_the_faster_thread_count_and_the_same_results():
    spec = build_spec(**packaged_tasks()["physai/CartpoleBalance-v0"])
    runs = {}
    for nthread in (1, 2):
        engine = BatchedEngine(spec, num_envs=32, seed=5, nthread=nthread)
        actions = np.random.default_rng(1).uniform(-1, 1, size=(RolloutBackend.CALIBRATION_CALLS + 10, 32, 1))
        runs[nthread] = np.stack([engine.step(action)["obs"] for action in actions])
        if nthread == 2:
            assert engine.backend.nthread in (1, 2) and engine.backend._inline is None  # settled
            assert len(engine.backend._timings[True]) == len(engine.backend._timings[False]) >= 2
        engine.close()
    np.testing.assert_array_equal(runs[1], runs[2])  # threads never change the physics


def _fails_after_two_steps(env) -> np.ndarray:
    if env.episode_step.max() > 2:
        raise ValueError("boom")
    return np.zeros(env.num_envs)


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("section", ["observations", "rewards", "terminations"])
def test_a_term_that_fails_mid_episode_is_named_by_the_step(section, num_envs):
    spec = build_spec(**_task("physai/CartpoleBalance-v0"))
    getattr(spec, section).append(Term("flaky", _fails_after_two_steps))
    engine = BatchedEngine(spec, num_envs=num_envs, seed=0)
    actions = np.zeros((num_envs, engine.num_actions))
    engine.step(actions)
    engine.step(actions)
    with pytest.raises(TaskError, match=f"cartpole_balance: {section}.flaky \\(_fails_after_two_steps\\) failed "
                                        f"with params {{}}: boom"):
        engine.step(actions)


@pytest.mark.parametrize("env_id", ["physai/CartpoleBalance-v0", "physai/CartpoleSwingup-v0", "physai/Reach2D-v0",
                                    "physai/QuadrupedVelocity-v0"])
def test_the_terms_a_step_calls_compute_what_the_plain_terms_do(env_id):
    """The engine binds terms once (``fn.bind`` where a term offers one; the plain term is then the bound
    form's one-off call), so the joint terms are checked against formulas written out here."""
    engine = BatchedEngine(build_spec(**_task(env_id)), num_envs=3, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        engine.step(rng.uniform(-1, 1, size=(3, engine.num_actions)))

    def qpos(joints=None):
        return engine.qpos[:, np.arange(engine.model.nq) if joints is None else engine.qpos_indices(tuple(joints))]

    def qvel(joints=None):
        return engine.qvel[:, np.arange(engine.model.nv) if joints is None else engine.dof_indices(tuple(joints))]

    by_hand = {
        "joint_pos": lambda joints=None: qpos(joints),
        "joint_pos_sincos": lambda joints: np.concatenate([np.sin(qpos(joints)), np.cos(qpos(joints))], axis=1),
        "joint_vel": lambda joints=None, scale=1.0: qvel(joints) * scale,
        "joint_cos": lambda joint: np.cos(qpos([joint])[:, 0]),
        "joint_pos_l2": lambda joints, target=0.0: np.square(qpos(joints) - target).sum(axis=1),
        "joint_out_of_bounds": lambda joint, low, high: (qpos([joint])[:, 0] < low) | (qpos([joint])[:, 0] > high),
    }
    bound = [("observations", term, fn) for term, fn in engine._observation_fns]
    bound += [("rewards", term, fn) for term, fn, _ in engine._reward_fns]
    bound += [("terminations", term, fn) for term, fn in engine._termination_fns]
    checked = 0
    for section, term, fn in bound:
        formula = by_hand.get(term.fn.__name__)
        expected = formula(**term.params) if formula else engine._call(term, section)
        fast, expected = np.asarray(fn()), np.asarray(expected)
        assert fast.dtype == expected.dtype and fast.tobytes() == expected.tobytes(), f"{section}.{term.name}"
        checked += formula is not None
    assert checked >= 2, "the task should use some of the bound joint terms"
