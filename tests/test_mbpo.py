"""MBPO (physai.synthetic.mbpo) on real tasks with a real ensemble, at toy budgets.

Real parts throughout: gymnasium's Pendulum-v1 and the physai cart-pole (for the physics context),
SB3's SAC, the ensemble world model and ``imagine``; only the budgets and networks are tiny.
"""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from physai.synthetic.dataset import Episode, ProvenanceTables, read_dataset, write_dataset
from physai.synthetic.mbpo import MBPO, rollout_length_at, training_figures
from physai.synthetic.replay_buffers import MixedReplayBuffer
from physai.train.vec_env import make_training_vec_env

TINY = dict(learning_starts=100, batch_size=64, gradient_steps=1, learning_rate=1e-3, model_train_every=100,
            rollout_batch=300, rollout_length=[0, 1, 1, 1], model_members=3, model_elites=2, model_hidden=32,
            model_layers=2, model_max_epochs=5, model_train_seconds=2.0,
            policy_kwargs={"net_arch": [32, 32]})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pendulum_mbpo(seed=0, **overrides):
    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=seed)
    return MBPO("MlpPolicy", venv, seed=seed, device="cpu", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    model = pendulum_mbpo(real_ratio=0.25)
    model.learn(600)
    return model


def test_rollout_length_schedule_is_linear_between_its_steps():
    schedule = [1000, 3000, 1, 5]
    assert [rollout_length_at(schedule, s) for s in (0, 1000, 2000, 3000, 10_000)] == [1, 1, 3, 5, 5]


def test_training_refits_the_model_and_fills_the_model_buffer(trained):
    stats = trained.mbpo_stats
    # Rounds at the first update (step 101) and then every 100 real steps: 101, 201, ..., 501.
    assert stats["model_refits"] == 5 and stats["model_rounds"] == 5
    assert stats["last_val_mse"] is not None and np.isfinite(stats["last_val_mse"])
    assert stats["synthetic_generated"] > 0 and stats["generation_rate"] > 0
    # Retention keeps the newest 4 rounds of at most 300 one-step branches each.
    assert 0 < len(trained.model_buffer) <= 4 * 300
    assert len(trained.model_buffer.rounds) == 4
    assert trained.num_timesteps == 600
    figures = training_figures(trained)
    assert figures["model_refits"] == 5 and figures["real_steps"] == 600
    assert figures["synthetic_generated"] == stats["synthetic_generated"]


def test_batches_mix_real_and_synthetic_rows_at_the_configured_ratio(trained):
    buffer = trained.replay_buffer
    assert isinstance(buffer, MixedReplayBuffer) and buffer.model_buffer is trained.model_buffer
    batch = buffer.sample(64)
    assert buffer.last_batch_counts == (16, 48)  # real_ratio 0.25 of 64
    assert batch.observations.shape == (64, 3) and batch.rewards.shape == (64, 1)
    real_obs = buffer.observations[: buffer.pos, 0]
    synthetic_obs = trained.model_buffer._flat["obs"]
    # Real rows come first and only from the real buffer; the rest only from the model buffer.
    for row in batch.observations[:16].numpy():
        assert np.any(np.all(real_obs == row, axis=1))
    synthetic_rows = batch.next_observations[16:].numpy()
    for row in synthetic_rows:
        assert np.any(np.all(trained.model_buffer._flat["next_obs"] == row, axis=1))
    assert not any(np.any(np.all(buffer.next_observations[: buffer.pos, 0] == row, axis=1)) for row in synthetic_rows)
    assert synthetic_obs.shape[1] == 3
    # Synthetic next states are model predictions from real starts, not copies of real next states.
    data = buffer.real_transitions()
    assert data["obs"].shape == (600, 3) and data["context"] is None


def test_save_and_load_round_trip_without_pickling_the_ensemble(trained, tmp_path):
    path = tmp_path / "mbpo.zip"
    trained.save(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        data = json.loads(archive.read("data"))
    assert "dynamics_model" not in data and "model_buffer" not in data
    assert not any("dynamics" in name for name in names)
    assert data["mbpo_stats"]  # the small figures travel with the model
    trained.save_replay_buffer(tmp_path / "replay.pkl")
    with open(tmp_path / "replay.pkl", "rb") as handle:
        raw = pickle.load(handle)
    assert isinstance(raw, MixedReplayBuffer) and raw.model_buffer is None and raw.pos == 600

    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=1)
    loaded = MBPO.load(path, env=venv, device="cpu")
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    obs = np.zeros((4, 3), np.float32)
    assert np.allclose(loaded.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    assert loaded.num_timesteps == 600 and loaded.mbpo_stats["model_refits"] == 5
    # The ensemble and the synthetic rows are rebuilt: untrained and empty until the next round.
    assert not bool(loaded.dynamics_model.is_fitted) and len(loaded.model_buffer) == 0
    assert loaded.replay_buffer.model_buffer is loaded.model_buffer
    assert loaded.replay_buffer.sample(64) is not None and loaded.replay_buffer.last_batch_counts == (64, 0)
    loaded.learn(50, reset_num_timesteps=False)
    assert loaded.mbpo_stats["model_refits"] == 6 and len(loaded.model_buffer) > 0


def _pendulum_dataset(directory, kind, source, rng, episodes=3, steps=20):
    from gymnasium import spaces

    obs_space = spaces.Box(-8.0, 8.0, (3,), np.float32)
    act_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    made = []
    for i in range(episodes):
        obs = rng.uniform(-1, 1, (steps + 1, 3)).astype(np.float32)
        act = rng.uniform(-2, 2, (steps, 1)).astype(np.float32)
        truncated = np.zeros(steps, bool)
        truncated[-1] = True
        if source == "real":
            made.append(Episode.real(obs, act, rng.normal(size=steps), np.zeros(steps, bool), truncated, seed=i))
        else:
            made.append(Episode.synthetic(obs, act, rng.normal(size=steps), np.zeros(steps, bool), truncated,
                                          seed=i, model_index=0))
    tables = ProvenanceTables(model_hashes=("sha256:abc",)) if source == "synthetic" else ProvenanceTables()
    write_dataset(directory, made, dataset_id=f"Pendulum/{kind}-v0", kind=kind, task_id="Pendulum-v1",
                  observation_space=obs_space, action_space=act_space, provenance_tables=tables)
    return read_dataset(directory, expected_task_id="Pendulum-v1")


def test_warm_start_routes_real_rows_to_the_replay_buffer_and_synthetic_rows_to_the_model_buffer(tmp_path):
    rng = np.random.default_rng(0)
    real = _pendulum_dataset(tmp_path / "real", "real", "real", rng)
    synthetic = _pendulum_dataset(tmp_path / "synthetic", "synthetic", "synthetic", rng, episodes=2)
    model = pendulum_mbpo()
    counts = model.warm_start(real=real, synthetic=synthetic)
    assert counts == {"real": 60, "synthetic": 40, "dropped": 0} and model.warm_start_counts == counts
    buffer = model.replay_buffer
    assert buffer.pos == 60 and len(model.model_buffer) == 40
    assert model.num_timesteps == 0  # env steps of this run only
    np.testing.assert_allclose(buffer.observations[:60, 0], real.transitions.obs)
    # Actions are stored as SAC stores them: scaled from [-2, 2] to [-1, 1].
    np.testing.assert_allclose(buffer.actions[:60, 0], real.transitions.act / 2.0, atol=1e-6)
    # The last step of each episode is a timeout, not a termination.
    assert buffer.timeouts[:60, 0].sum() == 3 and buffer.dones[:60, 0].sum() == 3
    assert not buffer.real_transitions()["terminated"].any()
    np.testing.assert_allclose(model.model_buffer._flat["next_obs"], synthetic.transitions.next_obs)
    # Real rows feed the model's first fit; learning then runs as usual.
    model.learn(150)
    assert model.mbpo_stats["model_refits"] >= 1 and buffer.pos == 60 + 150


def test_physai_task_records_its_physics_context_for_the_model():
    from physai.envs.gym_task import GymTask
    from physai.envs.registry import packaged_task_configs

    config = packaged_task_configs()["cartpole_balance"]
    task = GymTask(id=config["id"], task=config["task"], nthread=1)
    venv = make_training_vec_env(task, 2, seed=0)
    model = MBPO("MlpPolicy", venv, seed=0, device="cpu", **TINY)
    engine = venv.engine
    assert model.context_names == list(engine.context_names) and len(model.context_names) == 2
    assert model.dynamics_model.context_dim == 2
    model.learn(240)
    contexts = model.replay_buffer.contexts[: model.replay_buffer.pos]
    # Startup randomization: each env keeps its draw, and every transition carries its env's.
    np.testing.assert_allclose(contexts, np.broadcast_to(engine.context_matrix(), contexts.shape), rtol=1e-6)
    assert model.mbpo_stats["model_refits"] >= 1 and len(model.model_buffer) > 0
    venv.close()


def test_bad_settings_are_refused_with_the_key():
    from physai.core.errors import ConfigError

    with pytest.raises(ConfigError, match="algo.rollout_length"):
        pendulum_mbpo(rollout_length=[1, 2, 3])
    with pytest.raises(ConfigError, match="algo.real_ratio"):
        pendulum_mbpo(real_ratio=1.5)


def test_algo_mbpo_composes_validates_and_builds():
    from physai.config.validate import validate_config
    from physai.train.sb3 import build_model
    from conftest import compose_config

    cfg = compose_config(["env=pendulum", "algo=mbpo"])
    validate_config(cfg)
    assert cfg.algo.tuned_for == "Pendulum-v1" and cfg.algo.name == "mbpo"
    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = build_model(cfg.algo, venv, seed=0, world_model=cfg.synthetic.world_model)
    assert isinstance(model, MBPO) and model.gradient_steps == cfg.algo.gradient_steps
    assert model.rollout_length == [float(v) for v in cfg.algo.rollout_length]
    # One world-model config: the ensemble MBPO refits is the one synthetic.world_model describes.
    wm = cfg.synthetic.world_model
    assert (model.model_members, model.model_elites, model.model_hidden, model.model_layers) == (
        wm.members, wm.elites, wm.hidden, wm.layers) == (7, 5, 128, 3)  # the pendulum preset's width and depth
    assert model.model_max_epochs == wm.max_epochs and model.model_train_seconds == wm.max_seconds


@pytest.mark.slow  # trains every arm of the synthetic benchmark end to end (about 13 s); its analysis is tested on hand-built curves
def test_bench_synthetic_reports_its_figures(tmp_path):
    from physai.bench.synthetic import bench_synthetic

    toy = dict(budget=200, eval_every=100, eval_episodes=2, reference_factor=2, sac={"learning_starts": 100},
               mbpo={"gradient_steps": 2, "model_train_every": 100, "rollout_batch": 300,
                     "model_members": 3, "model_elites": 2, "model_hidden": 32, "model_layers": 2,
                     "model_max_epochs": 3, "rollout_length": [0, 1, 1, 2]})
    # Two worker processes: the path the real benchmark takes on this machine.
    quick = dict(plans={"pendulum": toy}, generation_branches=500, generation_horizon=2, sim_seconds=0.05,
                 sim_rounds=2, batch_sizes=(8,), command="pytest", work_dir=tmp_path / "work")
    record = bench_synthetic(["pendulum"], [5, 6], tmp_path, workers=2, **quick)
    saved = json.loads((tmp_path / "synthetic.json").read_text())
    for key in ("real_steps_ratio", "generation_ratio", "command", "machine", "wall_clock_s", "tasks_detail"):
        assert key in saved, key
    detail = saved["tasks_detail"]["pendulum"]
    assert detail["budget_steps"] == 200 and detail["reference_budget_steps"] == 400 and detail["seeds"] == 2
    # One env, every arm evaluated at the start and then every 100 real steps: SAC for twice the budget.
    curves = saved["curves_per_seed"]["pendulum"]
    assert [c["steps"] for c in curves["sac"]] == [[0, 100, 200, 300, 400]] * 2
    for arm in ("sac_utd", "droq", "mbpo"):
        assert [c["steps"] for c in curves[arm]] == [[0, 100, 200]] * 2, arm
    runs = saved["runs"]["pendulum"]
    # Gradient steps after the 100 warm-up steps: SAC one per real step, the other arms two.
    assert [r["gradient_steps"] for r in runs["sac"]] == [300, 300]
    for arm in ("sac_utd", "droq", "mbpo"):
        assert [r["gradient_steps"] for r in runs[arm]] == [200, 200], arm
    # Scored from the per-seed curves as saved: SAC's final seed mean less 5% of its span to the random
    # policy, then the first checkpoint whose seed mean reaches it, for every arm.
    sac_final = (curves["sac"][0]["return"][-1] + curves["sac"][1]["return"][-1]) / 2
    reference = sac_final - 0.05 * (sac_final - detail["random_policy_return"])
    assert detail["reference_return"] == pytest.approx(reference)
    for arm in ("sac", "sac_utd", "droq", "mbpo"):
        mean = [(a + b) / 2 for a, b in zip(curves[arm][0]["return"], curves[arm][1]["return"])]
        reach = next((step for step, value in zip(curves[arm][0]["steps"], mean) if value >= reference), None)
        assert detail["arms"][arm]["steps_to_reach"] == reach, arm
    # Run again on the same work folder: no run trains again (the kept MBPO model serves the generation
    # rate), and the scores come back the same.
    again = bench_synthetic(["pendulum"], [5, 6], tmp_path / "again", workers=1, **quick)
    assert record["runs_resumed"] == 0 and again["runs_resumed"] == 4 * 2
    assert again["steps_to_reach"] == record["steps_to_reach"]
    assert again["curves_per_seed"] == json.loads(json.dumps(record["curves_per_seed"]))
    # Pendulum-v1 is a gymnasium env: its batched path is gymnasium's vector env (and EnvPool when installed).
    generation = saved["generation"]["pendulum"]
    assert {"single env", "gymnasium sync vector 8"} <= set(generation["simulator"])
    fastest = max(generation["simulator"].values(), key=lambda rate: rate["median"])
    assert generation["simulator"][generation["fastest_simulator_path"]] == fastest
    assert saved["generation_ratio"]["pendulum"] == pytest.approx(generation["synthetic_per_s"] / fastest["median"])
    assert (tmp_path / "synthetic_curves.png").stat().st_size > 0
    assert record["command"] == "pytest"


def _cartpole_prompt_model(prompt_share, use_context=True):
    from physai.config.compose import build_task, compose_config as compose
    from physai.synthetic.scenario import scenario_of_run

    cfg = compose(["env=cartpole_balance", "scenario=cartpole_balance/heavy_pole_push"])
    task = build_task(cfg.env)
    venv = make_training_vec_env(task, 2, seed=0)
    model = MBPO("MlpPolicy", venv, seed=0, device="cpu", prompt_share=prompt_share, use_context=use_context, **TINY)
    return model, scenario_of_run(cfg.scenario, task, "test"), venv


def test_prompted_branches_start_under_the_prompts_physics_and_run_its_horizon():
    model, scenario, venv = _cartpole_prompt_model(prompt_share=0.5)
    model.set_prompt(scenario)
    model.learn(240)
    last = model.mbpo_stats["last_round"]
    # Half of the 300 branches come from the prompt, the rest from real states: both kinds were made.
    assert 0 < last["prompted_transitions"] < last["transitions"]
    assert training_figures(model)["synthetic_prompted"] >= last["prompted_transitions"]
    assert training_figures(model)["prompt"] == "heavy_pole_push"

    data = model.replay_buffer.real_transitions()
    prompted = model.generate_prompted(data, 200, np.random.default_rng(1))
    pole = model.context_names.index("mass_scale/pole")
    # The real data saw the pole's mass at most 1.3x nominal; the prompt asks for 1.3-1.6x.
    assert data["context"][:, pole].max() <= 1.3 + 1e-6
    assert prompted.context[:, pole].min() >= 1.3 - 1e-6 and prompted.context[:, pole].max() <= 1.6 + 1e-6
    # Prompted branches run the prompt's 10-step horizon (unless cut), while MBPO's schedule here is 1 step.
    assert model.current_rollout_length() == 1 and prompted.depth.max() > 1
    assert prompted.depth.max() <= scenario.horizon
    venv.close()


def test_a_prompt_with_physics_needs_a_context_conditioned_model():
    from physai.core.errors import ConfigError

    model, scenario, venv = _cartpole_prompt_model(prompt_share=0.5, use_context=False)
    with pytest.raises(ConfigError, match="use_context"):
        model.set_prompt(scenario)
    venv.close()
    with pytest.raises(ConfigError, match="algo.prompt_share"):
        pendulum_mbpo(prompt_share=1.5)
