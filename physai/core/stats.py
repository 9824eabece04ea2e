"""Small statistics for figures: every return is reported with n and a 95% confidence interval."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Two-sided 95% Student-t critical values for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t_critical_95(dof: int) -> float:
    if dof < 1:
        return math.inf
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = 1.959964
    # Cornish-Fisher expansion of the t quantile; exact to 3 decimals beyond 30 dof.
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_ci95(values: Sequence[float]) -> dict[str, float]:
    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    mean = float(data.mean()) if n else math.nan
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    half = t_critical_95(n - 1) * std / math.sqrt(n) if n > 1 else math.inf
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def paired_ci95(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """``first - second`` paired item by item (same seeds, episodes or trials): mean and 95% CI."""
    return mean_ci95([a - b for a, b in zip(first, second)])


def latency_percentiles_ms(samples_ns: np.ndarray) -> dict[str, float]:
    """trtexec's vocabulary: min/mean/median/p90/p95/p99/max in milliseconds, plus n."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {"min_ms": float(ms.min()), "mean_ms": float(ms.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(ms.max()), "n": int(ms.size)}
