"""A trtexec-style latency harness: warm up, then time a fixed number of calls one by one."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from physai.core.stats import latency_percentiles_ms


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


def time_interleaved(calls: Sequence[Callable[[], object]], iterations: int, seed: int = 0) -> np.ndarray:
    """Per-call wall times (ns), shape ``(len(calls), iterations)``: every iteration calls each contender once.

    The order is drawn afresh every iteration (seeded), so each contender follows every other one
    equally often on average: a call that leaves the caches or the vector units in a bad state
    slows a random neighbour, not always the same one, and outside load lands on all alike.
    """
    k = len(calls)
    samples = np.empty((k, iterations), dtype=np.int64)
    orders = np.argsort(np.random.default_rng(seed).random((iterations, k)), axis=1).tolist()
    clock = time.perf_counter_ns
    for i, order in enumerate(orders):
        for c in order:
            call = calls[c]
            start = clock()
            call()
            samples[c, i] = clock() - start
    return samples
