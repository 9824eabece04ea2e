"""MP4 of one evaluation episode, for the report: what a person would rather look at than a number."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from physai.io import atomic_path

log = logging.getLogger(__name__)

NO_GL_HINT = ("off-screen rendering is unavailable; on a CPU machine install libosmesa6 (MUJOCO_GL=osmesa), "
              "on a GPU machine set MUJOCO_GL=egl")


def record_episode(task, act: Callable[[np.ndarray], np.ndarray], seed: int, target: Path,
                   max_frames: int = 150) -> Optional[str]:
    """Render one deterministic episode to ``target``; return None (and say why) if it cannot be rendered."""
    try:
        env = task.make(render_mode="rgb_array")
    except Exception as exc:  # gymnasium ids without rgb_array support raise various errors
        log.warning("no evaluation video: %s cannot render (%s)", task.id, exc)
        return None
    try:
        obs, _ = env.reset(seed=int(seed))
        try:
            frames = [env.render()]
        except Exception as exc:  # MuJoCo raises FatalError/AttributeError without a GL backend
            log.warning("no evaluation video: %s (%s)", NO_GL_HINT, type(exc).__name__)
            return None
        # Show the whole episode: render every k-th step so it fits in max_frames, played in real time.
        steps = getattr(getattr(env.unwrapped, "spec_", None), "episode_steps", None) or \
            getattr(env.spec, "max_episode_steps", None) or max_frames
        stride = max(1, -(-int(steps) // max_frames))
        fps = float(env.metadata.get("render_fps") or 30) / stride
        done, step = False, 0
        while not done and len(frames) < max_frames:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            step += 1
            done = terminated or truncated
            if step % stride == 0 or done:
                frames.append(env.render())
    finally:
        env.close()
    import imageio.v2 as imageio

    with atomic_path(target) as tmp:
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=6,
                                macro_block_size=8) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame))
    return str(target)
