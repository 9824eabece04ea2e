"""A trtexec-style latency harness: warm up, then time a fixed number of calls one by one."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from physai.stats import latency_percentiles_ms


def time_calls(call: Callable[[], object], warmup: int, iterations: int) -> np.ndarray:
    """Per-call wall time in nanoseconds (``perf_counter_ns`` around each call)."""
    for _ in range(warmup):
        call()
    samples = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        start = clock()
        call()
        samples[i] = clock() - start
    return samples


def latency_figures(samples_ns: np.ndarray, batch: int = 1) -> dict[str, float]:
    figures = latency_percentiles_ms(samples_ns)
    figures["batch"] = batch
    figures["throughput_qps"] = 1e3 / figures["mean_ms"]
    figures["actions_per_s"] = figures["throughput_qps"] * batch
    figures["total_host_wall_ms"] = float(np.sum(samples_ns) / 1e6)
    return figures
