"""Small pieces every report section shares: how a figure is printed and how a plot is saved."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from physai.io import atomic_path


def fmt(value: Any, digits: int = 4) -> str:
    """A figure for a Markdown table: 4 significant digits, yes/no for flags, a dash for none or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
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
