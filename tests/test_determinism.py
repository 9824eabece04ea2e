"""Same seed on CPU, same numbers: a fresh run twice, and a resume from one checkpoint twice.

Both run the real pipeline in-process (PPO on the batched cart-pole, then the evaluate stage).
A resume restores every RNG the run draws from (python, numpy, torch, the engine's generator and
the action space) after the envs are reset, so two resumes from the same checkpoint agree exactly.
"""

from __future__ import annotations

import shutil

import numpy as np
import torch

from conftest import compose_config
from physai.config.compose import build_task
from physai.run.pipeline import run_pipeline
from physai.train.checkpoints import LATEST_POINTER
from physai.train.sb3 import load_checkpoint

BASE = ["experiment=smoke", "tracking=none", "pipeline.stages=[train,evaluate]", "evaluate.video=false",
        "algo.checkpoint_every_steps=512"]


def _run(run_dir, *extra: str) -> dict:
    return run_pipeline(compose_config([*BASE, *extra]), run_dir)


def _parameters(cfg, run_dir) -> dict[str, torch.Tensor]:
    model = load_checkpoint(cfg.algo, run_dir / "checkpoints" / "final", task=build_task(cfg.env))
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_same_seed_gives_the_same_evaluation_returns(tmp_path):
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b")
    assert first["eval"]["episode_returns"] == second["eval"]["episode_returns"]
    assert (tmp_path / "a" / "train_curve.csv").read_bytes() == (tmp_path / "b" / "train_curve.csv").read_bytes()
    other_seed = _run(tmp_path / "c", "seed=1")
    assert other_seed["eval"]["episode_returns"] != first["eval"]["episode_returns"]


def test_two_resumes_from_one_checkpoint_agree_exactly(tmp_path):
    _run(tmp_path / "full")
    cfg = compose_config([*BASE, "resume=true"])
    returns, parameters = [], []
    for name in ("r1", "r2"):
        run_dir = tmp_path / name
        shutil.copytree(tmp_path / "full", run_dir)
        # Back to the step-1024 checkpoint, as if the run had been killed after writing it.
        shutil.rmtree(run_dir / "checkpoints" / "final")
        for later in run_dir.glob("checkpoints/step_*"):
            if int(later.name.split("_")[1]) > 1024:
                shutil.rmtree(later)
        (run_dir / "checkpoints" / LATEST_POINTER).write_text("step_0000001024\n")
        summary = run_pipeline(cfg, run_dir)
        assert summary["train"]["resumed_from_step"] == 1024 and summary["train"]["timesteps"] == 2048
        returns.append(summary["eval"]["episode_returns"])
        parameters.append(_parameters(cfg, run_dir))
    assert returns[0] == returns[1]
    for key, value in parameters[0].items():
        assert torch.equal(value, parameters[1][key]), key
    assert np.isfinite(returns[0]).all()
