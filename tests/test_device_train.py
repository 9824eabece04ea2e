"""The GPU host's training run (``physai.bench.device_train``): rsl-rl's PPO on the engine without SB3 or Hydra,
timed to the task's solved threshold."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import types

import pytest
import torch

from physai.bench.device_train import MINIBATCHES, RSL_PPO_DEFAULTS, ppo_settings
from physai.config.schema import RslPPOConfig

# What the GPU host lacks and the run must not import: the training stack, and what rsl-rl-lib and tensorboard
# declare but import only to log or export (benchmarks/gpu_sim.sh carries rsl-rl-lib without them).
ABSENT = ["stable_baselines3", "hydra", "omegaconf", "wandb", "matplotlib", "onnx", "onnxscript", "onnxruntime",
          "git", "rich", "optuna", "envpool", "grpc", "markdown", "werkzeug", "PIL", "tensorboard_data_server",
          "setuptools"]


def test_the_gpu_hosts_training_run_needs_none_of_the_training_stack(tmp_path):
    """With the training stack's imports made to fail, a run on the Warp backend (Warp's CPU device here) trains,
    evaluates and stops at the first evaluation at or above the threshold, which it reports as the time to it."""
    argv = ["--task", "cartpole_balance", "--envs", "16", "--backend", "warp", "--eval-every", "2",
            "--eval-episodes", "3", "--threshold=-1e9", "--minutes", "5", "--set", "n_steps=8",
            "--out", str(tmp_path)]
    script = (f"import sys\nsys.modules.update(dict.fromkeys({ABSENT!r}))\n"
              f"from physai.bench.device_train import main\nmain({argv!r})\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "train_cartpole_balance_warp_device.json").read_text())
    # Warp's CPU device ("cpu (<its name>)"), not the C engine ("cpu (C MuJoCo)")
    assert figures["physics_device"].startswith("cpu (") and figures["physics_device"] != "cpu (C MuJoCo)"
    assert figures["policy_device"] == "cpu"
    assert figures["batch_device"] == "cpu"  # on Warp the engine keeps its batch on the physics' device (torch)
    assert figures["settings"]["n_steps"] == 8 and figures["settings"]["batch_size"] == 16 * 8 // MINIBATCHES
    # Any return meets -1e9: the run stops at its first evaluation, after two iterations of 16 x 8 steps.
    assert figures["solved"] and figures["iterations"] == 2 and len(figures["evaluations"]) == 1
    first = figures["evaluations"][0]
    assert figures["timesteps_to_threshold"] == first["timesteps"] == 2 * 16 * 8
    assert figures["time_to_threshold_s"] == first["train_clock_s"] == figures["train_clock_s"]
    # Cart-pole's episodes end at 500 steps or when the pole falls, and every step earns at most 1.
    assert len(first["returns"]) == 3 and all(0 < r <= 500 for r in first["returns"])
    assert figures["versions"]["rsl-rl-lib"] is not None and figures["versions"]["mujoco-warp"] == "4.0.0"
    assert "solved in" in result.stderr


class FakeClock:
    """``device_train``'s clock, moved by hand: building the engine takes 50 s, an iteration 1 s and an evaluation
    1,000 s, whose mean returns are ``means`` in turn."""

    def __init__(self, monkeypatch, means: list[float]) -> None:
        from physai.bench import device_train

        self.now = 0.0
        self.means = list(means)
        real_engine, real_iteration = device_train.BatchedEngine, device_train.rollout_and_update

        def engine(*args, **kwargs):
            self.now += 50.0
            return real_engine(*args, **kwargs)

        def iteration(*args, **kwargs):
            self.now += 1.0
            return real_iteration(*args, **kwargs)

        def evaluate(alg, spec, episodes, device):
            self.now += 1000.0
            return [self.means.pop(0)] * episodes

        monkeypatch.setattr(device_train, "time", types.SimpleNamespace(perf_counter=lambda: self.now))
        monkeypatch.setattr(device_train, "BatchedEngine", engine)
        monkeypatch.setattr(device_train, "rollout_and_update", iteration)
        monkeypatch.setattr(device_train, "evaluate", evaluate)


def _run(tmp_path, *argv: str) -> dict:
    from physai.bench.device_train import main

    main(["--task", "cartpole_balance", "--envs", "8", "--backend", "rollout", "--set", "n_steps=8",
          "--eval-episodes", "2", *argv, "--out", str(tmp_path)])
    return json.loads((tmp_path / "train_cartpole_balance_rollout_device.json").read_text())


def test_the_training_clock_counts_the_engine_build_and_leaves_out_evaluations(tmp_path, monkeypatch):
    """Evaluations every 2 iterations (means 5, then 25; threshold 20): the second reaches it, at 50 s of engine
    build plus 4 iterations of training, whatever the 2,000 s the evaluations took."""
    FakeClock(monkeypatch, means=[5.0, 25.0])
    figures = _run(tmp_path, "--eval-every", "2", "--threshold", "20", "--minutes", "10")
    assert figures["solved"] and figures["iterations"] == 4
    assert figures["time_to_threshold_s"] == figures["train_clock_s"] == 54.0
    assert figures["timesteps_to_threshold"] == 4 * 8 * 8 and figures["first_iteration_s"] == 51.0
    assert [e["train_clock_s"] for e in figures["evaluations"]] == [52.0, 54.0]
    assert [e["eval_s"] for e in figures["evaluations"]] == [1000.0, 1000.0] and figures["wall_s"] == 2054.0
    assert figures["env_steps_per_s"] == 3 * 8 * 8 / 3.0  # after the first iteration: 3 of them in 3 s


def test_a_run_that_never_reaches_the_threshold_stops_when_its_budget_is_spent(tmp_path, monkeypatch):
    """A budget of 60 training seconds: the engine's 50 s and one iteration a second leave room for 10
    iterations, each evaluated below the threshold; the run reports no time to it."""
    FakeClock(monkeypatch, means=[5.0] * 20)
    figures = _run(tmp_path, "--eval-every", "1", "--threshold", "20", "--minutes", "1")
    assert not figures["solved"] and figures["time_to_threshold_s"] is None
    assert figures["iterations"] == 10 and figures["train_clock_s"] == 60.0 and len(figures["evaluations"]) == 10
    assert figures["physics_device"] == "cpu (C MuJoCo)" and figures["kernel_cache"] is None


def test_an_evaluation_plays_one_episode_per_env_to_its_end(tmp_path):
    """The real evaluation on cart-pole, whose episodes end at 500 steps or when the pole falls and earn at most
    1 a step: as many returns as episodes asked for, each in (0, 500]."""
    figures = _run(tmp_path, "--eval-every", "1", "--threshold", "501", "--minutes", "0.01")
    returns = figures["evaluations"][0]["returns"]
    assert len(returns) == 2 and all(0 < r <= 500 for r in returns)


def test_its_ppo_settings_are_algo_rsl_ppos_defaults():
    """The GPU run trains with what ``algo=rsl_ppo`` defaults to, four minibatches a rollout as there."""
    defaults = {field.name: field.default if field.default is not dataclasses.MISSING else field.default_factory()
                for field in dataclasses.fields(RslPPOConfig)}
    assert {key: defaults[key] for key in RSL_PPO_DEFAULTS} == RSL_PPO_DEFAULTS
    assert defaults["n_envs"] * defaults["n_steps"] // defaults["batch_size"] == MINIBATCHES
    assert ppo_settings(4096, [])["batch_size"] == 4096 * 24 // MINIBATCHES


@pytest.mark.parametrize("argv", [["--minutes", "0"], ["--eval-every", "0"], ["--envs", "-4"]])
def test_a_bound_below_one_is_refused_by_the_command_line(argv, capsys):
    from physai.bench.device_train import main

    with pytest.raises(SystemExit):
        main(["--task", "cartpole_balance", *argv])
    assert "is not above 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--backend", "wrap"], "name one of ['rollout', 'warp', 'warp_cuda']"),
    (["--backend", "rollout", "--batch", "device"], "a backend that steps torch tensors (env.backend=warp)"),
    pytest.param(["--device", "cuda"], "finds no CUDA device here; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_what_cannot_run_here_is_refused_before_training(argv, says, tmp_path):
    from physai.bench.device_train import main

    with pytest.raises(SystemExit, match=re.escape(says)):
        main(["--task", "cartpole_balance", "--envs", "8", *argv, "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("change, named", [
    (["lr=3e-4"], "KEY one of"),
    (["learning_rate"], "KEY=VALUE"),
    (["n_steps=7"], "does not split into 4 minibatches"),
])
def test_a_bad_setting_is_refused_with_what_to_write(change, named):
    with pytest.raises(SystemExit, match=named):
        ppo_settings(6 if change == ["n_steps=7"] else 64, change)
