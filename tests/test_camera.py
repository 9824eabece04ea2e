"""Camera observations: Dict spaces, tiled batch rendering, frame stacks, depth, and the errors a task file gets."""

from __future__ import annotations

import copy

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import physai.envs  # noqa: F401  registers the ids
from physai.envs.camera import SLOW_FLAGS
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.single import PhysaiEnv
from physai.envs.spec import TaskError, build_spec
from tests.conftest import require_rendering

PIXEL_ID = "physai/CartpoleBalancePixels-v0"


@pytest.fixture(autouse=True)
def _rendering():
    require_rendering()


def _task(**pixels) -> dict:
    task = copy.deepcopy(packaged_task_configs()["cartpole_balance"]["task"])
    task["pixels"] = {"camera": "side", "height": 32, "width": 32, **pixels}
    return task


def test_pixel_task_is_a_checked_gymnasium_env_with_a_uint8_dict_space():
    env = gym.make(PIXEL_ID)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict) and list(space.spaces) == ["pixels"]
    assert space["pixels"].shape == (64, 64, 9) and space["pixels"].dtype == np.uint8
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].max() > obs["pixels"].min()  # a scene, not a blank
    env.close()


def test_every_tile_of_the_batch_is_the_frame_a_lone_renderer_draws():
    """The tiled framebuffer must not bleed between envs or flip them: compare with mujoco.Renderer."""
    spec = build_spec(**_task())
    engine = BatchedEngine(spec, num_envs=5, seed=0)
    engine.qpos[:, 0] = np.linspace(-1.0, 1.0, 5)   # cart positions differ per env
    engine.qpos[:, 1] = np.linspace(-0.5, 0.5, 5)   # and pole angles
    frames, _ = engine.camera.render(np.arange(5))
    renderer = mujoco.Renderer(engine.model, 32, 32)
    for flag in SLOW_FLAGS:
        renderer.scene.flags[flag] = False
    data = mujoco.MjData(engine.model)
    for i in range(5):
        mujoco.mj_setState(engine.models[i], data, engine.state[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(engine.models[i], data)
        renderer.update_scene(data, camera="side")
        expected = renderer.render()
        assert np.abs(frames[i].astype(int) - expected.astype(int)).mean() < 1.0, f"env {i}"
    assert np.abs(frames[0].astype(int) - frames[4].astype(int)).mean() > 0.1  # different states, different frames
    renderer.close()
    engine.close()


def test_frame_stack_starts_full_and_shifts_one_frame_per_step():
    spec = build_spec(**_task(frame_stack=3))
    engine = BatchedEngine(spec, num_envs=2, seed=0)
    stack = engine.camera.pixels.copy()
    assert all(np.array_equal(stack[..., 0:3], stack[..., 3 * k:3 * k + 3]) for k in (1, 2))  # a reset fills it
    engine.step(np.ones((2, 1)))
    after = engine.camera.pixels
    np.testing.assert_array_equal(after[..., 0:6], stack[..., 3:9])  # older frames moved down
    assert not np.array_equal(after[..., 6:9], stack[..., 6:9])       # the cart moved: a new newest frame
    engine.close()


def test_batched_view_hands_each_finished_env_its_last_images():
    venv = gym.make_vec(PIXEL_ID, num_envs=3)
    obs, _ = venv.reset(seed=0)
    assert obs["pixels"].shape == (3, 64, 64, 9)
    for _ in range(600):  # episodes last 500 steps at most
        obs, _, terminated, truncated, info = venv.step(np.ones((3, 1)))
        if (terminated | truncated).any():
            break
    done = np.flatnonzero(terminated | truncated)
    assert done.size, "no episode ended in 600 steps"
    final = info["final_obs"][done[0]]
    assert final["pixels"].shape == (64, 64, 9) and final["pixels"].dtype == np.uint8
    restarted = obs["pixels"][done[0]]
    assert np.array_equal(restarted[..., :3], restarted[..., 6:9])  # the new episode's stack starts full
    venv.close()


def test_depth_is_in_metres_and_kept_state_terms_ride_along():
    task = _task(depth=True, state=["cart_pos"])
    env = PhysaiEnv(task)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"pixels", "depth", "state"}
    assert obs["state"].shape == (1,) and obs["depth"].dtype == np.float32
    # The side camera sits 4.5 m in front of the rail: the cart's pixels are about that far away.
    centre = obs["depth"][12:20, 12:20, 0]
    assert 3.5 < float(centre.min()) < 5.0
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("pixels, message", [
    ({"camera": "front"}, "known: ['side']"),
    ({"camera": "side", "state": ["speed"]}, "pixels.state names ['speed']"),
    ({"camera": "side", "height": 4096}, "larger than"),
    ({"camera": "side", "quality": "ultra"}, "pixels.quality"),
    ({"camera": "side", "frames": 3}, "unknown field(s) ['frames']"),
])
def test_a_bad_camera_section_names_the_field(pixels, message):
    task = copy.deepcopy(packaged_task_configs()["cartpole_balance"]["task"])
    task["pixels"] = pixels
    with pytest.raises(TaskError) as error:
        BatchedEngine(build_spec(**task), num_envs=1)
    assert message in str(error.value)


def test_a_frame_slower_to_draw_than_the_control_period_is_refused(monkeypatch):
    """The engine times one env's frame when it is built; here a clock makes every draw take 30 ms, longer than
    the cart-pole's 20 ms control step (how fast a real frame draws depends on the machine's renderer)."""
    from types import SimpleNamespace

    from physai.envs import camera as camera_module

    ticks = iter(np.arange(0.0, 1000.0, 0.03))  # each perf_counter() call 30 ms on: a draw sits between two
    monkeypatch.setattr(camera_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    with pytest.raises(TaskError, match=r"pixels.height=32, pixels.width=32 takes 30.0 ms per frame to render here, "
                                        r"longer than the task's control period \(20.0 ms\)"):
        BatchedEngine(build_spec(**_task()), num_envs=1)


def test_the_evaluation_video_shows_what_the_camera_policy_saw_beside_the_scene():
    from physai.report.video import with_policy_view

    env = gym.make(PIXEL_ID, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    scene = env.render()
    frame = with_policy_view(scene, obs)
    scale = scene.shape[0] // 64
    assert frame.shape == (scene.shape[0], scene.shape[1] + 64 * scale, 3)
    np.testing.assert_array_equal(frame[:, :scene.shape[1]], scene)
    top = (scene.shape[0] - 64 * scale) // 2
    np.testing.assert_array_equal(frame[top:top + 64 * scale:scale, scene.shape[1]::scale], obs["pixels"][..., -3:])
    env.close()


def test_visual_randomization_changes_what_each_env_sees_and_leaves_the_physics_alone():
    task = _task()
    task["events"] = {**task["events"],
                      "colors": {"fn": "randomize_geom_color", "mode": "reset", "params": {"geoms": ["cart", "pole"],
                                                                                          "jitter": 0.4}},
                      "light": {"fn": "randomize_light", "mode": "reset",
                                "params": {"pos_range": [-1.0, 1.0], "intensity_range": [0.3, 1.0]}},
                      "mount": {"fn": "randomize_camera_pose", "mode": "reset",
                                "params": {"camera": "side", "pos_range": [-0.1, 0.1], "angle_range": [0.0, 0.05]}},
                      "floor": {"fn": "randomize_geom_material", "mode": "reset",
                                "params": {"geom": "floor", "materials": ["floor_plain", "floor_checker",
                                                                         "floor_grain"]}}}
    randomized = BatchedEngine(build_spec(**task), num_envs=4, seed=0)
    plain = BatchedEngine(build_spec(**_task()), num_envs=4, seed=0)
    plain.state[:] = randomized.state  # the same poses: only the visuals differ
    seen, _ = randomized.camera.render(np.arange(4))
    nominal, _ = plain.camera.render(np.arange(4))
    assert all(np.abs(seen[i].astype(int) - nominal[i].astype(int)).mean() > 1.0 for i in range(4))
    assert len({randomized.models[i].geom_rgba[randomized.id_of("geom", "cart")].tobytes() for i in range(4)}) == 4
    np.testing.assert_array_equal(randomized.model.geom_rgba, plain.model.geom_rgba)  # nominal model untouched
    for engine in (randomized, plain):
        engine.close()
