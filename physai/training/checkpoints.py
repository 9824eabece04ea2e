"""Atomic, rotating checkpoints: a killed run resumes from the newest complete one.

A checkpoint is a directory ``checkpoints/step_<N>/`` holding the SB3 model, the
normalization statistics and (off-policy) the replay buffer. It is assembled under a
temporary name and renamed into place, then ``checkpoints/latest`` is pointed at it, so a
crash at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from physai.io import fresh_staging_dir, replace_dir_atomically, write_text_atomic
from physai.training.normalization import NORMALIZATION_FILE, save_vecnormalize

MODEL_FILE = "model.zip"
REPLAY_FILE = "replay_buffer.pkl"
LATEST_POINTER = "latest"
FINAL_NAME = "final"


def save_checkpoint(model, checkpoint_root: Path, name: str, keep: Optional[int] = None,
                    with_replay_buffer: bool = False) -> Path:
    target = checkpoint_root / name
    staging = fresh_staging_dir(target)
    model.save(staging / MODEL_FILE)
    venv = model.get_env()
    if hasattr(venv, "obs_rms"):
        save_vecnormalize(venv, staging / NORMALIZATION_FILE)
    if with_replay_buffer and hasattr(model, "replay_buffer"):
        model.save_replay_buffer(staging / REPLAY_FILE)
    replace_dir_atomically(staging, target)
    write_text_atomic(checkpoint_root / LATEST_POINTER, name + "\n")
    if keep is not None:
        _rotate(checkpoint_root, keep)
    return target


def step_name(step: int) -> str:
    return f"step_{step:010d}"


def _rotate(checkpoint_root: Path, keep: int) -> None:
    steps = sorted(p for p in checkpoint_root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old)


def latest_checkpoint(checkpoint_root: Path) -> Optional[Path]:
    pointer = checkpoint_root / LATEST_POINTER
    if pointer.exists():
        candidate = checkpoint_root / pointer.read_text().strip()
        if (candidate / MODEL_FILE).exists():
            return candidate
    steps = sorted(p for p in checkpoint_root.glob("step_*") if (p / MODEL_FILE).exists())
    return steps[-1] if steps else None
