"""A training run killed mid-way continues from its last checkpoint with ``resume=true``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, run_train


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "tracking=none", f"hydra.run.dir={run_dir}", "algo.total_timesteps=20000",
            "algo.checkpoint_every_steps=1024", "pipeline.stages=[train,evaluate]"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not pointer.exists():
        time.sleep(0.2)
    assert pointer.exists(), "no checkpoint was written within two minutes"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = int(pointer.read_text().strip().split("_")[1])
    assert not (run_dir / "checkpoints" / "final").exists(), "the run finished before it could be killed"

    result = run_train([*args, "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"]["resumed_from_step"] >= killed_at >= 1024
    assert summary["train"]["timesteps"] >= 20000
    assert "eval" in summary
