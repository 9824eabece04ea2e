"""collect -> world_model -> synthesize -> model-based train, run for real, and what users read from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from conftest import run_cli, run_train
from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET, WORLD_MODEL_FILE
from physai.synthetic.dataset import SOURCE_REAL, SOURCE_SYNTHETIC, DatasetError, read_dataset
from physai.synthetic.world_model import EnsembleDynamicsModel, WorldModelError


# The shared run is also the fresh machine without a working renderer: a MUJOCO_GL the user exported that
# cannot render here (GLX with no X display). Videos are asked for, so the stages must say why there are none.
NO_RENDERER = {"MUJOCO_GL": "glx", "DISPLAY": None, "WAYLAND_DISPLAY": None, "PHYSAI_GL_DECISION": None}


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("synthetic") / "run"
    result = run_train(["experiment=synthetic_smoke", f"hydra.run.dir={run_dir}", "tracking=none"], video=True,
                       env_overrides=NO_RENDERER)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_without_a_renderer_every_artifact_is_written_and_the_report_says_why(synthetic_run):
    for artifact in ["checkpoints/final/model.zip", "bundle/policy.onnx", "bundle/manifest.json", "summary.json",
                     "report/report.md", "report/learning_curve.png", REAL_DATASET, SYNTHETIC_DATASET,
                     WORLD_MODEL_FILE]:
        assert (synthetic_run / artifact).exists(), artifact
    assert not list((synthetic_run / "report").glob("*.mp4"))
    summary = _summary(synthetic_run)
    assert summary["eval"]["video"] is None and summary["synthesize"]["dream_video"] is None
    for missing in (summary["eval"]["video_missing"], summary["synthesize"]["dream_video_missing"]):
        assert "MUJOCO_GL=glx does not render" in missing and "X display" in missing
    report = (synthetic_run / "report" / "report.md").read_text()
    assert "An evaluation episode: no video (MUJOCO_GL=glx does not render" in report
    assert "dream beside the simulator: no video (MUJOCO_GL=glx does not render" in report
    assert summary["gates"]["gates"] and "profile" in summary and "delay_eval" in summary


def test_world_model_figures_beat_the_naive_baselines(synthetic_run):
    report = _summary(synthetic_run)["world_model"]["report"]
    one_step = report["one_step"]
    assert one_step["model"]["next_obs_mse"] < one_step["identity"]["next_obs_mse"]
    assert one_step["model"]["next_obs_mse"] < one_step["linear"]["next_obs_mse"]
    open_loop = report["open_loop"]
    assert set(open_loop["state_error"]) == {"model", "identity", "linear"}
    assert len(open_loop["state_error"]["model"]) == len(open_loop["horizons"])
    calibration = report["calibration"]
    # Measured on every held-out transition, over the state columns the network predicts.
    state_dims = read_dataset(synthetic_run / REAL_DATASET).observation_space.shape[0]
    assert calibration["n"] == report["n_heldout"]
    assert calibration["dims"] == state_dims - len(report["exact_columns"])
    for level, coverage in calibration["coverage"].items():
        # A coverage is a count of z-scores over n x dims of them.
        covered = coverage * calibration["n"] * calibration["dims"]
        assert covered == pytest.approx(round(covered), abs=1e-6), level
    # A world model fit on the smoke data is roughly calibrated (the known-Gaussian test in test_world_model.py
    # checks the arithmetic): its 90% intervals cover 70-99% of the held-out truth.
    assert 0.7 <= calibration["coverage"]["0.9"] <= 0.99 and 0.3 < calibration["mean_z_squared"] < 3, calibration
    assert (synthetic_run / "report" / "world_model_open_loop.png").stat().st_size > 0


def test_every_synthetic_transition_carries_its_provenance(synthetic_run):
    summary = _summary(synthetic_run)
    real = read_dataset(synthetic_run / REAL_DATASET, expected_task_id="physai/CartpoleBalance-v0")
    synthetic = read_dataset(synthetic_run / SYNTHETIC_DATASET, expected_task_id="physai/CartpoleBalance-v0")
    assert (real.transitions.source == SOURCE_REAL).all()
    rows = synthetic.transitions
    assert len(rows) > 0 and (rows.source == SOURCE_SYNTHETIC).all()
    tables = synthetic.provenance_tables
    assert tables.model_hashes == (summary["world_model"]["model_hash"],)
    assert tables.scenario_names == ("heavy_pole_push",)
    assert tables.parent_dataset_id == real.dataset_id
    assert (rows.model_index == 0).all() and (rows.scenario == 0).all()
    assert np.isin(rows.parent_state_id, real.transitions.state_id).all()
    assert rows.branch_depth.min() >= 1 and rows.branch_depth.max() <= summary["synthesize"]["scenario"]["horizon"]
    assert (rows.uncertainty <= summary["synthesize"]["scenario"]["max_disagreement"]).all()
    # The prompt asked for a 30-60% heavier pole: the branches were conditioned on it.
    pole = list(tables.context_names).index("mass_scale/pole")
    assert ((rows.context[:, pole] >= 1.3) & (rows.context[:, pole] <= 1.6)).all()


def test_model_based_training_saw_real_and_synthetic_data(synthetic_run):
    train = _summary(synthetic_run)["train"]
    assert train["algo"] == "mbpo"
    assert train["model_based"]["warm_start"]["real"] > 0
    assert train["model_based"]["warm_start"]["synthetic"] > 0
    assert "eval" in _summary(synthetic_run)


def test_data_info_shows_what_a_dataset_holds(synthetic_run):
    result = run_cli(["data", "info", str(synthetic_run / SYNTHETIC_DATASET)])
    assert result.returncode == 0, result.stderr
    for text in ("synthetic", "heavy_pole_push", "checksum", "ok"):
        assert text in result.stdout


def test_a_tampered_dataset_is_refused(synthetic_run, tmp_path):
    copy = tmp_path / "real"
    shutil.copytree(synthetic_run / REAL_DATASET, copy)
    data_file = copy / "data" / "main_data.hdf5"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="sha256"):
        read_dataset(copy)
    result = run_cli(["data", "info", str(copy)])
    assert "MISMATCH" in result.stdout + result.stderr


def test_a_dataset_for_other_spaces_is_refused(synthetic_run):
    wrong = spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    with pytest.raises(DatasetError, match="observation_space"):
        read_dataset(synthetic_run / REAL_DATASET, observation_space=wrong)


def test_a_world_model_for_another_task_is_refused(synthetic_run):
    with pytest.raises(WorldModelError) as info:
        EnsembleDynamicsModel.load(synthetic_run / WORLD_MODEL_FILE, expected_task_id="Pendulum-v1")
    assert "Pendulum-v1" in str(info.value) and "physai/CartpoleBalance-v0" in str(info.value)


def test_non_finite_predictions_stop_their_branch_and_are_never_kept(synthetic_run):
    from physai.synthetic.imagine import imagine
    from physai.synthetic.scenario import Starts

    model = EnsembleDynamicsModel.load(synthetic_run / WORLD_MODEL_FILE)
    real = read_dataset(synthetic_run / REAL_DATASET)
    obs = real.transitions.obs[:64].copy()
    obs[5] = np.nan  # a corrupted start state
    starts = Starts(obs=obs, context=real.transitions.context[:64], parent_state_id=real.transitions.state_id[:64])
    rng = np.random.default_rng(0)
    imagined = imagine(model, lambda o: np.zeros((len(o), 1), np.float32), starts, horizon=5,
                       max_disagreement=10.0, rng=rng)
    assert imagined.stats["stopped_nonfinite"] == 1
    assert 5 not in set(imagined.branch.tolist())
    assert np.isfinite(imagined.next_obs).all() and np.isfinite(imagined.reward).all()


def test_a_scenario_for_another_task_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["experiment=synthetic_smoke", "scenario=car_lane/obstacle_late", f"hydra.run.dir={run_dir}",
                        "tracking=none"])
    assert result.returncode != 0
    assert "written for task 'physai/CarLane-v0'" in result.stderr
    assert not (run_dir / "datasets").exists()


def test_synthesize_without_a_scenario_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["pipeline=synthetic", "algo=sac", f"hydra.run.dir={run_dir}", "tracking=none"])
    assert result.returncode != 0
    assert "scenario=<task>/<name>" in result.stderr
    assert not (run_dir / "datasets").exists()


def test_the_bundles_guard_watches_the_ensemble_the_policy_learned_with(synthetic_run):
    # MBPO refits its own ensemble (with synthetic.world_model's settings) and trains on its branches:
    # that ensemble, from the final checkpoint, is the one the edge guard's disagreement monitor runs.
    manifest = json.loads((synthetic_run / "bundle" / "manifest.json").read_text())
    learner = json.loads((synthetic_run / "checkpoints" / "final" / "world_model.pt.json").read_text())
    assert manifest["world_model"]["model_id"] == learner["model_id"]
    assert learner["config"]["members"] == 5 and learner["config"]["hidden"] == 64  # synthetic_smoke's world model


def test_the_policy_is_evaluated_under_its_scenario_on_real_physics_beside_nominal(synthetic_run):
    summary = _summary(synthetic_run)
    section = summary["scenario_eval"]
    assert section["scenario"] == "heavy_pole_push" and section["staged"]["context"] == {"mass_scale/pole": [1.3, 1.6]}
    # Nominal conditions are the evaluate stage's own episodes: same policy, same seeds, same returns.
    assert section["nominal"]["seeds"] == section["under_scenario"]["seeds"] == summary["eval"]["seeds"]
    assert section["nominal"]["episode_returns"] == pytest.approx(summary["eval"]["episode_returns"])
    paired = np.subtract(section["under_scenario"]["episode_returns"], section["nominal"]["episode_returns"])
    assert section["difference"]["mean"] == pytest.approx(paired.mean()) and section["difference"]["n"] == 3
    report = (synthetic_run / "report" / "report.md").read_text()
    assert "## Scenario `heavy_pole_push` staged in the simulator" in report
    assert ("pushes: pole_shove on velocities[1] (push_dofs -1.5 to 1.5; once per episode, at episode step 2-5)"
            in report)


def test_a_reference_run_plays_the_same_staged_episodes_for_comparison(synthetic_run, tmp_path):
    # Rerun scenario_eval on a copy with the original run as the reference: the same policy on the same
    # seeds under the same staged physics must return exactly what this run returns.
    copy = tmp_path / "run"
    shutil.copytree(synthetic_run, copy)
    result = run_cli(["run", str(copy), "--stages", "scenario_eval,report", "tracking=none",
                      f"evaluate.scenario_reference={synthetic_run}"])
    assert result.returncode == 0, result.stderr[-2000:]
    section = _summary(copy)["scenario_eval"]
    reference = section["reference"]
    assert reference["run_dir"] == str(synthetic_run) and reference["algo"] == "mbpo"
    assert reference["under_scenario"]["episode_returns"] == section["under_scenario"]["episode_returns"]
    assert reference["this_minus_reference_under_scenario"]["mean"] == 0.0
    report = (copy / "report" / "report.md").read_text()
    assert f"### This run against the reference `{synthetic_run}` (mbpo)" in report
    assert "No gain under the scenario is established at 95%." in report
    # A reference that is not a finished run is refused before any stage runs, naming the key.
    result = run_cli(["run", str(copy), "--stages", "scenario_eval", "tracking=none",
                      f"evaluate.scenario_reference={tmp_path / 'nowhere'}"])
    assert result.returncode != 0 and "evaluate.scenario_reference=" in result.stderr
    assert "not a finished physai run" in result.stderr


def test_before_dreams_train_anything_the_report_says_how_far_the_model_holds_for_the_scenario(synthetic_run):
    summary = _summary(synthetic_run)
    trust = summary["synthesize"]["trust"]
    real = read_dataset(synthetic_run / REAL_DATASET)
    column = real.transitions.context[:, list(real.provenance_tables.context_names).index("mass_scale/pole")]
    pole = trust["extrapolation"]["mass_scale/pole"]  # the prompt asks for 1.3-1.6; collect drew 0.7-1.3
    assert pole["real"] == pytest.approx([column.min(), column.max()]) and pole["extrapolation"]
    assert pole["outside_by"] == pytest.approx(1.6 - column.max())
    # Measured on real physics: the heavier pole staged in the simulator, the shove left to the dream.
    assert trust["staged"]["context"] == {"mass_scale/pole": [1.3, 1.6]} and trust["staged"]["kicks"] == []
    assert trust["transitions"] == 2000 and trust["report"]["one_step"]["model"]["n"] == 2000
    assert trust["cut_by_disagreement"] == pytest.approx(summary["synthesize"]["stopped_uncertain"]
                                                         / summary["synthesize"]["branches"])
    report = (synthetic_run / "report" / "report.md").read_text()
    assert "## How far the world model can be trusted for `heavy_pole_push`" in report
    assert "| real data under the scenario | 2000 |" in report
