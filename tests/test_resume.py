"""Crash-safe training: a real ``train.py`` killed at a random point resumes and finishes.

SIGKILL gives the run no chance to react: the resumed run must start from the newest complete
checkpoint, lose at most one checkpoint interval of steps, and leave the full artifact set.
SIGTERM is a polite stop: the run writes a checkpoint where it stopped and exits with 143.
The kill point is random; its seed is printed so a failure can be replayed (PHYSAI_KILL_SEED).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, run_train

INTERVAL = 1024   # algo.checkpoint_every_steps: four smoke rollouts (2 envs x 128 steps)
TOTAL = 8192


def _args(run_dir):
    return ["experiment=smoke", "tracking=none", f"hydra.run.dir={run_dir}", f"algo.total_timesteps={TOTAL}",
            f"algo.checkpoint_every_steps={INTERVAL}", "pipeline.stages=[train,evaluate]", "evaluate.video=false"]


def _kill_seed() -> int:
    return int(os.environ.get("PHYSAI_KILL_SEED", random.SystemRandom().randrange(1 << 30)))


def _start_and_wait(run_dir, target: int) -> tuple[subprocess.Popen, int]:
    """Start a training run and return once its progress record passes ``target`` steps."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *_args(run_dir)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = run_dir / "train_progress.json"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        try:
            steps = json.loads(progress.read_text())["timesteps"]
        except (FileNotFoundError, ValueError, KeyError):
            steps = 0
        if steps >= target:
            return process, steps
        time.sleep(0.01)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"training never reached step {target} (exit {process.returncode}): {err[-3000:]}")


def _progress(run_dir) -> int:
    return json.loads((run_dir / "train_progress.json").read_text())["timesteps"]


def _assert_full_artifacts(run_dir, resumed_from: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"]["timesteps"] >= TOTAL and summary["train"]["resumed_from_step"] == resumed_from
    assert summary["eval"]["n_episodes"] == 3 and summary["eval"]["checkpoint_timesteps"] >= TOTAL
    final = run_dir / "checkpoints" / "final"
    for name in ("checkpoint.json", "model.zip", "normalization.npz", "rng_state.npz", "trainer_state.json",
                 "train_curve.csv"):
        assert (final / name).is_file(), name
    assert (run_dir / "train_curve.csv").is_file() and (run_dir / "config.yaml").is_file()
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"half-written checkpoints were left behind: {leftovers}"
    steps = [int(line.split(",")[0]) for line in (run_dir / "train_curve.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps), "the resumed curve repeats or reorders episodes"
    return summary


def test_sigkill_at_a_random_point_loses_at_most_one_checkpoint_interval(tmp_path):
    seed = _kill_seed()
    target = random.Random(seed).randrange(INTERVAL + 256, TOTAL - 3 * INTERVAL)
    run_dir = tmp_path / "run"
    process, _ = _start_and_wait(run_dir, target)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    reached = _progress(run_dir)  # the last rollout the killed run recorded
    assert not (run_dir / "checkpoints" / "final").exists(), "the run finished before it could be killed"

    result = run_train([*_args(run_dir), "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_from = json.loads((run_dir / "summary.json").read_text())["train"]["resumed_from_step"]
    lost = reached - resumed_from
    print(f"\nSIGKILL (seed {seed}): killed after step {reached}, resumed from step {resumed_from}: "
          f"{lost} steps lost, checkpoint interval {INTERVAL}")
    assert 0 <= lost <= INTERVAL, f"lost {lost} steps (> one checkpoint interval of {INTERVAL}); seed {seed}"
    _assert_full_artifacts(run_dir, resumed_from)


def test_sigterm_writes_a_checkpoint_and_exits_143_then_resumes(tmp_path):
    seed = _kill_seed()
    target = random.Random(seed).randrange(INTERVAL + 256, TOTAL - 3 * INTERVAL)
    run_dir = tmp_path / "run"
    process, reached = _start_and_wait(run_dir, target)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-3000:]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    saved = int(latest.split("_")[1])
    checkpoint = run_dir / "checkpoints" / latest
    assert "stopped by SIGTERM" in err and str(checkpoint) in err
    assert f"physai run {run_dir} resume=true" in err and f"resume=true hydra.run.dir={run_dir}" in err
    assert "Traceback" not in err
    assert saved >= reached, f"the stop checkpoint (step {saved}) is older than the progress seen ({reached})"
    assert (checkpoint / "checkpoint.json").is_file() and not (run_dir / "checkpoints" / "final").exists()
    print(f"\nSIGTERM (seed {seed}): signalled after step {reached}, checkpoint written at step {saved}")

    result = run_cli(["run", str(run_dir), "resume=true"])  # the command the message names
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_full_artifacts(run_dir, saved)


# ----- what a checkpoint holds, in-process --------------------------------------------------------
TINY_MBPO = ["algo=mbpo", "env=cartpole_balance", "algo.n_envs=2", "algo.learning_starts=100", "algo.gradient_steps=1",
             "algo.batch_size=64", "algo.model_train_every=100", "algo.rollout_batch=200",
             "algo.rollout_length=[0,1,1,1]", "synthetic.world_model.members=3", "synthetic.world_model.elites=2",
             "synthetic.world_model.hidden=32", "synthetic.world_model.layers=2", "synthetic.world_model.max_epochs=3",
             "synthetic.world_model.max_seconds=1", "algo.net_arch=[32,32]",
             "algo.buffer_size=5000", "algo.total_timesteps=400"]


def _draws(model) -> list[float]:
    """The next number from every generator a run draws from."""
    import numpy as np
    import torch

    from physai.train.checkpoints import _generators

    generators = _generators(model)
    return [random.random(), float(np.random.rand()), float(torch.rand(1)), float(generators["engine"].random()),
            float(generators["action_space"].random())]


def test_an_mbpo_checkpoint_holds_ensemble_buffers_counters_and_rng_states(tmp_path):
    import numpy as np
    import torch

    from conftest import compose_config
    from physai.config import validate_config
    from physai.config.compose import build_task
    from physai.synthetic.replay_buffers import ModelBuffer
    from physai.train.checkpoints import read_trainer_state, restore_rng, save_checkpoint
    from physai.train.sb3 import build_model, build_vec_env, load_checkpoint

    torch.set_num_threads(1)
    cfg = compose_config(TINY_MBPO)
    validate_config(cfg)
    task = build_task(cfg.env)
    model = build_model(cfg.algo, build_vec_env(task, cfg.algo, 0), 0, cfg.synthetic.world_model)
    assert (model.model_members, model.model_hidden, model.model_max_epochs) == (3, 32, 3)  # the world model's
    model.learn(300)
    assert bool(model.dynamics_model.is_fitted) and len(model.model_buffer) > 0
    run_dir = tmp_path / "run"
    path = save_checkpoint(model, run_dir / "checkpoints", "step_0000000300", task_id=task.id)
    assert {"world_model.pt", "world_model.pt.json", "model_buffer.npz", "replay_buffer.npz"} <= {
        p.name for p in path.iterdir()}
    expected = _draws(model)  # what the run would have drawn next

    venv = build_vec_env(task, cfg.algo, 0)
    loaded = load_checkpoint(cfg.algo, path, venv, run_dir=run_dir, task_id=task.id,
                             world_model=cfg.synthetic.world_model)
    venv.reset()  # learn() resets the envs first; the generators are restored after that
    assert {"engine", "action_space"} <= set(restore_rng(loaded, path, read_trainer_state(path)))
    assert _draws(loaded) == expected

    # The fitted ensemble, the synthetic rows (round by round) and the real rows with their physics context.
    for key, value in model.dynamics_model.state_dict().items():
        assert torch.equal(value, loaded.dynamics_model.state_dict()[key]), key
    assert len(loaded.model_buffer.rounds) == len(model.model_buffer.rounds)
    for name in ModelBuffer.FIELDS:
        assert np.array_equal(loaded.model_buffer._flat[name], model.model_buffer._flat[name]), name
    assert loaded.replay_buffer.model_buffer is loaded.model_buffer
    real, restored = model.replay_buffer, loaded.replay_buffer
    assert (restored.pos, restored.full) == (real.pos, real.full) and real.context_dim > 0
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts", "contexts"):
        assert np.array_equal(getattr(restored, name)[: real.pos], getattr(real, name)[: real.pos]), name
    # Weights, optimizer moments, entropy coefficient and counters.
    for key, value in model.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key
    for optimizer in ("actor", "critic"):
        saved = getattr(model, optimizer).optimizer.state_dict()["state"]
        again = getattr(loaded, optimizer).optimizer.state_dict()["state"]
        assert all(torch.equal(saved[i]["exp_avg"], again[i]["exp_avg"]) for i in saved), optimizer
    assert torch.equal(model.log_ent_coef, loaded.log_ent_coef)
    assert (loaded.num_timesteps, loaded._n_updates, loaded._next_model_round) == (
        300, model._n_updates, model._next_model_round)
    assert loaded.mbpo_stats == model.mbpo_stats
    loaded.learn(100, reset_num_timesteps=False)
    assert loaded.num_timesteps == 400


def test_a_corrupted_or_foreign_checkpoint_is_refused_before_anything_is_unpickled(tmp_path):
    import shutil

    from conftest import compose_config
    from physai.config.compose import build_task
    from physai.train.checkpoints import CheckpointError
    from physai.train.sb3 import load_checkpoint, train_policy

    cfg = compose_config(["experiment=smoke", "tracking=none", "algo.total_timesteps=512",
                          "algo.checkpoint_every_steps=256"])
    task = build_task(cfg.env)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")

    class _NoTracker:
        def log(self, *_):
            pass

    train_policy(task, cfg.algo, 0, run_dir, _NoTracker(), resume=False)
    final = run_dir / "checkpoints" / "final"
    load_checkpoint(cfg.algo, final, task=task)  # a whole checkpoint in its run directory loads

    # Outside its run directory (a copy elsewhere, or a symlink into the run pointing out): refused.
    elsewhere = tmp_path / "elsewhere" / "final"
    shutil.copytree(final, elsewhere)
    with pytest.raises(CheckpointError, match="not inside the run directory|not in a physai run directory"):
        load_checkpoint(cfg.algo, elsewhere, task=task)
    with pytest.raises(CheckpointError, match="not inside the run directory"):
        load_checkpoint(cfg.algo, final, task=task, run_dir=tmp_path / "another_run")
    (run_dir / "checkpoints" / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CheckpointError, match="not inside the run directory"):
        load_checkpoint(cfg.algo, run_dir / "checkpoints" / "linked", task=task)

    # A flipped byte in the archive fails its checksum and names the other checkpoints.
    archive = final / "model.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"final/model.zip does not match its manifest checksum.*step_0000000256"):
        load_checkpoint(cfg.algo, final, task=task)
    # Without its manifest a directory is not a checkpoint: resume skips it, loading refuses it.
    (final / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="has no checkpoint.json"):
        load_checkpoint(cfg.algo, final, task=task)
