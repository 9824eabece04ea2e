"""The edge guard of a camera policy: the monitors that apply to frames plus kept state, and a stated fallback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from stable_baselines3 import PPO

from physai.config.compose import build_task
from physai.core.errors import BundleError, ConfigError
from physai.deploy.onnx_export import add_guard, write_bundle
from physai.edge.guard import GuardedCameraPolicy, GuardedPolicy
from physai.edge.runtime import EdgePolicy
from physai.stages import export as export_stage
from physai.train.evaluation import episode_returns
from physai.train.vec_env import make_training_vec_env
from tests.conftest import compose_config, require_rendering

SMALL = ["env.task.pixels.height=48", "env.task.pixels.width=48"]


@pytest.fixture(scope="module")
def reach_bundle(tmp_path_factory):
    """An untrained reach2d camera policy (one 48x48 frame plus joint angles and velocities) as a guarded bundle."""
    require_rendering()
    task = build_task(compose_config(["env=reach2d_pixels", *SMALL]).env)
    venv = make_training_vec_env(task, 2, seed=0)
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [16]})
    bundle = tmp_path_factory.mktemp("camera") / "bundle"
    bundle.mkdir()
    all_names = task.signal_names()[0]
    names = [all_names[i] for i in task.task_spec.pixels.kept_columns(all_names)]
    write_bundle(model, None, bundle, opset=18, control_rate_hz=task.control_rate_hz(), provenance={},
                 observation_names=names, camera={"name": "top"})
    venv.close()
    policy = EdgePolicy.load(bundle)
    seen = []

    def recording(obs):
        action = policy.act(obs)
        seen.append((obs, action))
        return action

    episode_returns(task, recording, [0])
    figures = add_guard(bundle, None, task, [o for o, _ in seen], np.stack([a for _, a in seen]), 1,
                        world_model_path=None, opset=18, intra_op_threads=1, guard_seeds=[1])
    return bundle, figures, seen


def test_a_camera_guard_judges_the_kept_state_and_says_why_it_holds_the_zero_action(reach_bundle):
    bundle, figures, seen = reach_bundle
    policy = EdgePolicy.load(bundle)
    stats = policy.manifest["observation_statistics"]
    assert stats["input"] == "state" and len(stats["mean"]) == policy.inputs["state"][1][0]
    reason = policy.manifest["guard"]["fallback_reason"]
    assert "state terms" in reason and "zero" in reason and figures["fallback_reason"] == reason
    assert figures["steps"] > 0 and figures["fallback"] == "ZeroAction"  # the guarded episode ran

    guarded = GuardedPolicy.from_bundle(bundle)
    assert isinstance(guarded, GuardedCameraPolicy)
    obs = seen[5][0]
    # What the policy met in its own evaluation never counts as out of distribution.
    assert np.array_equal(guarded.act(obs), policy.act(obs)) and not guarded.last.fallback
    zero = np.zeros(policy.action_shape, dtype=np.float32)
    for state, reason in [(np.full_like(obs["state"], np.nan), "nonfinite_observation"),
                          (obs["state"] + 1e3, "ood_observation")]:
        action = guarded.act({**obs, "state": state})
        assert np.array_equal(action, zero) and guarded.last.fallback and guarded.last.reasons == (reason,)
    # A batch: only the bad row falls back.
    batch = {key: np.stack([obs[key]] * 3) for key in obs}
    batch["state"][1] = np.inf
    actions = guarded.act(batch)
    assert guarded.last.fallback.tolist() == [False, True, False] and np.array_equal(actions[1], zero)
    assert np.allclose(actions[0], policy.act(obs))
    report = guarded.report()
    assert report["steps"] == 6 and report["fallbacks"] == 3
    assert report["by_reason"] == {"nonfinite_observation": 2, "ood_observation": 1}
    # Wiring mistakes still raise: a float image, a missing input.
    with pytest.raises(BundleError, match="uint8"):
        guarded.act({**obs, "pixels": obs["pixels"].astype(np.float32)})
    with pytest.raises(BundleError, match="missing"):
        guarded.act({"pixels": obs["pixels"]})


def test_a_state_fallback_for_a_pixel_only_policy_is_refused_before_training():
    cfg = compose_config(["env=cartpole_balance_pixels", "guard=cartpole_balance"])
    with pytest.raises(ConfigError, match="cart_pos.*ZeroAction"):
        export_stage.check(cfg, build_task(cfg.env))
    export_stage.check(compose_config(["env=cartpole_balance_pixels"]), build_task(cfg.env))  # ZeroAction is fine


def test_a_camera_bundle_without_state_statistics_names_the_input_and_the_way_out(reach_bundle, tmp_path):
    """An older bundle (no statistics of its kept state) cannot run the OOD monitor: the error says which input
    lacks them and how to go on; switching the monitor off loads it, and a threshold of 0 is refused."""
    bundle = tmp_path / "old_bundle"
    shutil.copytree(reach_bundle[0], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["observation_statistics"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"no observation_statistics of its 'state' input .*ood_threshold=None"):
        GuardedPolicy.from_bundle(bundle)
    guarded = GuardedPolicy.from_bundle(bundle, ood_threshold=None)
    obs = reach_bundle[2][5][0]
    guarded.act({**obs, "state": obs["state"] + 1e3})   # far out of distribution, and nothing watches for it
    assert not guarded.last.fallback
    for bad in (0, float("nan")):
        with pytest.raises(BundleError, match=f"ood_threshold={bad} must be > 0"):
            GuardedPolicy.from_bundle(reach_bundle[0], ood_threshold=bad)
