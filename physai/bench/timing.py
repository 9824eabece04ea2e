"""Contenders timed side by side: round after round, each runs for one time slice, so a noisy shared
machine falls on all of them alike."""

from __future__ import annotations

import time
from typing import Callable, Mapping


def timed_rounds(steps: Mapping[str, Callable[[int], int]], slice_s: float, rounds: int, *, warmup: int = 1,
                 min_calls: int = 1) -> dict[str, list[float]]:
    """Items per second of every contender in each of ``rounds`` interleaved rounds.

    ``steps[name](i)`` does one unit of work (its ``i``-th call) and returns how many items it produced;
    each contender is warmed up ``warmup`` calls first and timed for at least ``slice_s`` and ``min_calls``.
    """
    for step in steps.values():
        for i in range(warmup):
            step(i)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            calls, items, start = 0, 0, time.perf_counter()
            while True:
                items += step(calls)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= slice_s and calls >= min_calls:
                    break
            samples[name].append(items / elapsed)
    return samples
