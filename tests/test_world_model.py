"""The ensemble world model and its report, on small systems where the truth is known.

The main fixture is a damped pendulum whose gravity is a per-episode physics context and whose
episodes terminate when it spins too fast: nonlinear (sin, cos), context-dependent, with
rare terminations and a little process noise, so every part of the model has something to learn.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from physai.core.errors import PhysaiError
from physai.synthetic.model_report import (
                                           IdentityBaseline,
                                           LinearBaseline,
                                           baseline_one_step_metrics,
                                           calibration,
                                           model_report,
                                           one_step_metrics,
                                           open_loop_error,
                                           open_loop_figure,
                                           )
from physai.synthetic.world_model import EnsembleDynamicsModel, WorldModelError, sidecar_path

DT = 0.1
NOISE = 0.01
SPIN_LIMIT = 6.0  # |omega| above this terminates the episode
TINY = dict(members=5, elites=3, hidden=64, layers=2)


def pendulum_step(theta, omega, torque, gravity, rng):
    """Semi-implicit Euler pendulum with damping, plus Gaussian process noise."""
    acceleration = -gravity * np.sin(theta) - 0.2 * omega + torque
    omega_next = omega + DT * acceleration + NOISE * rng.standard_normal(theta.shape)
    theta_next = theta + DT * omega_next + NOISE * rng.standard_normal(theta.shape)
    reward = np.cos(theta) - 0.05 * omega ** 2 - 0.01 * torque ** 2
    return theta_next, omega_next, reward, np.abs(omega_next) > SPIN_LIMIT


def observe(theta, omega):
    return np.stack([np.cos(theta), np.sin(theta), omega], axis=-1)


def transitions(n, rng, gravity=None):
    """Independent transitions from states spread over the whole state space."""
    theta = rng.uniform(-np.pi, np.pi, n)
    omega = rng.uniform(-6, 6, n)
    torque = rng.uniform(-2, 2, n)
    g = rng.uniform(5, 15, n) if gravity is None else np.full(n, float(gravity))
    theta2, omega2, reward, done = pendulum_step(theta, omega, torque, g, rng)
    return {"obs": observe(theta, omega), "act": torque[:, None], "next_obs": observe(theta2, omega2),
            "reward": reward, "terminated": done, "context": g[:, None]}


def episodes(count, length, rng):
    """Real episodes with random torques, each with its own gravity; ends on termination."""
    out = []
    for _ in range(count):
        gravity = rng.uniform(5, 15)
        theta, omega = np.array([rng.uniform(-np.pi, np.pi)]), np.array([rng.uniform(-2, 2)])
        obs, acts = [observe(theta, omega)[0]], []
        for _ in range(length):
            torque = rng.uniform(-2, 2, 1)
            theta, omega, _, done = pendulum_step(theta, omega, torque, np.array([gravity]), rng)
            obs.append(observe(theta, omega)[0])
            acts.append(torque)
            if done[0]:
                break
        out.append({"obs": np.array(obs), "act": np.array(acts), "context": np.array([gravity])})
    return out


def fit_args(split):
    return (split["obs"], split["act"], split["next_obs"], split["reward"], split["terminated"])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"train": transitions(4000, rng), "heldout": transitions(1000, rng), "episodes": episodes(12, 60, rng)}


@pytest.fixture(scope="module")
def trained(data):
    model = EnsembleDynamicsModel(3, 1, context_dim=1, context_names=["gravity"], seed=0, **TINY)
    started = time.perf_counter()
    figures = model.fit(*fit_args(data["train"]), context=data["train"]["context"], max_epochs=60, patience=8,
                        batch_size=128, progress=False, rng_seed=1)
    figures["wall"] = time.perf_counter() - started
    return model, figures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks run as fast on one thread and do not thrash when the cores are shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def heldout_args(split):
    return split["obs"], split["act"], split["next_obs"], split["reward"]


def test_fit_reports_figures_and_valid_elites(trained):
    model, figures = trained
    assert figures["epochs"] >= 1 and figures["train_seconds"] > 0
    assert len(figures["val_mse_per_member"]) == model.members == 5
    elites = figures["elite_indices"]
    assert len(elites) == model.elites == 3 and len(set(elites)) == 3
    assert all(0 <= i < model.members for i in elites)
    others = [mse for i, mse in enumerate(figures["val_mse_per_member"]) if i not in elites]
    assert max(figures["val_mse_per_member"][i] for i in elites) <= min(others)
    # Early stopping kept each member's best snapshot, far better than the untrained start.
    assert max(figures["val_mse_per_member"]) < 0.05 * min(figures["initial_val_mse_per_member"])
    assert figures["wall"] < 30


def test_ensemble_beats_identity_and_linear_one_step(trained, data):
    model, _ = trained
    train, heldout = data["train"], data["heldout"]
    ours = one_step_metrics(model, *heldout_args(heldout), context=heldout["context"])
    for baseline in (IdentityBaseline.fit(train), LinearBaseline.fit(train)):
        theirs = baseline_one_step_metrics(baseline, *heldout_args(heldout), context=heldout["context"])
        assert ours["next_obs_mse"] < 0.1 * theirs["next_obs_mse"], baseline.name
        assert ours["reward_mse"] < 0.1 * theirs["reward_mse"], baseline.name
    assert np.isfinite(ours["nll_normalized_per_dim"])


def test_open_loop_error_grows_with_horizon_for_every_horizon(trained, data):
    model, _ = trained
    train = data["train"]
    horizons = (1, 5, 10, 25, 50)
    result = open_loop_error(model, data["episodes"], horizons,
                             baselines=(IdentityBaseline.fit(train), LinearBaseline.fit(train)))
    assert result["horizons"] == list(horizons)
    assert all(n > 0 for n in result["n_starts"])
    for name in ("model", "identity", "linear"):
        assert len(result["state_error"][name]) == len(horizons)
        assert np.isfinite(result["state_error"][name]).all()
        assert len(result["state_error_median"][name]) == len(horizons)
    model_error = result["state_error"]["model"]
    assert all(a < b for a, b in zip(model_error, model_error[1:])), model_error
    for name in ("identity", "linear"):
        assert model_error[0] < result["state_error"][name][0]
        assert model_error[2] < result["state_error"][name][2]
    figure = open_loop_figure(result)
    assert len(figure.axes[0].lines) == 3


def test_open_loop_refuses_horizons_longer_than_every_episode(trained, data):
    model, _ = trained
    with pytest.raises(PhysaiError, match="horizon 500"):
        open_loop_error(model, data["episodes"], (1, 500))
    # Reports drop (and list) the horizons no episode reaches instead of failing after training.
    lenient = open_loop_error(model, data["episodes"], (1, 500), drop_unreachable=True)
    assert lenient["horizons"] == [1] and lenient["unreachable_horizons"] == [500]


def test_calibration_90_percent_interval_covers_sensibly(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    result = calibration(model, heldout["obs"], heldout["act"], heldout["next_obs"], context=heldout["context"])
    assert 0.7 <= result["coverage"]["0.9"] <= 0.99, result
    assert result["coverage"]["0.5"] < result["coverage"]["0.9"] < result["coverage"]["0.95"]
    assert 0 <= result["expected_calibration_error"] < 0.2
    assert 0.3 < result["mean_z_squared"] < 3


class _GaussianStub:
    """Two elites whose next-state means sit at +-spread around the truth's mean, each with aleatoric variance
    ``noise``: the predictive variance is noise + spread^2. Column 2 is an exact rule (zero variance)."""

    def __init__(self, spread: float, noise: float) -> None:
        import torch

        self.spread, self.noise = spread, noise
        self.exact_mask = torch.tensor([False, False, True, False])

    def predict(self, obs, act, context=None):
        n = len(obs)
        offset = np.zeros((2, n, 3))
        offset[0, :, :2], offset[1, :, :2] = self.spread, -self.spread
        offset[:, :, 2] = 5.0
        variance = np.full((2, n, 3), self.noise)
        variance[:, :, 2] = 0.0
        return {"next_obs_mean": obs[None] + offset, "next_obs_var": variance,
                "reward_mean": np.zeros((2, n)), "reward_var": np.ones((2, n))}


def test_calibration_on_a_known_gaussian():
    # The true next-state deltas are N(0, 1) in columns 0 and 1 (column 2 is exactly 5).
    rng = np.random.default_rng(11)
    n = 100_000
    obs, act = rng.normal(size=(n, 3)), np.zeros((n, 1))
    next_obs = obs + np.column_stack([rng.standard_normal(n), rng.standard_normal(n), np.full(n, 5.0)])
    # Means at +-0.6 with noise 0.64: predictive variance 0.64 + 0.36 = 1, the truth's. Central intervals cover
    # their level (binomial sd < 0.0012 over 200,000 z-scores) and E[z^2] = 1.
    result = calibration(_GaussianStub(0.6, 0.64), obs, act, next_obs)
    assert result["n"] == n and result["dims"] == 2  # the exact column is left out
    assert result["coverage"] == pytest.approx({"0.5": 0.5, "0.9": 0.9, "0.95": 0.95}, abs=0.006)
    assert result["expected_calibration_error"] < 0.005
    assert result["mean_z_squared"] == pytest.approx(1.0, abs=0.02)
    # Means at +-0.3 with noise 0.16: variance 0.25, half the true sd. The central level-p interval is
    # +-z_p / 2 true sds, so it covers erf(z_p / 2 / sqrt(2)) of the truth (z_p from a normal table:
    # 0.6745, 1.6449, 1.9600 -> 25.9%, 58.9%, 67.5%), and E[z^2] = 4.
    result = calibration(_GaussianStub(0.3, 0.16), obs, act, next_obs)
    expected = {level: math.erf(z / 2 / math.sqrt(2)) for level, z in (("0.5", 0.674490), ("0.9", 1.644854),
                                                                        ("0.95", 1.959964))}
    assert result["coverage"] == pytest.approx(expected, abs=0.006)
    assert result["mean_z_squared"] == pytest.approx(4.0, abs=0.08)


def test_model_report_is_json_and_complete(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    report = model_report(model, data["train"], heldout, data["episodes"])
    text = json.dumps(report, allow_nan=False)
    assert set(report["one_step"]) == {"model", "identity", "linear"}
    assert report["open_loop"]["horizons"] == [1, 5, 10, 25, 50]
    assert report["one_step_skill_vs_linear"] > 0.5
    assert report["termination"]["heldout_rate"] > 0
    assert "NaN" not in text


def test_context_conditioning_changes_predictions(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    low = model.predict(heldout["obs"], heldout["act"], np.array([5.0]))["next_obs_mean"].mean(axis=0)
    high = model.predict(heldout["obs"], heldout["act"], np.array([15.0]))["next_obs_mean"].mean(axis=0)
    assert np.abs(low - high)[:, 2].mean() > 0.2  # omega: gravity changes dw by ~dt * 10 * sin(theta)
    # The true context predicts better than a wrong one.
    right = model.predict(heldout["obs"], heldout["act"], heldout["context"])["next_obs_mean"].mean(axis=0)
    wrong = model.predict(heldout["obs"], heldout["act"], 20.0 - heldout["context"])["next_obs_mean"].mean(axis=0)
    assert ((right - heldout["next_obs"]) ** 2).mean() < 0.1 * ((wrong - heldout["next_obs"]) ** 2).mean()


def test_predict_shapes_elites_and_chunking(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    rows = slice(0, 50)
    args = (heldout["obs"][rows], heldout["act"][rows], heldout["context"][rows])
    full = model.predict(*args, elites_only=False)
    assert full["next_obs_mean"].shape == (5, 50, 3) and full["reward_var"].shape == (5, 50)
    assert full["is_elite"].sum() == 3
    elites = model.predict(*args)
    assert elites["next_obs_mean"].shape == (3, 50, 3) and elites["is_elite"].all()
    np.testing.assert_allclose(elites["next_obs_mean"], full["next_obs_mean"][full["is_elite"]], rtol=1e-5, atol=1e-6)
    chunked = model.predict(*args, chunk_size=7)
    np.testing.assert_allclose(chunked["next_obs_mean"], elites["next_obs_mean"], rtol=1e-5, atol=1e-6)
    assert (full["next_obs_var"] > 0).all() and (full["reward_var"] > 0).all()


def test_termination_head_finds_terminations(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    prob = model.predict(heldout["obs"], heldout["act"], heldout["context"])["terminated_prob"]
    done = heldout["terminated"]
    assert done.sum() > 10
    ranks = np.argsort(np.argsort(prob))
    auc = (ranks[done].mean() - (done.sum() - 1) / 2) / (~done).sum()  # Mann-Whitney
    assert auc > 0.95
    assert prob[done].mean() > 10 * prob[~done].mean()


def test_sample_step_is_finite_and_disagreement_flags_out_of_distribution(trained, data):
    model, _ = trained
    heldout = data["heldout"]
    generator = np.random.default_rng(3)
    next_obs, reward, terminated, inside = model.sample_step(heldout["obs"], heldout["act"], heldout["context"],
                                                            generator)
    assert next_obs.shape == (1000, 3) and reward.shape == (1000,) and terminated.dtype == bool
    assert np.isfinite(next_obs).all() and np.isfinite(reward).all() and np.isfinite(inside).all()
    # Sampling noise is the model's noise, not larger: samples stay close to the truth.
    assert ((next_obs - heldout["next_obs"]) ** 2).mean() < 0.01
    far_obs = np.tile([[1.0, 0.0, 60.0]], (200, 1))
    _, _, _, outside = model.sample_step(far_obs, np.full((200, 1), 20.0), np.array([60.0]), generator)
    assert np.median(outside) > 5 * np.median(inside)
    np.testing.assert_allclose(model.disagreement(heldout["obs"], heldout["act"], heldout["context"]), inside,
                               rtol=1e-5, atol=1e-7)
    # Same seed, same samples.
    again = model.sample_step(heldout["obs"], heldout["act"], heldout["context"], 11)
    once = model.sample_step(heldout["obs"], heldout["act"], heldout["context"], 11)
    np.testing.assert_array_equal(again[0], once[0])


def test_sample_step_returns_non_finite_rows_instead_of_hiding_them(trained, data):
    model, _ = trained
    obs = data["heldout"]["obs"][:4].copy()
    obs[1, 2] = np.nan
    next_obs, reward, _, disagreement = model.sample_step(obs, data["heldout"]["act"][:4], np.array([10.0]), 0)
    assert np.isnan(next_obs[1]).all() and np.isnan(reward[1]) and np.isnan(disagreement[1])
    assert np.isfinite(next_obs[[0, 2, 3]]).all()


def test_sample_step_handles_100k_rows(trained):
    model, _ = trained
    rng = np.random.default_rng(4)
    big = transitions(100_000, rng)
    next_obs, reward, terminated, disagreement = model.sample_step(big["obs"], big["act"], big["context"], rng)
    assert next_obs.shape == (100_000, 3) and np.isfinite(next_obs).all() and np.isfinite(disagreement).all()


def test_save_load_round_trip_gives_identical_predictions(trained, data, tmp_path):
    model, _ = trained
    heldout = data["heldout"]
    path = tmp_path / "models" / "world_model.pt"
    digest = model.save(path, task_id="pendulum_gravity", obs_space_shape=(3,), act_space_shape=(1,),
                        extra_metadata={"dataset_id": "unit-test"})
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["model_hash"] == digest and sidecar["task_id"] == "pendulum_gravity"
    assert sidecar["context_names"] == ["gravity"] and sidecar["members"] == 5 and sidecar["elites"] == 3
    assert sidecar["training"]["elite_indices"] == [int(i) for i in model.elite_indices]
    assert model.model_id == f"pendulum_gravity-{digest[:12]}"
    loaded = EnsembleDynamicsModel.load(path, expected_task_id="pendulum_gravity", expected_obs_dim=3,
                                        expected_act_dim=1)
    assert loaded.model_id == model.model_id
    ours = model.predict(heldout["obs"], heldout["act"], heldout["context"], elites_only=False)
    theirs = loaded.predict(heldout["obs"], heldout["act"], heldout["context"], elites_only=False)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, sidecar_path(path).name])


def test_corrupted_file_fails_checksum_naming_the_file(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "wm.pt"
    model.save(path, task_id="pendulum_gravity")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WorldModelError, match="checksum") as error:
        EnsembleDynamicsModel.load(path)
    assert str(path) in str(error.value)


def test_model_for_another_task_or_shape_is_refused(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "wm.pt"
    model.save(path, task_id="pendulum_gravity")
    with pytest.raises(PhysaiError) as error:
        EnsembleDynamicsModel.load(path, expected_task_id="cartpole_balance")
    assert "pendulum_gravity" in str(error.value) and "cartpole_balance" in str(error.value)
    with pytest.raises(WorldModelError, match="obs_dim=3"):
        EnsembleDynamicsModel.load(path, expected_obs_dim=17)
    sidecar_path(path).unlink()
    with pytest.raises(WorldModelError, match="sidecar"):
        EnsembleDynamicsModel.load(path)


def test_refit_keeps_weights_and_never_ends_worse(data):
    train = data["train"]
    half = {key: value[:2000] for key, value in train.items()}
    model = EnsembleDynamicsModel(3, 1, context_dim=1, seed=5, **TINY)
    first = model.fit(*fit_args(half), context=half["context"], max_epochs=8, batch_size=128, progress=False)
    second = model.fit(*fit_args(train), context=train["context"], max_epochs=2, batch_size=128, progress=False)
    # The refit starts where the first fit ended, not from scratch.
    assert max(second["initial_val_mse_per_member"]) < 1.5 * max(first["val_mse_per_member"])
    assert max(second["initial_val_mse_per_member"]) < 0.7 * min(first["initial_val_mse_per_member"])
    assert all(after <= before + 1e-9 for after, before in
               zip(second["val_mse_per_member"], second["initial_val_mse_per_member"]))
    assert len(model.training_history) == 2


def test_bad_inputs_are_refused_before_training(data):
    train = data["train"]
    model = EnsembleDynamicsModel(3, 1, context_dim=1, **TINY)
    with pytest.raises(WorldModelError, match="context"):
        model.fit(*fit_args(train), progress=False)
    bad_reward = train["reward"].copy()
    bad_reward[7] = np.nan
    with pytest.raises(WorldModelError, match="reward"):
        model.fit(train["obs"], train["act"], train["next_obs"], bad_reward, train["terminated"],
                  context=train["context"], progress=False)
    with pytest.raises(WorldModelError, match="fit"):
        model.predict(train["obs"], train["act"], train["context"])
    with pytest.raises(PhysaiError, match="elites"):
        EnsembleDynamicsModel(3, 1, members=3, elites=4)


def collect_gym_pendulum(steps: int, seed: int):
    """Real Pendulum-v1 transitions under uniformly random torques, split into episodes."""
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    env.action_space.seed(seed)
    rows = {key: [] for key in ("obs", "act", "next_obs", "reward", "terminated")}
    episode_list, obs = [], env.reset(seed=seed)[0]
    current = {"obs": [obs], "act": []}
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, next_obs, reward, terminated)):
            rows[key].append(value)
        current["obs"].append(next_obs)
        current["act"].append(action)
        obs = next_obs
        if terminated or truncated:
            episode_list.append({"obs": np.array(current["obs"]), "act": np.array(current["act"])})
            obs = env.reset()[0]
            current = {"obs": [obs], "act": []}
    env.close()
    return {key: np.asarray(value) for key, value in rows.items()}, episode_list


def test_real_gymnasium_pendulum(tmp_path):
    split, _ = collect_gym_pendulum(3000, seed=0)
    heldout, heldout_episodes = collect_gym_pendulum(1000, seed=1)
    model = EnsembleDynamicsModel(3, 1, seed=1, **TINY)
    figures = model.fit(*fit_args(split), max_epochs=40, batch_size=128, progress=False, rng_seed=0)
    assert figures["termination_rate"] == 0.0
    assert figures["exact_columns"]["columns"] == []  # nothing in Pendulum-v1 is an exact affine rule
    prediction = model.predict(heldout["obs"], heldout["act"])
    # Pendulum never terminates, so the model must never predict a termination.
    assert prediction["terminated_prob"].max() < 1e-3
    assert not model.sample_step(heldout["obs"], heldout["act"], generator=0)[2].any()
    report = model_report(model, split, heldout, heldout_episodes, horizons=(1, 5, 10, 25))
    one_step = report["one_step"]
    assert one_step["model"]["next_obs_mse"] < one_step["identity"]["next_obs_mse"]
    assert one_step["model"]["next_obs_mse"] < one_step["linear"]["next_obs_mse"]
    assert one_step["model"]["reward_mse"] < 0.5 * one_step["linear"]["reward_mse"]
    assert report["open_loop"]["state_error"]["model"][0] < report["open_loop"]["state_error"]["model"][-1]


# ---------------------------------------------------------------------------- exact columns

EXACT_NAMES = ["cos", "sin", "omega", "last_torque", "command"]


def with_exact_columns(split, rng, jump_rate=0.01):
    """Pendulum rows plus what a robot task adds: ``last_torque`` (next value = the action just
    taken, halved: an exact affine rule) and ``command`` (kept except for rare random jumps, as a
    command resampled on a timer: not exact, so it stays with the network)."""
    n = len(split["act"])
    previous = rng.uniform(-2, 2, (n, 1))
    command = rng.uniform(0.3, 0.8, (n, 1))
    jumps = rng.random((n, 1)) < jump_rate
    next_command = np.where(jumps, rng.uniform(0.3, 0.8, (n, 1)), command)
    return {**split, "obs": np.concatenate([split["obs"], 0.5 * previous, command], axis=1),
            "next_obs": np.concatenate([split["next_obs"], 0.5 * split["act"], next_command], axis=1)}


@pytest.fixture(scope="module")
def exact_data():
    rng = np.random.default_rng(10)
    return {"train": with_exact_columns(transitions(3000, rng), rng),
            "heldout": with_exact_columns(transitions(500, rng), rng)}


@pytest.fixture(scope="module")
def exact_trained(exact_data):
    train = exact_data["train"]
    model = EnsembleDynamicsModel(5, 1, context_dim=1, context_names=["gravity"], obs_names=EXACT_NAMES, seed=0,
                                  **TINY)
    initial_output = model.output_layer.weight.detach().clone()
    figures = model.fit(*fit_args(train), context=train["context"], max_epochs=25, batch_size=128, progress=False,
                        rng_seed=1)
    return model, figures, initial_output


def test_action_copy_is_detected_and_predicted_exactly(exact_trained, exact_data):
    model, figures, _ = exact_trained
    heldout = exact_data["heldout"]
    found = figures["exact_columns"]["columns"]
    # The halved action copy is found with its rule; the jumping command is not.
    assert [column["name"] for column in found] == ["last_torque"] and model.exact_columns == [3]
    assert found[0]["rule"] == "next last_torque = 0.5 * act[0]"
    assert found[0]["max_abs_error"] <= found[0]["tolerance"] < 1e-3
    prediction = model.predict(heldout["obs"], heldout["act"], heldout["context"], elites_only=False)
    np.testing.assert_allclose(prediction["next_obs_mean"][..., 3], np.broadcast_to(0.5 * heldout["act"][:, 0],
                                                                                     (5, 500)), atol=1e-6)
    assert (prediction["next_obs_var"][..., 3] == 0).all() and (prediction["next_obs_var"][..., :3] > 0).all()
    next_obs, _, _, disagreement = model.sample_step(heldout["obs"], heldout["act"], heldout["context"], 0)
    np.testing.assert_allclose(next_obs[:, 3], 0.5 * heldout["act"][:, 0], atol=1e-6)
    assert np.isfinite(next_obs).all() and np.isfinite(disagreement).all()
    # An exact column adds nothing to disagreement: the network's columns alone give the same figure.
    mean, _, _ = model._forward_normalized((torch_inputs(model, heldout)), model.elite_indices)
    assert (mean[..., 3].std(dim=0) == 0).all()
    # The network still learns the rest.
    linear = LinearBaseline.fit(exact_data["train"])
    ours = one_step_metrics(model, *heldout_args(heldout), context=heldout["context"])
    theirs = baseline_one_step_metrics(linear, *heldout_args(heldout), context=heldout["context"])
    assert ours["next_obs_mse_per_dim"][3] < 1e-12
    assert sum(ours["next_obs_mse_per_dim"][:3]) < 0.2 * sum(theirs["next_obs_mse_per_dim"][:3])


def torch_inputs(model, split):
    import torch

    x = torch.from_numpy(model._inputs(split["obs"], split["act"], split["context"]))
    return (x - model.input_mean) / model.input_std


def test_exact_columns_output_weights_are_left_alone(exact_trained):
    """No gradient and no weight decay: decay alone would shrink them into slow denormal floats."""
    model, _, initial = exact_trained
    T = model.target_dim
    now = model.output_layer.weight.detach()
    for column in (3, T + 3):  # last_torque's mean and log-variance outputs
        assert torch_equal(initial[..., column], now[..., column])
    assert not torch_equal(initial[..., 2], now[..., 2])  # the network's own columns did train


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_report_lists_exact_columns_and_keeps_variance_figures_finite(exact_trained, exact_data):
    model, _, _ = exact_trained
    heldout = exact_data["heldout"]
    episodes_with_columns = []
    for episode in episodes(4, 30, np.random.default_rng(2)):
        last_torque = 0.5 * np.concatenate([[[0.0]], episode["act"]])  # the torque applied before each obs
        command = np.full_like(last_torque, 0.5)
        episodes_with_columns.append({"obs": np.concatenate([episode["obs"], last_torque, command], axis=1),
                                      "act": episode["act"], "context": episode["context"]})
    report = model_report(model, exact_data["train"], heldout, episodes_with_columns, horizons=(1, 5))
    json.dumps(report, allow_nan=False)
    assert [column["name"] for column in report["exact_columns"]] == ["last_torque"]
    # NLL and calibration describe the network's distribution: 3 pendulum + command deltas + reward.
    assert report["one_step"]["model"]["nll_dims"] == 5 and report["calibration"]["dims"] == 4
    assert np.isfinite(report["one_step"]["model"]["nll_normalized_per_dim"])


def test_pendulum_has_no_exact_columns(trained):
    model, figures = trained
    assert figures["exact_columns"]["status"] == "checked" and figures["exact_columns"]["columns"] == []
    assert model.exact_columns == [] and model.metadata()["exact_columns"] == []


def test_exact_rule_survives_save_and_load(exact_trained, exact_data, tmp_path):
    model, _, _ = exact_trained
    heldout = exact_data["heldout"]
    path = tmp_path / "wm.pt"
    model.save(path, task_id="pendulum_with_actions")
    sidecar = json.loads(sidecar_path(path).read_text())
    assert [column["rule"] for column in sidecar["exact_columns"]] == ["next last_torque = 0.5 * act[0]"]
    assert sidecar["obs_names"] == EXACT_NAMES
    loaded = EnsembleDynamicsModel.load(path, expected_obs_dim=5)
    assert loaded.exact_columns == [3] and loaded.exact_columns_info == model.exact_columns_info
    ours = model.predict(heldout["obs"], heldout["act"], heldout["context"], elites_only=False)
    theirs = loaded.predict(heldout["obs"], heldout["act"], heldout["context"], elites_only=False)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


def rewrite_payload(path, edit):
    """Change a saved model's payload and re-sign it, as an older physai would have written it."""
    import hashlib
    import io

    import torch

    payload = torch.load(path, weights_only=True)
    edit(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["model_hash"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    sidecar_path(path).write_text(json.dumps(sidecar))


def test_version_1_files_load_without_exact_columns_and_unknown_versions_are_refused(trained, data, tmp_path):
    model, _ = trained
    heldout = data["heldout"]
    path = tmp_path / "wm.pt"
    model.save(path, task_id="pendulum_gravity")

    def as_version_1(payload):
        payload["format_version"] = 1
        for name in ("exact_mask", "exact_weight", "exact_bias"):
            del payload["state"][name]

    rewrite_payload(path, as_version_1)
    old = EnsembleDynamicsModel.load(path)
    assert old.exact_columns == []
    np.testing.assert_array_equal(old.predict(heldout["obs"], heldout["act"], heldout["context"])["next_obs_mean"],
                                  model.predict(heldout["obs"], heldout["act"], heldout["context"])["next_obs_mean"])
    rewrite_payload(path, lambda payload: payload.update(format_version=99))
    with pytest.raises(WorldModelError, match="format version 99"):
        EnsembleDynamicsModel.load(path)


def test_refit_drops_a_rule_the_new_data_breaks_and_detection_can_be_off(exact_data):
    train = exact_data["train"]
    model = EnsembleDynamicsModel(5, 1, context_dim=1, obs_names=EXACT_NAMES, seed=2, **TINY)
    first = model.fit(*fit_args(train), context=train["context"], max_epochs=1, batch_size=256, progress=False)
    assert [column["index"] for column in first["exact_columns"]["columns"]] == [3]
    broken = {**train, "next_obs": train["next_obs"].copy()}
    broken["next_obs"][::50, 3] += 0.3  # now and then the copy is off: no longer an exact rule
    second = model.fit(*fit_args(broken), context=train["context"], max_epochs=1, batch_size=256, progress=False)
    assert second["exact_columns"]["columns"] == [] and model.exact_columns == []
    assert (model.predict(train["obs"][:20], train["act"][:20], train["context"][:20])["next_obs_var"] > 0).all()
    third = model.fit(*fit_args(train), context=train["context"], max_epochs=1, batch_size=256, progress=False,
                      detect_exact=False)
    assert third["exact_columns"]["status"] == "disabled" and model.exact_columns == []


def test_exact_detection_needs_enough_rows_and_names_must_match():
    rng = np.random.default_rng(0)
    few = with_exact_columns(transitions(12, rng), rng)
    model = EnsembleDynamicsModel(5, 1, context_dim=1, **TINY)
    figures = model.fit(*fit_args(few), context=few["context"], max_epochs=1, progress=False)
    # 12 rows, 8 coefficients: any column would fit; detection says why it did not run.
    assert figures["exact_columns"]["status"].startswith("skipped: 12 rows") and model.exact_columns == []
    with pytest.raises(PhysaiError, match="obs_names"):
        EnsembleDynamicsModel(5, 1, obs_names=["only", "two"])


def test_a_column_that_never_changes_stays_with_the_network():
    rng = np.random.default_rng(1)
    split = transitions(600, rng)
    flat = {**split, "obs": np.concatenate([split["obs"], np.zeros((600, 1))], axis=1),
            "next_obs": np.concatenate([split["next_obs"], np.zeros((600, 1))], axis=1)}
    model = EnsembleDynamicsModel(4, 1, context_dim=1, obs_names=["cos", "sin", "omega", "z"], **TINY)
    figures = model.fit(*fit_args(flat), context=flat["context"], max_epochs=1, progress=False)
    # "next z = 0" is exact, but a zero delta costs the network nothing: it is listed, not taken over.
    assert figures["exact_columns"]["columns"] == [] and figures["exact_columns"]["constant_columns"] == ["z"]
    assert model.exact_columns == []
