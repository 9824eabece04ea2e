"""Small pieces every report section shares: how a figure is printed and how a plot is saved."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from physai.core.io import atomic_path


def fmt(value: Any, digits: int = 4, missing: str = "–") -> str:
    """A figure for a table: 4 significant digits, yes/no for flags, ``missing`` (a dash) for none or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def save_png(fig, target: Path, dpi: float | None = None) -> None:
    """Write a matplotlib figure atomically (a half-written PNG never replaces a good one) and free it."""
    import matplotlib.pyplot as plt

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def video_lines(title: str, section, key: str) -> list[str]:
    """A link to the stage's video, or the reason it has none (no display, switched off, ...)."""
    if not section or key not in section:
        return []
    video = section.get(key)
    if video:
        return [f"{title}: [{Path(video).name}]({Path(video).name})", ""]
    return [f"{title}: no video ({section.get(key + '_missing') or 'reason not recorded'}).", ""]
