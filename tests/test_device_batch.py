"""The batch kept on a torch device (``BatchedEngine(..., array_device=...)`` on the Warp backend).

Here the device is Warp's CPU device and torch's CPU, so what is checked is the mechanism a GPU uses: the
state, terms, rewards, terminations and bookkeeping computed on torch tensors, events on host copies of the
rows they act on. From the same seed with the same actions the device-resident engine and the host engine on
the same Warp physics give the same observations, rewards and ends (both compute in float64 from the same
float32 physics; only the order of a few float64 operations may differ, hence ``TOLERANCE``).
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

import physai.envs.engine as engine_module
from physai.envs import mdp
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import TaskError, Term, build_spec

TOLERANCE = 1e-12
requires_warp = pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is None
                                   or importlib.util.find_spec("warp") is None,
                                   reason="MuJoCo Warp is not installed: pip install -e '.[warp]'")


def _spec(task: str, push_every=None):
    spec = build_spec(**copy.deepcopy(packaged_task_configs()[task]["task"]))
    if push_every is not None:  # an interval push that fires within the short episodes of random actions
        for term in spec.events:
            if term.mode == "interval":
                term.every_steps = push_every
    return spec


def _compare(task: str, steps: int, push_every=None) -> dict[str, int]:
    host = BatchedEngine(_spec(task, push_every), 8, seed=0, nthread=1, backend="warp")
    device = BatchedEngine(_spec(task, push_every), 8, seed=0, nthread=1, backend="warp", array_device="cpu")
    assert isinstance(device.state, torch.Tensor) and isinstance(device.observe(), torch.Tensor)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(steps, 8, host.num_actions))
    resets = 0
    for t, action in enumerate(actions):
        expected, got = host.step(action), device.step(torch.as_tensor(action))
        for key in ("obs", "reward"):
            np.testing.assert_allclose(got[key].numpy(), expected[key], atol=TOLERANCE, rtol=0,
                                       err_msg=f"{task}: {key} at step {t}")
        for key in ("terminated", "truncated"):
            np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=f"{task}: {key} at step {t}")
        if "done_ids" in expected["info"]:
            resets += len(expected["info"]["done_ids"])
            np.testing.assert_allclose(got["info"]["final_obs"].numpy(), expected["info"]["final_obs"], atol=TOLERANCE)
            np.testing.assert_allclose(got["info"]["episode_return"].numpy(), expected["info"]["episode_return"],
                                       atol=1e-9)
    for name, value in expected["info"].get("episode_terms", {}).items():
        np.testing.assert_allclose(got["info"]["episode_terms"][name].numpy(), value, atol=1e-9)
    host.close()
    device.close()
    return {"resets": resets}


@requires_warp
def test_a_batch_on_the_device_steps_resets_and_pushes_as_the_host_engine_does():
    """Cart-pole: per-env randomized physics, terminations and automatic resets, an interval push."""
    assert _compare("cartpole_balance", 150, push_every=(5, 10))["resets"] >= 8


@pytest.mark.slow
@requires_warp
@pytest.mark.parametrize("task", ["quadruped_velocity", "car_lane", "physai_hopper"])
def test_commands_sensors_and_layouts_on_the_device_match_the_host_engine(task):
    """The quadruped's commands, sensors and pushes; the car's obstacle layouts (extras); Hopper's ends."""
    assert _compare(task, 120, push_every=(5, 10))["resets"] >= 1


@requires_warp
def test_resets_and_events_copy_to_the_host_only_the_rows_they_act_on(monkeypatch):
    engine = BatchedEngine(_spec("cartpole_balance", (5, 10)), 16, seed=0, nthread=1, backend="warp",
                           array_device="cpu")
    copied: list[int] = []
    real_to_host = engine_module.to_host

    def counting(array):
        copied.append(int(np.prod(array.shape[:1])) if array.ndim else 1)
        return real_to_host(array)

    monkeypatch.setattr(engine_module, "to_host", counting)
    actions = np.random.default_rng(2).uniform(-1, 1, size=(60, 16, 1))
    reset_rows = 0
    for action in actions:
        out = engine.step(torch.as_tensor(action))
        reset_rows += len(out["info"].get("done_ids", ()))
    assert reset_rows > 0
    assert copied and max(copied) < 16, "a reset or an event copied the whole batch to the host"
    engine.close()


@requires_warp
def test_what_cannot_live_on_the_device_is_refused_at_build():
    with pytest.raises(TaskError, match=r"backend that steps torch tensors \(env\.backend=warp\)"):
        BatchedEngine(_spec("cartpole_balance"), 2, seed=0, nthread=1, array_device="cpu")
    with pytest.raises(TaskError, match=r"a camera task renders on the host; keep its batch on the host"):
        BatchedEngine(_spec("cartpole_balance_pixels"), 2, seed=0, nthread=1, backend="warp", array_device="cpu")
    spec = _spec("reach2d")
    spec.events.append(Term(name="latency", fn=mdp.randomize_action_delay, mode="startup", params={"steps": [0, 1]}))
    with pytest.raises(TaskError, match=r"event 'latency' \(randomize_action_delay\): action delay runs on the host"):
        BatchedEngine(spec, 2, seed=0, nthread=1, backend="warp", array_device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TaskError, match=r"the backend steps on 'cpu'"):
            BatchedEngine(_spec("cartpole_balance"), 2, seed=0, nthread=1, backend="warp", array_device="cuda")


@requires_warp
def test_rsl_ppo_keeps_the_batch_beside_its_networks_only_where_the_physics_runs_there_too():
    from physai.train.rsl_env import batch_device

    spec = _spec("cartpole_balance")
    assert batch_device("warp", "cpu", spec) == "cpu"  # Warp's CPU device here: batch and networks on torch's CPU
    assert batch_device("rollout", "cpu", spec) is None  # C MuJoCo steps numpy arrays on the host
    assert batch_device("warp_cuda", "cpu", spec) is None  # physics on a GPU, networks on the CPU: the host batch
    delayed = _spec("reach2d")
    delayed.events.append(Term(name="latency", fn=mdp.randomize_action_delay, mode="startup", params={"steps": [0, 1]}))
    assert batch_device("warp", "cpu", delayed) is None  # action delay: the host engine's
    assert batch_device("warp", "cpu", _spec("cartpole_balance_pixels")) is None  # cameras render on the host


@requires_warp
def test_resets_and_pushes_upload_no_model_fields():
    """Per-env masses and gains go to the device when startup randomizes them; a reset or a push leaves the models
    as they were, so no step after re-uploads them."""
    engine = BatchedEngine(_spec("cartpole_balance", (5, 10)), 8, seed=0, nthread=1, backend="warp",
                           array_device="cpu")
    uploads = []
    upload = engine.backend._upload_stale_fields
    engine.backend._upload_stale_fields = lambda: (uploads.append(set(engine.backend._stale)), upload())
    resets = 0
    for action in np.random.default_rng(5).uniform(-1, 1, size=(80, 8, 1)):
        resets += len(engine.step(torch.as_tensor(action))["info"].get("done_ids", ()))
    assert resets > 0 and len(uploads) <= 1  # at most the startup's fields, on the first step
    engine.close()


@requires_warp
def test_rsl_rls_env_adapter_gives_the_same_tensors_from_either_batch():
    """What rsl-rl's PPO reads (observations, rewards, dones, time-outs, finished episodes) does not depend on
    where the batch lives: a run with the batch on the device trains as one with it on the host."""
    pytest.importorskip("tensordict")
    from physai.train.rsl_env import EngineVecEnv

    envs = [EngineVecEnv(BatchedEngine(_spec("cartpole_balance"), 8, seed=0, nthread=1, backend="warp",
                                       array_device=where)) for where in (None, "cpu")]
    actions = torch.as_tensor(np.random.default_rng(4).uniform(-1, 1, size=(40, 8, 1)), dtype=torch.float32)
    assert torch.equal(envs[0].get_observations()["policy"], envs[1].get_observations()["policy"])
    for action in actions:
        (obs_h, rew_h, done_h, extra_h), (obs_d, rew_d, done_d, extra_d) = (env.step(action) for env in envs)
        assert torch.equal(obs_h["policy"], obs_d["policy"]) and obs_d["policy"].dtype == torch.float32
        assert torch.equal(rew_h, rew_d) and torch.equal(done_h, done_d)
        assert torch.equal(extra_h["time_outs"], extra_d["time_outs"])
    assert envs[0].finished == envs[1].finished and envs[0].finished
    for env in envs:
        env.close()


@requires_warp
def test_observation_noise_and_bursts_on_the_device():
    """The task's observation noise is drawn on the device (its own stream, seeded from the engine's); a
    sensor-noise burst an event starts raises it there for the burst's steps."""
    quiet = BatchedEngine(_spec("cartpole_balance"), 64, seed=0, nthread=1, backend="warp")
    spec = _spec("cartpole_balance")
    spec.observation_noise = 0.1
    noisy = BatchedEngine(spec, 64, seed=0, nthread=1, backend="warp", array_device="cpu")
    action = np.zeros((64, 1))
    quiet_obs, noisy_obs = quiet.step(action)["obs"], noisy.step(torch.as_tensor(action))["obs"].numpy()
    assert 0.08 < np.std(noisy_obs - quiet_obs) < 0.12  # the same physics until the first reset, plus noise
    assert not noisy._event_rows.bursts_seen
    burst = Term(name="glitch", fn=mdp.sensor_noise_burst, mode="interval", params={"std": 5.0,
                                                                                   "duration_steps": [3, 3]})
    noisy._run_event(burst, np.arange(64))
    assert noisy._event_rows.bursts_seen and float(noisy.noise_burst_std.min()) == 5.0
    assert np.std(noisy.step(torch.as_tensor(action))["obs"].numpy()) > 2.0  # the burst's std, on every env
    quiet.close()
    noisy.close()
