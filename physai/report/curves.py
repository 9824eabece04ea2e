"""Training curves for the report: episode return and the reward terms over environment steps."""

from __future__ import annotations

from pathlib import Path

from physai.report.format import save_png
from physai.train.episodes import TERM_PREFIX


def _smooth(values, window: int):
    import numpy as np

    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_learning_curve(rows: list[dict], target: Path, threshold: float | None) -> bool:
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([r["timesteps"] for r in rows])
    returns = np.array([r["episode_return"] for r in rows])
    window = max(1, min(20, len(returns) // 5))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.plot(steps, returns, ".", alpha=0.3, markersize=3, label="episode return")
    ax.plot(steps[window - 1:], _smooth(returns, window), lw=2, label=f"mean of {window}")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label="solved threshold")
    return _finish(fig, ax, target, "episode return", "lower right")


def plot_reward_terms(rows: list[dict], target: Path) -> bool:
    """One smoothed curve per reward term's episode sum: which term drives (or fights) learning."""
    terms = sorted({k for r in rows for k in r if k.startswith(TERM_PREFIX)})
    if not terms:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    window = max(1, min(20, len(rows) // 5))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for term in terms:
        points = [(r["timesteps"], r[term]) for r in rows if term in r]
        steps, values = np.array(points).T
        ax.plot(steps[window - 1:], _smooth(values, window), lw=1.5, label=term[len(TERM_PREFIX):])
    return _finish(fig, ax, target, "episode sum (weighted)", "best")


def _finish(fig, ax, target: Path, ylabel: str, legend: str) -> bool:
    """Label the step axis, add the legend and grid, write the PNG."""
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.legend(loc=legend, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, target)
    return True
