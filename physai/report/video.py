"""MP4 of one evaluation episode, for the report: what a person would rather look at than a number.

Rendering is optional equipment (see ``physai.envs.rendering``): when a video cannot be made, ``NoVideo``
carries the reason, the stage records it in the summary and the report shows it; the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from physai.core.io import atomic_path
from physai.envs.rendering import mark_unavailable, unavailable_reason
from physai.synthetic.dataset import SOURCE_REAL, DatasetError

log = logging.getLogger(__name__)

# A replayed observation may differ from the recorded one by this much, relative to 1 + |recorded|.
REPLAY_TOLERANCE = 1e-4


class NoVideo(Exception):
    """Why a video could not be made; the run goes on without it."""


def try_video(record: Callable[[], None], relative_path: str, what: str, switch: str,
              enabled: bool) -> tuple[str | None, str | None]:
    """Record a report video: ``(relative_path, None)``, or ``(None, why not)`` when it is switched off
    (``switch`` names the setting) or off-screen rendering is unavailable. A missing video never ends a run."""
    if not enabled:
        return None, f"switched off ({switch}=false)"
    try:
        record()
        return relative_path, None
    except NoVideo as exc:
        log.warning("no %s: %s", what, exc)
        return None, str(exc)


def open_render_env(task, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """An env of ``task`` reset with ``seed`` that renders RGB frames: (env, first obs, first frame).

    Raises ``NoVideo`` naming why when this process cannot render; a failed render switches rendering
    off for the rest of the process, since a second attempt after a failed GL start can abort it.
    """
    reason = unavailable_reason()
    if reason:
        raise NoVideo(reason)
    task_id = getattr(task, "id", task)
    try:
        env = task.make(render_mode="rgb_array")
    except Exception as exc:  # gymnasium ids without rgb_array support raise various errors
        raise NoVideo(f"{task_id} cannot render ({type(exc).__name__}: {exc})") from exc
    try:
        obs, _ = env.reset(seed=int(seed))
        frame = np.asarray(env.render())
    except Exception as exc:  # MuJoCo raises FatalError/AttributeError when GL does not start
        env.close()
        raise NoVideo(mark_unavailable(f"off-screen rendering failed ({type(exc).__name__}: {exc})")) from exc
    if frame.ndim != 3:
        env.close()
        raise NoVideo(f"{task_id} renders an array of shape {frame.shape}, not an RGB image")
    return env, obs, frame


@dataclass
class Replay:
    """A recorded episode replayed in the simulator: its frames, observations, render fps and physics context."""

    frames: list[np.ndarray]
    observations: np.ndarray  # (frames, obs_dim) float64
    fps: float
    context: Optional[np.ndarray]


def replay_episode(task, seed: int, actions: np.ndarray) -> Replay:
    """Reset ``task`` with the episode's ``seed``, step its recorded ``actions`` and render every state.

    The engine is deterministic for a seed, so this is the recorded episode again, with pictures. A replay
    that ends before its actions do has already departed from the record and stops there. ``NoVideo`` when
    this process cannot render.
    """
    env, obs, first = open_render_env(task, seed)
    try:
        frames = [first]
        engine = getattr(env.unwrapped, "engine", None)
        context = engine.context_matrix()[0] if engine is not None else None
        observations = [np.asarray(obs, dtype=np.float64).reshape(-1)]
        for step, action in enumerate(actions):
            obs, _, terminated, truncated, _ = env.step(action)
            observations.append(np.asarray(obs, dtype=np.float64).reshape(-1))
            frames.append(np.asarray(env.render()))
            if (terminated or truncated) and step < len(actions) - 1:
                break
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return Replay(frames, np.asarray(observations), fps, context)


def replay_departure(replayed: np.ndarray, recorded: np.ndarray) -> tuple[Optional[int], float]:
    """``(first step, largest difference)`` where a replay departs from the record beyond ``REPLAY_TOLERANCE``;
    ``(None, largest)`` when it follows it."""
    error = np.abs(replayed - recorded) / (1.0 + np.abs(recorded))
    largest = float(np.nanmax(np.abs(replayed - recorded))) if replayed.size else 0.0
    if error.size and not np.all(error <= REPLAY_TOLERANCE):
        return int(np.argwhere(~(error <= REPLAY_TOLERANCE))[0][0]), largest
    return None, largest


def replayed_frames(task, dataset, camera: str) -> Callable[[int], dict[str, np.ndarray]]:
    """Camera frames of each episode of ``dataset`` (a ``LoadedDataset`` of real episodes), rendered by replaying
    it: ``{camera: (T + 1, H, W, 3) uint8}`` for episode ``i``, one episode at a time.

    Raises ``DatasetError`` naming the episode when one cannot be replayed (a world-model rollout has no
    simulator state to draw; an episode without a reset seed cannot be reproduced) or when its replay departs
    from the recorded observations (data collected with other env settings or another task version), so no
    dataset ships frames of another run.
    """
    episodes = (dataset.episode(i) for i in range(dataset.num_episodes))
    unplayable = [i for i, episode in enumerate(episodes) if episode.source != SOURCE_REAL or episode.seed is None]
    if unplayable:
        raise DatasetError(f"{dataset.dataset_id}: episodes {unplayable[:10]} are not real episodes with a reset seed "
                           f"(world-model rollouts, or recorded elsewhere), so their frames cannot be rendered by "
                           f"replay; export without frames")

    last: dict[int, dict[str, np.ndarray]] = {}  # the exporter asks for episode 0 twice: its shapes, then its video

    def frames_of(index: int) -> dict[str, np.ndarray]:
        if index in last:
            return last[index]
        episode = dataset.episode(index)
        recorded = np.asarray(episode.observations, dtype=np.float64).reshape(len(episode) + 1, -1)
        replay = replay_episode(task, episode.seed, np.asarray(episode.actions))
        step, largest = replay_departure(replay.observations, recorded[:len(replay.frames)])
        if step is not None or len(replay.frames) != len(recorded):
            raise DatasetError(f"{dataset.dataset_id}: episode {index} (reset seed {episode.seed}) replayed in "
                             f"{getattr(task, 'id', task)} departs from its recorded observations at step "
                             f"{step if step is not None else len(replay.frames)} (largest difference {largest:.3g}); "
                             f"was it collected with other env settings? Export without frames")
        frames = {camera: np.stack([np.asarray(frame, dtype=np.uint8)[..., :3] for frame in replay.frames])}
        last.clear()
        last[index] = frames
        return frames

    return frames_of


def record_episode(task, act: Callable[[np.ndarray], np.ndarray], seed: int, target: Path,
                   max_frames: int = 150) -> str:
    """Render one deterministic episode to ``target`` and return its path; ``NoVideo`` says why not."""
    env, obs, first = open_render_env(task, seed)
    frames = [with_policy_view(first, obs)]
    try:
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
                frames.append(with_policy_view(env.render(), obs))
    finally:
        env.close()
    write_mp4(target, frames, fps)
    return str(target)


def with_policy_view(frame: np.ndarray, obs: Any) -> np.ndarray:
    """The scene frame, and for a camera policy beside it what the policy saw: its newest camera frame at its
    own resolution, scaled up by whole pixels (nearest) so no detail it lacked is invented."""
    if not isinstance(obs, dict) or "pixels" not in obs:
        return frame
    view = np.asarray(obs["pixels"])[..., -3:]
    scale = max(1, frame.shape[0] // view.shape[0])
    view = np.repeat(np.repeat(view, scale, axis=0), scale, axis=1)[:frame.shape[0]]
    panel = np.zeros((frame.shape[0], view.shape[1], 3), dtype=np.uint8)
    top = (frame.shape[0] - view.shape[0]) // 2
    panel[top:top + view.shape[0]] = view
    return np.concatenate([frame, panel], axis=1)


def write_mp4(target: Path, frames, fps: float) -> None:
    """H.264 MP4 of RGB frames, written atomically."""
    import imageio.v2 as imageio

    with atomic_path(target) as tmp:
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=6,
                                macro_block_size=8) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame))
