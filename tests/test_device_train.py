"""The GPU host's training run (``physai.bench.device_train``): rsl-rl's PPO on the engine without SB3 or Hydra,
timed to the task's solved threshold."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

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


def test_the_run_is_timed_to_the_threshold_and_not_beyond(tmp_path):
    """A threshold no policy can reach: the run spends its budget, reports no time to it, and its training clock
    leaves out the evaluations (each evaluation's clock reading is below the next)."""
    from physai.bench.device_train import main

    main(["--task", "cartpole_balance", "--envs", "8", "--backend", "rollout", "--eval-every", "1",
          "--eval-episodes", "2", "--threshold", "501", "--minutes", "0.05", "--out", str(tmp_path)])
    figures = json.loads((tmp_path / "train_cartpole_balance_rollout_device.json").read_text())
    assert not figures["solved"] and figures["time_to_threshold_s"] is None
    assert figures["train_clock_s"] >= 3.0 and figures["physics_device"] == "cpu (C MuJoCo)"
    clocks = [evaluation["train_clock_s"] for evaluation in figures["evaluations"]]
    assert len(clocks) == figures["iterations"] and clocks == sorted(clocks)
    assert all(max(e["returns"]) <= 500 for e in figures["evaluations"])


def test_its_ppo_settings_are_algo_rsl_ppos_defaults():
    """The GPU run trains with what ``algo=rsl_ppo`` defaults to, four minibatches a rollout as there."""
    defaults = {field.name: field.default if field.default is not dataclasses.MISSING else field.default_factory()
                for field in dataclasses.fields(RslPPOConfig)}
    assert {key: defaults[key] for key in RSL_PPO_DEFAULTS} == RSL_PPO_DEFAULTS
    assert defaults["n_envs"] * defaults["n_steps"] // defaults["batch_size"] == MINIBATCHES
    assert ppo_settings(4096, [])["batch_size"] == 4096 * 24 // MINIBATCHES


@pytest.mark.parametrize("change, named", [
    (["lr=3e-4"], "KEY one of"),
    (["learning_rate"], "KEY=VALUE"),
    (["n_steps=7"], "does not split into 4 minibatches"),
])
def test_a_bad_setting_is_refused_with_what_to_write(change, named):
    with pytest.raises(SystemExit, match=named):
        ppo_settings(6 if change == ["n_steps=7"] else 64, change)
