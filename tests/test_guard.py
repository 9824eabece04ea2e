"""The dual-stack guard: silent in distribution, the fallback takes over on OOD, NaN and bad actions.

Fallback controllers are checked in the real MuJoCo tasks, not only on paper.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import CONFIGS, compose_config
from physai.edge import EdgePolicy
from physai.deploy.fallback_model import resolve_fallback
from physai.edge.fallback import build_fallback
from physai.edge.guard import GuardedPolicy
from physai.core.errors import BundleError
from physai.train.evaluation import episode_returns


@pytest.fixture()
def bundle(smoke_run, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(smoke_run / "bundle", target)
    return target


def _task(name: str):
    """The task of ``env=<name>`` as the pipeline composes and builds it (env files may inherit others)."""
    from physai.config.compose import build_task

    return build_task(compose_config([f"env={name}"]).env)


def _manifest_of(task) -> dict:
    """What a bundle's manifest says about a task's spaces (the fallbacks need nothing else)."""
    env = task.make()
    try:
        space = env.action_space
        return {"observation_space": {"names": task.signal_names()[0]},
                "action_space": {"type": "Box", "shape": list(space.shape), "low": space.low.tolist(),
                                 "high": space.high.tolist()}}
    finally:
        env.close()


def _fallback_spec(name: str) -> dict:
    """The fallback the pipeline picks for ``env=<name>`` (configs/guard/<name>.yaml, composed by Hydra)."""
    return OmegaConf.to_container(compose_config([f"env={name}"]).guard.fallback)


# ----- monitors ---------------------------------------------------------------------------------------
def test_the_export_stage_writes_what_the_guard_needs_and_reports_its_fallback_rate(smoke_run):
    manifest = json.loads((smoke_run / "bundle" / "manifest.json").read_text())
    stats = manifest["observation_statistics"]
    assert stats["samples"] > 0 and len(stats["mean"]) == len(manifest["observation_space"]["names"])
    assert manifest["observation_space"]["names"][:2] == ["cart_pos", "pole_angle[0]"]
    # The cart-pole task's own fallback (configs/guard/cartpole_balance.yaml) is chosen by env.
    assert manifest["guard"]["fallback"]["_target_"] == "physai.edge.fallback.CartPoleLQR"
    guard = json.loads((smoke_run / "summary.json").read_text())["bundle"]["guard"]
    assert guard["steps"] > 0 and 0.0 <= guard["fallback_rate"] <= 0.05


def test_the_guard_is_silent_on_the_policys_own_episodes(smoke_run, bundle):
    guarded = GuardedPolicy.from_bundle(bundle)
    summary = json.loads((smoke_run / "summary.json").read_text())["bundle"]
    task = _task("cartpole_balance")
    own = episode_returns(task, guarded.act, summary["eval"]["seeds"])
    assert guarded.fallbacks == 0, guarded.report()
    np.testing.assert_allclose(own, summary["eval"]["episode_returns"], rtol=1e-6)
    guarded.reset_counters()
    episode_returns(task, guarded.act, [7_000_001, 7_000_002])  # fresh episodes
    assert guarded.steps > 0 and guarded.fallback_rate <= 0.05, guarded.report()


def test_out_of_distribution_and_non_finite_observations_engage_the_fallback(bundle):
    guarded = GuardedPolicy.from_bundle(bundle, fallback={"_target_": "physai.edge.fallback.ZeroAction",
                                                          "value": 0.25})
    mean = np.asarray(guarded.policy.manifest["observation_statistics"]["mean"], np.float32)
    in_dist = guarded.act(mean)
    assert not guarded.last.fallback and guarded.last.reasons == ()
    np.testing.assert_array_equal(in_dist, guarded.policy.act(mean))

    far = (mean + 1.0) * 20.0
    np.testing.assert_array_equal(guarded.act(far), [0.25])
    assert guarded.last.fallback and guarded.last.reasons == ("ood_observation",)
    assert guarded.last.ood_score > guarded.ood_threshold

    for bad in (np.nan, np.inf, -np.inf):
        obs = mean.copy()
        obs[1] = bad
        np.testing.assert_array_equal(guarded.act(obs), [0.25])  # no exception mid-loop
        assert guarded.last.reasons == ("nonfinite_observation",)
    assert guarded.counts["ood_observation"] == 1 and guarded.counts["nonfinite_observation"] == 3
    assert guarded.steps == 5 and guarded.fallbacks == 4 and guarded.fallback_rate == pytest.approx(0.8)
    report = guarded.report()
    assert report["by_reason"] == {"ood_observation": 1, "nonfinite_observation": 3}

    batch = np.stack([mean, far, np.where(np.arange(mean.size) == 0, np.nan, mean)])
    actions = guarded.act(batch)
    assert list(guarded.last.fallback) == [False, True, True]
    assert guarded.last.reasons == ((), ("ood_observation",), ("nonfinite_observation",))
    np.testing.assert_array_equal(actions[1:], [[0.25], [0.25]])
    np.testing.assert_array_equal(actions[0], in_dist)
    with pytest.raises(BundleError, match="shape"):  # a wiring mistake is still an error
        guarded.act(np.zeros(mean.size + 1))


def test_bad_actions_and_a_failing_policy_engage_the_fallback(bundle):
    guarded = GuardedPolicy.from_bundle(bundle)
    policy = guarded.policy
    mean = np.asarray(policy.manifest["observation_statistics"]["mean"], np.float32)
    high = policy.manifest["action_space"]["high"][0]

    def returning(value):
        def infer():
            policy._act_buffer[...] = value
            return policy._act_buffer
        return infer

    for value, reason in ((high * 1.5, "action_out_of_range"), (np.nan, "nonfinite_action"),
                          (high * (1 + 1e-6), None)):
        policy._infer = returning(value)
        action = guarded.act(mean)
        if reason is None:  # within the tolerance
            assert not guarded.last.fallback
        else:
            assert guarded.last.reasons == (reason,) and np.isfinite(action).all()
            assert -1.0 <= float(action[0]) <= 1.0

    def failing():
        raise RuntimeError("onnxruntime fell over")

    policy._infer = failing
    guarded.act(mean)
    assert guarded.last.reasons == ("policy_error",)
    assert guarded.counts == {**guarded.counts, "action_out_of_range": 1, "nonfinite_action": 1, "policy_error": 1}


def test_hold_steps_keep_the_fallback_in_charge_after_an_alarm(bundle):
    guarded = GuardedPolicy.from_bundle(bundle, hold_steps=2)
    mean = np.asarray(guarded.policy.manifest["observation_statistics"]["mean"], np.float32)
    guarded.act(mean * 0 + 1e3)
    reasons = [guarded.act(mean) is not None and guarded.last.reasons for _ in range(3)]
    assert reasons == [("hold",), ("hold",), ()]


def test_the_guard_has_a_clear_error_for_an_old_bundle_and_a_wrong_fallback(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    with pytest.raises(BundleError, match="needs the observation column 'lane_offset'"):
        GuardedPolicy.from_bundle(bundle, fallback={"_target_": "physai.edge.fallback.BrakeAndHoldLane"})
    with pytest.raises(BundleError, match="not a physai fallback controller"):
        GuardedPolicy.from_bundle(bundle, fallback={"_target_": "os.system"})
    for key in ("observation_statistics", "normalization"):
        manifest.pop(key, None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no observation_statistics"):
        GuardedPolicy.from_bundle(bundle)
    guarded = GuardedPolicy.from_bundle(bundle, ood_threshold=None)  # OOD monitor off: NaN is still caught
    guarded.act(np.full(guarded.policy.obs_dim, np.nan))
    assert guarded.last.reasons == ("nonfinite_observation",)
    assert not guarded.act(np.full(guarded.policy.obs_dim, 1e6)) is None and not guarded.last.fallback


def test_world_model_disagreement_is_monitored_when_an_ensemble_is_bundled(bundle):
    import torch

    from physai.edge.bundle import WORLD_MODEL_FILE
    from physai.deploy.onnx_export import export_world_model, update_manifest
    from physai.synthetic.world_model import EnsembleDynamicsModel

    policy = EdgePolicy.load(bundle)
    model = EnsembleDynamicsModel(policy.obs_dim, 1, members=3, elites=3, hidden=16, layers=1, seed=0)
    model.is_fitted.fill_(True)
    with torch.no_grad():
        model.input_std.fill_(0.5)
    export_world_model(model, bundle / WORLD_MODEL_FILE, opset=18)
    update_manifest(bundle, {"world_model": {"file": WORLD_MODEL_FILE}}, files=(WORLD_MODEL_FILE,))

    mean = np.asarray(policy.manifest["observation_statistics"]["mean"], np.float32)
    guarded = GuardedPolicy.from_bundle(bundle)  # no threshold: measured, never fires
    action = guarded.act(mean)
    expected = model.disagreement(mean[None], np.asarray(action, np.float32).reshape(1, 1))[0]
    assert guarded.last.disagreement == pytest.approx(float(expected), rel=1e-4) and not guarded.last.fallback

    strict = GuardedPolicy.from_bundle(bundle, max_disagreement=float(expected) / 2)
    strict.act(mean)
    assert strict.last.reasons == ("model_disagreement",)
    strict.act(np.stack([mean, mean]))
    assert strict.last.reasons == (("model_disagreement",), ("model_disagreement",))
    assert GuardedPolicy.from_bundle(bundle, world_model=False).world_model is None


# ----- fallback controllers in the real simulator -------------------------------------------------------
def test_the_cartpole_lqr_holds_the_pole_up_from_a_tilt():
    task = _task("cartpole_balance")
    fallback = build_fallback(resolve_fallback(_fallback_spec("cartpole_balance"), task), _manifest_of(task))
    env = task.make()
    try:
        for seed, tilt in ((0, 0.15), (1, -0.15)):
            obs, _ = env.reset(seed=seed)
            engine = env.unwrapped.engine
            engine.qpos[:, engine.joint_qpos("hinge")] = tilt
            angles = []
            for _ in range(300):
                obs, _, terminated, truncated, _ = env.step(fallback(obs))
                angles.append(abs(np.arctan2(obs[1], obs[2])))
                assert not terminated and not truncated
            assert max(angles[-100:]) < 0.05 and abs(obs[0]) < 0.5  # upright and near the center
    finally:
        env.close()


def test_the_car_fallback_brakes_and_returns_to_the_lane_center():
    task = _task("car_lane")
    manifest = _manifest_of(task)
    fallback = build_fallback(_fallback_spec("car_lane"), manifest)
    names = manifest["observation_space"]["names"]
    env = task.make()
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(40):  # drive off the center at speed first
            obs, *_ = env.step(np.array([0.5, 0.05], np.float32))
        start_offset, start_speed = abs(obs[names.index("lane_offset")]), obs[names.index("wheel_speed")]
        for _ in range(150):
            obs, _, terminated, _, _ = env.step(fallback(obs))
            assert not terminated
        assert abs(obs[names.index("wheel_speed")]) < 0.1 * abs(start_speed)
        assert abs(obs[names.index("lane_offset")]) < 0.7 * start_offset
    finally:
        env.close()


@pytest.mark.parametrize("name", ["reach2d", "reach3d"])
def test_the_reach_fallback_moves_the_fingertip_to_the_target(name):
    task = _task(name)
    manifest = _manifest_of(task)
    fallback = build_fallback(_fallback_spec(name), manifest)
    error = [manifest["observation_space"]["names"].index(f"to_target[{i}]") for i in range(3)]
    env = task.make()
    try:
        obs, _ = env.reset(seed=1)
        start = np.linalg.norm(obs[error])
        for _ in range(60):
            obs, *_ = env.step(fallback(obs))
        assert np.linalg.norm(obs[error]) < 0.3 * start
    finally:
        env.close()


def test_every_task_fallback_config_builds_for_its_task():
    for path in sorted((CONFIGS / "guard").glob("*.yaml")):
        if path.stem == "default":
            continue
        task = _task(path.stem)
        fallback = build_fallback(resolve_fallback(_fallback_spec(path.stem), task), _manifest_of(task))
        obs = np.zeros((2, len(fallback.observation_names)))
        assert fallback(obs).shape == (2, fallback.bounds.size)
        assert np.isfinite(fallback(obs[0])).all()


def test_the_cart_pole_fallback_reads_its_physics_from_the_mjcf():
    # envs/assets/cartpole.xml: a 1 kg cart, a 0.1 kg capsule pole from the hinge up 1 m (centre of mass at
    # 0.5 m), a motor of gear 10 on ctrl [-1, 1], 0.01 s physics with frame_skip 2, gravity 9.81.
    task = _task("cartpole_balance")
    resolved = resolve_fallback(_fallback_spec("cartpole_balance"), task)
    assert "from_model" not in resolved
    assert (resolved["cart_mass"], resolved["pole_mass"], resolved["gear"], resolved["ctrl_half_range"]) == (
        1.0, 0.1, 10.0, 1.0)
    assert resolved["pole_com"] == pytest.approx(0.5) and resolved["control_period_s"] == pytest.approx(0.02)
    assert resolved["gravity"] == pytest.approx(9.81)
    # About the hinge axis through the centre of mass: between a thin 1 m rod's m L^2 / 12 and that of a rod
    # 1.09 m long (the capsule's hemispherical caps add 0.045 m at each end).
    assert 0.1 / 12 < resolved["pole_inertia"] < 0.1 * 1.09 ** 2 / 12
    # An explicit value in the guard file wins over the model's.
    assert resolve_fallback({**_fallback_spec("cartpole_balance"), "gear": 8.0}, task)["gear"] == 8.0

