"""A "dream vs real" MP4 for the report: the simulator replaying a recorded episode beside the world
model's open-loop prediction of the same episode.

Left: the simulator's render of a real episode, replayed from its reset seed with its recorded actions.
Right: up to four observation columns over time. The real trajectory is solid; the dream is dashed, with
a +-2 sigma band. The dream starts from the real first observation and is fed the real actions, never
the real states (open loop), so the gap between the lines is the model's compounding error. A vertical
cursor marks the step shown on the left.

The dream line is the mean over the elite members. Each step's variance is the law of total variance over
the elites: their mean aleatoric variance plus the variance of their means. Along the rollout the
per-step variances are summed, a random-walk approximation that ignores how the dynamics amplify earlier
errors, so the band grows with the horizon but is no calibrated interval. The per-step part is the
ensemble's own estimate and is also no calibrated interval: the band shows where the model says it is
unsure, not a guarantee.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from physai.report.video import REPLAY_TOLERANCE, NoVideo, replay_departure, replay_episode, write_mp4
from physai.synthetic.dataset import SOURCE_REAL

log = logging.getLogger(__name__)

MAX_COLUMNS = 4
REAL_COLOR = "#1f3b73"
DREAM_COLOR = "#d9480f"


@dataclass
class Dream:
    """An open-loop model rollout: ``mean`` and ``std`` are ``[T + 1, obs_dim]``, row 0 the real start."""

    mean: np.ndarray
    std: np.ndarray


def record_dream_vs_real(task, model, real_dataset, target: Path, steps: int = 100) -> str:
    """Write ``target`` (MP4): a real episode replayed in the simulator beside the world model's dream of it.

    ``task`` is a ``GymTask``, ``model`` an ``EnsembleDynamicsModel``, ``real_dataset`` a ``LoadedDataset``
    holding real episodes with reset seeds. The episode shown is the first one with at least ``steps``
    transitions, else the longest; the video has at most ``steps`` frames, played at the env's render_fps.
    Returns the path. Raises ``NoVideo`` naming why when nothing can be recorded: the env cannot render
    (no off-screen GL), or the dataset has no real episode with a seed to replay. A model that does not
    fit the dataset (observation/action/context widths) raises ``WorldModelError``.
    """
    if int(steps) < 1:
        raise ValueError(f"steps={steps!r}: the video needs at least one frame")
    steps = int(steps)
    choice = _pick_episode(real_dataset, steps)
    if choice is None:
        raise NoVideo(f"{getattr(real_dataset, 'dataset_id', real_dataset)} holds no real episode with a reset "
                      f"seed to replay")
    index, episode = choice
    frames_wanted = min(steps, len(episode) + 1)  # observations 0 .. frames_wanted - 1
    recorded = np.asarray(episode.observations[:frames_wanted], dtype=np.float64).reshape(frames_wanted, -1)
    actions = np.asarray(episode.actions[:frames_wanted - 1])

    replay = replay_episode(task, episode.seed, actions)
    frames, replayed, fps, env_context = replay.frames, replay.observations, replay.fps, replay.context
    n = len(frames)  # shorter than wanted only if the replay ended early (it then departed from the record)
    step, largest = replay_departure(replayed, recorded[:n])
    if step is not None:
        log.warning("dream video: the replay of episode %d (reset seed %d) departs from the recorded observations "
                    "from step %d on (largest difference %.3g, tolerance %.0e); the simulator panel may not show "
                    "the recorded run (was the data collected with other env settings or task version?)",
                    index, episode.seed, step, largest, REPLAY_TOLERANCE)
    recorded, actions = recorded[:n], actions[:n - 1]

    context = _model_context(model, real_dataset, episode, env_context, n)
    dream = open_loop_dream(model, recorded[0], actions, context)

    names = _column_names(task, recorded.shape[1])
    columns = _pick_columns(recorded, MAX_COLUMNS)
    height, width = frames[0].shape[:2]
    panel = _DreamPanel(width, height, recorded, dream, columns, [names[c] for c in columns])
    banner = _banner("real (simulator)", width, height)

    write_mp4(target, (np.concatenate([_overlay(np.asarray(frame, dtype=np.uint8)[..., :3], banner),
                                       panel.frame(step)], axis=1) for step, frame in enumerate(frames)), fps)
    log.info("dream video: %s (episode %d, seed %s, %d frames at %.0f fps, columns %s)", target, index,
             episode.seed, n, fps, [names[c] for c in columns])
    return str(target)


def open_loop_dream(model, start_obs: np.ndarray, actions: np.ndarray,
                    context: Optional[np.ndarray] = None) -> Dream:
    """Roll ``model`` from ``start_obs`` through ``actions`` feeding back its own elite-mean prediction.

    ``context`` is ``[T, context_dim]`` (or None for a model without context). Returns the elite-mean
    trajectory and its accumulated standard deviation (see the module docstring). Once the rollout turns
    non-finite, the rest of it is NaN.
    """
    actions = np.asarray(actions, dtype=np.float32).reshape(len(actions), -1)
    obs = np.asarray(start_obs, dtype=np.float32).reshape(1, -1)
    mean = np.full((len(actions) + 1, obs.shape[1]), np.nan)
    std = np.full_like(mean, np.nan)
    mean[0], std[0] = obs[0], 0.0
    variance = np.zeros(obs.shape[1])
    for t, action in enumerate(actions):
        row_context = None if context is None else np.asarray(context[t], dtype=np.float32)[None]
        prediction = model.predict(obs, action[None], row_context)
        elite = np.asarray(prediction["is_elite"], bool)
        means = np.asarray(prediction["next_obs_mean"], np.float64)[elite, 0]  # [E, obs_dim]
        variances = np.asarray(prediction["next_obs_var"], np.float64)[elite, 0]
        step_mean = means.mean(axis=0)
        variance = variance + variances.mean(axis=0) + means.var(axis=0)
        if not (np.all(np.isfinite(step_mean)) and np.all(np.isfinite(variance))):
            break
        mean[t + 1], std[t + 1] = step_mean, np.sqrt(variance)
        obs = step_mean.astype(np.float32)[None]
    return Dream(mean=mean, std=std)


# ------------------------------------------------------------------------------------------ the episode


def _pick_episode(dataset, steps: int):
    """(index, Episode): the first real episode with a seed and >= ``steps`` transitions, else the longest."""
    best = None
    for index in range(dataset.num_episodes):
        seed = dataset.episode_seeds[index] if index < len(dataset.episode_seeds) else None
        if seed is None:
            continue
        episode = dataset.episode(index)
        if episode.source != SOURCE_REAL:
            continue
        if len(episode) >= steps:
            return index, episode
        if best is None or len(episode) > len(best[1]):
            best = (index, episode)
    return best


def _model_context(model, dataset, episode, env_context, n: int) -> Optional[np.ndarray]:
    """``[n - 1, context_dim]`` for a context-conditioned model: the recorded context (reordered to the
    model's names when both are named), else the replay env's own draw."""
    width = int(getattr(model, "context_dim", 0) or 0)
    if not width:
        return None
    context = episode.context
    if context is not None:
        context = np.asarray(context, dtype=np.float32)
        model_names = tuple(model.config.context_names)
        data_names = tuple(dataset.provenance_tables.context_names)
        if model_names and data_names and model_names != data_names and set(model_names) <= set(data_names):
            context = context[:, [data_names.index(name) for name in model_names]]
        return context[:max(n - 1, 0)]
    if env_context is not None and np.asarray(env_context).size == width:
        return np.tile(np.asarray(env_context, dtype=np.float32), (max(n - 1, 0), 1))
    return None  # model.predict then says which context it needs


def _column_names(task, width: int) -> list[str]:
    try:
        names = list(task.signal_names()[0])
    except Exception as exc:  # noqa: BLE001 - names are cosmetic, the video is not
        log.debug("dream video: no signal names (%s)", exc)
        names = []
    return names if len(names) == width else [f"obs[{i}]" for i in range(width)]


def _pick_columns(observations: np.ndarray, limit: int) -> list[int]:
    """The ``limit`` columns that vary most over the episode, in their original order."""
    variance = np.nan_to_num(observations.var(axis=0), nan=0.0)
    chosen = np.argsort(-variance, kind="stable")[:limit]
    return sorted(int(c) for c in chosen)


# ------------------------------------------------------------------------------------------ drawing


def _font_size(height: int) -> float:
    return float(np.clip(height / 40.0, 5.0, 10.0))


def _banner(text: str, width: int, height: int) -> np.ndarray:
    """An RGBA strip with ``text`` in the style of the panel's title, to lay over the top of a frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = _font_size(height)
    strip = max(8, int(round(size * 2.6)))
    dpi = 100
    figure = Figure(figsize=(width / dpi, strip / dpi), dpi=dpi)
    figure.patch.set_alpha(0.0)
    canvas = FigureCanvasAgg(figure)
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=size * 1.25, fontweight="bold",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 2})
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _overlay(frame: np.ndarray, banner: np.ndarray) -> np.ndarray:
    out = frame.copy()
    rows = min(banner.shape[0], out.shape[0])
    cols = min(banner.shape[1], out.shape[1])
    alpha = banner[:rows, :cols, 3:4].astype(np.float32) / 255.0
    top = out[:rows, :cols].astype(np.float32)
    out[:rows, :cols] = (alpha * banner[:rows, :cols, :3] + (1.0 - alpha) * top).round().astype(np.uint8)
    return out


class _DreamPanel:
    """The right half: the static lines drawn once, then only the cursors redrawn per frame (blitting)."""

    def __init__(self, width: int, height: int, real: np.ndarray, dream: Dream, columns: Sequence[int],
                 names: Sequence[str]):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        self.size = (height, width)
        dpi = 100
        size = _font_size(height)
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
        self.canvas = FigureCanvasAgg(figure)
        count = len(columns)
        rows, cols = (1, 1) if count == 1 else ((2, 1) if count == 2 else (2, 2))
        axes = figure.subplots(rows, cols, squeeze=False, sharex=True).ravel()
        for ax in axes[count:]:
            ax.set_visible(False)
        t = np.arange(len(real))
        self.cursors = []
        for ax, column, name in zip(axes, columns, names):
            real_line = real[:, column]
            mean, std = dream.mean[:, column], dream.std[:, column]
            ax.fill_between(t, mean - 2 * std, mean + 2 * std, color=DREAM_COLOR, alpha=0.2, linewidth=0)
            ax.plot(t, real_line, color=REAL_COLOR, linewidth=1.1)
            ax.plot(t, mean, color=DREAM_COLOR, linewidth=1.1, linestyle="--")
            ax.set_ylim(*_limits(real_line, mean, std))
            ax.set_xlim(0, max(len(real) - 1, 1))
            ax.set_title(name, fontsize=size, pad=2)
            ax.tick_params(labelsize=size * 0.85, length=2, pad=1)
            ax.grid(alpha=0.25, linewidth=0.5)
            cursor = ax.axvline(0, color="black", linewidth=0.9, alpha=0.75, animated=True)
            real_dot, = ax.plot([], [], "o", color=REAL_COLOR, markersize=size * 0.6, animated=True)
            dream_dot, = ax.plot([], [], "o", color=DREAM_COLOR, markersize=size * 0.6, animated=True)
            self.cursors.append((ax, cursor, (real_dot, real_line), (dream_dot, mean)))
        for ax in axes[max(count - cols, 0):count]:
            ax.set_xlabel("step", fontsize=size * 0.85, labelpad=1)
        figure.suptitle("dream (world model)", fontsize=size * 1.25, fontweight="bold", y=0.995)
        figure.legend(handles=[Line2D([], [], color=REAL_COLOR, linewidth=1.1, label="real"),
                               Line2D([], [], color=DREAM_COLOR, linewidth=1.1, linestyle="--",
                                      label="dream ±2σ (open loop)")],
                      loc="lower center", ncol=2, fontsize=size * 0.85, frameon=False, borderaxespad=0.1,
                      handlelength=1.8, columnspacing=1.0)
        figure.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.4, rect=(0, 0.06, 1, 0.95))
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(figure.bbox)

    def frame(self, step: int) -> np.ndarray:
        self.canvas.restore_region(self.background)
        for ax, cursor, *dots in self.cursors:
            cursor.set_xdata([step, step])
            ax.draw_artist(cursor)
            for dot, values in dots:
                value = values[min(step, len(values) - 1)]
                dot.set_data([step] if np.isfinite(value) else [], [value] if np.isfinite(value) else [])
                ax.draw_artist(dot)
        image = np.asarray(self.canvas.buffer_rgba())[..., :3]
        height, width = self.size
        if image.shape[:2] == (height, width):
            return image.copy()
        out = np.full((height, width, 3), 255, np.uint8)  # a canvas a pixel off the asked size (rounding)
        rows, cols = min(height, image.shape[0]), min(width, image.shape[1])
        out[:rows, :cols] = image[:rows, :cols]
        return out


def _limits(real: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[float, float]:
    """Y limits that show the real line and as much of the dream as stays within a few real spans of it,
    so one diverged dream does not flatten the real trajectory into a line."""
    low, high = float(np.min(real)), float(np.max(real))
    span = max(high - low, 1e-3 * max(abs(low), abs(high)), 1e-6)
    finite = np.isfinite(mean) & np.isfinite(std)
    if finite.any():
        dream_low = float(np.min((mean - 2 * std)[finite]))
        dream_high = float(np.max((mean + 2 * std)[finite]))
        low, high = max(min(low, dream_low), low - 2 * span), min(max(high, dream_high), high + 2 * span)
    pad = 0.08 * (high - low)
    return low - pad, high + pad
