"""Distillation: a state teacher labels what a camera student sees (DAgger), in-process and through train.py."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest

from physai.config.compose import build_task
from physai.config.validate import validate_config
from physai.core.errors import BundleError, ConfigError
from physai.deploy.release import release_gates
from physai.edge.runtime import EdgePolicy
from physai.run.cli import main
from physai.train.distill import (DAggerDistill, check_teacher_matches, check_teacher_source, teacher_algo,
                                  teacher_task)
from physai.train.vec_env import make_training_vec_env
from tests.conftest import compose_config, require_rendering, run_train


class PoleController:
    """A hand-written state controller of the cart-pole: push toward the side the pole leans and swings to."""

    def predict(self, state: np.ndarray) -> np.ndarray:
        # columns: cart_pos, sin(angle), cos(angle), cart velocity, angular velocity
        return np.clip(4.0 * state[:, 1:2] + 0.5 * state[:, 4:5] + 0.1 * state[:, 3:4], -1.0, 1.0)


def test_dagger_rounds_label_every_visited_frame_and_fit_the_labels(one_torch_thread, tmp_path):
    require_rendering()
    cfg = compose_config(["env=cartpole_balance_pixels", "algo=distill", "algo.teacher_preset=ppo_cartpole_balance",
                          "env.task.pixels.height=48", "env.task.pixels.width=48"])
    task = build_task(cfg.env)
    venv = make_training_vec_env(task, 4, seed=0)
    model = DAggerDistill("MultiInputPolicy", venv, n_steps=64, n_epochs=4, batch_size=64, learning_rate=1e-3,
                          seed=0, policy_kwargs={"net_arch": [32]})
    model.set_teacher(PoleController())
    model.learn(3 * 64 * 4)
    assert model.rounds == 3 and model.dataset_size == 3 * 64 * 4
    labels = model._labels[:model.dataset_size]
    assert np.abs(labels).max() <= 1.0 and labels.std() > 0.05  # the teacher acted on varied states
    # The student learned the labels: its error is well below that of always answering their mean.
    frames = {key: value[:256] for key, value in model._observations.items()}
    predicted, _ = model.policy.predict(frames, deterministic=True)
    student_error = float(np.mean((predicted - labels[:256]) ** 2))
    baseline_error = float(np.mean((labels[:256] - labels.mean()) ** 2))
    assert student_error < 0.5 * baseline_error, (student_error, baseline_error)
    # A checkpoint keeps the round count but no frames, and no row count of frames it does not hold: a resumed
    # run starts a fresh dataset instead of regressing onto rows never written.
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        saved = json.loads(archive.read("data"))
    assert saved["rounds"] == 3 and not {"_stored", "_observations", "_labels", "teacher"} & set(saved)
    venv.close()


def test_a_teacher_of_another_task_is_refused_naming_both_term_lists():
    cfg = compose_config(["env=cartpole_balance_pixels", "algo=distill", "algo.teacher_preset=ppo_cartpole_balance"])
    student = build_task(cfg.env)
    reach = build_task(compose_config(["env=reach2d"]).env)
    names, _ = reach.signal_names()
    with pytest.raises(ConfigError, match="joint_angles"):
        check_teacher_matches(names, student, "algo.teacher_run=elsewhere")
    own, _ = teacher_task(student).signal_names()
    check_teacher_matches(own, student, "the state twin")  # the same task without pixels is accepted


def test_teacher_settings_come_from_a_preset_and_bad_names_are_refused():
    algo = teacher_algo("ppo_cartpole_balance", 5000)
    assert algo.name == "ppo" and algo.total_timesteps == 5000 and algo.n_envs == 16
    with pytest.raises(ConfigError, match="is not a preset"):
        teacher_algo("ppo_cartpole_balanse", None)
    cfg = compose_config(["env=cartpole_balance_pixels", "algo=distill", "algo.teacher_preset=null"])
    validate_config(cfg)
    with pytest.raises(ConfigError, match="teacher_run and algo.teacher_preset are both unset"):
        check_teacher_source(cfg.algo, build_task(cfg.env))
    with pytest.raises(ConfigError, match="has none"):  # a state task has nothing to distill into
        check_teacher_source(cfg.algo, build_task(compose_config(["env=cartpole_balance"]).env))


def test_train_py_distills_a_pixel_policy_from_a_teacher_run(smoke_run, tmp_path):
    """The pipeline with the smoke run's state policy as teacher: trained, checkpointed and evaluated."""
    run_dir = tmp_path / "pixels"
    result = run_train(["experiment=smoke", "env=cartpole_balance_pixels", "algo=distill",
                        f"algo.teacher_run={smoke_run}", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"]["teacher"]["source"] == str(smoke_run)
    assert summary["train"]["distillation"] == {"rounds": 4, "frames": 1024, "labelled_frames": 1024}
    assert summary["eval"]["n_episodes"] == 3 and (run_dir / "checkpoints" / "final" / "model.zip").is_file()
    # The student leaves as a bundle: uint8 camera frames in, parity on the frames it met, evaluated closed loop.
    bundle = summary["bundle"]
    assert bundle["parity"]["max_abs_error"] <= 1e-4 and bundle["parity"]["samples"] > 100
    assert bundle["eval"]["n_episodes"] == 3
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    (pixels,) = manifest["io"]["inputs"]
    assert pixels["name"] == "pixels" and pixels["dtype"] == "uint8" and pixels["shape"] == ["batch", 64, 64, 9]
    assert pixels["layout"] == "NHWC" and pixels["camera"]["name"] == "side"
    policy = EdgePolicy.load(run_dir / "bundle")
    frame = np.zeros((64, 64, 9), dtype=np.uint8)
    assert policy.act({"pixels": frame}).shape == (1,) and policy.act({"pixels": frame[None]}).shape == (1, 1)
    for bad, needle in [({"pixels": frame.astype(np.float32)}, "uint8 images"), ({"pixels": frame[:32]}, "shape"),
                        ({"image": frame}, "missing ['pixels']"), (frame, "pass a dict")]:
        with pytest.raises(BundleError, match=re.escape(needle)):
            policy.act(bad)
    # FP16 and static INT8 variants, the INT8 calibrated on the run's own frames, each judged on the frames it met.
    variants = bundle["variants"]
    assert variants["int8"]["method"].startswith("onnxruntime static") and variants["int8"]["calibration_observations"] > 0
    for name in ("fp16", "int8"):
        assert variants[name]["parity_vs_fp32"]["samples"] > 100 and variants[name]["eval"]["seeds"] == bundle["eval"]["seeds"]
        if variants[name]["written"]:
            assert EdgePolicy.load(run_dir / "bundle", variant=name).act({"pixels": frame}).shape == (1,)
    # `physai profile BUNDLE` times the camera policy through the runtime on frames of its input shape.
    assert main(["profile", str(run_dir / "bundle"), "--iterations", "100", "--batch", "1,4", "--out",
                 str(tmp_path / "profile")]) == 0
    figures = json.loads((tmp_path / "profile" / "profile.json").read_text())
    assert [row["batch"] for row in figures["batches"]] == [1, 4] and figures["batches"][0]["p50_ms"] > 0
    # The release gates take it like any bundle: timed side by side on frames, judged on closed-loop returns.
    result = release_gates(run_dir / "bundle", reference=run_dir / "bundle", devices=["jetson_orin_nano"],
                           iterations=200, repeats=1)
    gates = {gate["name"]: gate for gate in result["gates"]}
    assert gates["quality_drop"]["passed"] and "p99_vs_reference" in gates
    assert gates["jetson_orin_nano_solves_under_delay"]["basis"] == "delay_eval"


def test_random_shift_moves_images_by_at_most_the_pad_and_keeps_their_values():
    from physai.train.distill import random_shift
    import torch

    images = torch.zeros((8, 3, 16, 16), dtype=torch.uint8)
    images[:, :, 7:9, 7:9] = 200  # a bright square in the middle
    shifted = random_shift(images, 2, np.random.default_rng(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    centres = [np.argwhere(s[0].numpy() == 200).mean(axis=0) for s in shifted]
    offsets = np.array(centres) - 7.5
    assert np.abs(offsets).max() <= 2 and len({tuple(o) for o in offsets}) > 1  # moved, differently, within the pad
    assert set(np.unique(shifted.numpy())) <= {0, 200}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sb3_learns_on_a_camera_task_through_its_multi_input_policy(algo, one_torch_thread):
    """Pixel RL for those with the budget: SB3's own algorithms take the Dict space (a CNN per image)."""
    from physai.train.sb3 import build_model, build_vec_env

    require_rendering()
    budget = ["algo.n_steps=32", "algo.batch_size=32"] if algo == "ppo" else [
        "algo.learning_starts=16", "algo.buffer_size=256", "algo.batch_size=16", "algo.net_arch=[32]"]
    cfg = compose_config([f"algo={algo}", "env=cartpole_balance_pixels", "algo.n_envs=2", "algo.normalize_obs=false",
                          "env.task.pixels.height=48", "env.task.pixels.width=48", *budget])
    task = build_task(cfg.env)
    venv = build_vec_env(task, cfg.algo, seed=0)
    model = build_model(cfg.algo, venv, seed=0)
    assert type(model.policy).__name__ in ("MultiInputActorCriticPolicy", "MultiInputPolicy")
    model.learn(64)
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2, 1) and np.isfinite(action).all()
    venv.close()


def test_observation_normalization_of_a_camera_task_is_refused_before_training():
    from physai.stages import train as train_stage

    cfg = compose_config(["env=cartpole_balance_pixels", "algo=ppo"])  # PPO normalizes observations by default
    with pytest.raises(ConfigError, match="algo.normalize_obs=false"):
        train_stage.check(cfg, build_task(cfg.env))
