"""Shared helpers: compose configs in-process, run ``train.py`` for real in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from physai.config import register_configs
from physai.envs.rendering import choose_gl_backend

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

register_configs()
# Probe the renderer once here; every training subprocess inherits the decision instead of probing again.
choose_gl_backend()

# Training subprocesses keep video off unless the test is about video: rendering would cost the suite minutes.
NO_VIDEO = ["evaluate.video=false", "synthetic.synthesize.dream_video=false"]


@pytest.fixture
def one_torch_thread():
    """Training tests run torch on one thread (what the benchmarks' workers use), then restore it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def run_train(args: list[str], timeout: float = 300, video: bool = False, env_overrides: dict | None = None,
              **kwargs) -> subprocess.CompletedProcess:
    """``train.py ARGS`` in a subprocess; ``env_overrides`` change its environment (None values unset)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args, *([] if video else NO_VIDEO)],
                          cwd=kwargs.pop("cwd", REPO), capture_output=True, text=True, timeout=timeout, env=env,
                          **kwargs)


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "physai.run.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One real ``experiment=smoke`` run (wandb offline), shared by the tests that read its artifacts."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    (run_dir.parent / "tmp").mkdir()  # its own temp dir, to check what a run leaves there
    result = run_train(["experiment=smoke", f"hydra.run.dir={run_dir}"], video=True,
                       env_overrides={"TMPDIR": str(run_dir.parent / "tmp")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def require_rendering() -> None:
    """Fail (never skip) a test about video when this machine cannot render, naming why."""
    from physai.envs.rendering import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.fail(f"this test needs off-screen rendering, which is unavailable: {reason}")
