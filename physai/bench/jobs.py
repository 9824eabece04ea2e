"""Benchmark jobs (one training run each) in worker processes, with their progress reported as they go."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from physai.core.errors import ConfigError
from physai.core.io import write_text_atomic


def job_inputs(names: Sequence[str], known: Mapping[str, Any], overrides: Optional[Mapping[str, dict]],
               seeds: Sequence[int], workers: Optional[int], flag: str) -> tuple[dict[str, Any], list[int], int]:
    """A training benchmark's checked inputs, before anything trains: each named plan (with ``overrides``
    of its fields), at least two distinct seeds for a 95% CI, and the worker count (default: one per core).
    ``flag`` is the command-line option that names the plans, for the error."""
    seed_list = [int(s) for s in seeds]
    if len(seed_list) < 2 or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"--seeds {seeds!r}: give at least 2 distinct seeds for a 95% CI (5 recommended)")
    resolved = {}
    for name in names:
        if name not in known:
            raise ConfigError(f"{flag} names {name!r}, which has no benchmark plan; choose from {sorted(known)}")
        resolved[name] = replace(known[name], **(overrides or {}).get(name, {}))
    return resolved, seed_list, max(1, int(workers or os.cpu_count() or 1))


class _Inline:
    """The event queue of a job run in this process: events go straight to the progress callback."""

    def __init__(self, show: Callable[..., None]) -> None:
        self.show = show

    def put(self, event: tuple) -> None:
        self.show(*event)


class JobStore:
    """Each finished job's record in a JSON file named by a digest of the job's settings, so a benchmark
    run again with the same store trains only the jobs it lacks: a run of hours killed part-way loses only
    the jobs that were in flight. The settings are the job's ``store_settings()`` where it defines one (all
    that decides its result: resolved hyperparameters and task config, not only the plan's name), else its
    fields. Records keep NaN (a diverged evaluation) as NaN. Clear the folder after changing the code."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @staticmethod
    def settings(job: Any) -> Any:
        settings = job.store_settings() if hasattr(job, "store_settings") else asdict(job)
        return json.loads(json.dumps(settings, sort_keys=True, default=_plain))

    def _entry(self, job: Any, suffix: str = ".json") -> tuple[Path, Any]:
        """The job's file (named by the digest of its settings) and those settings, computed once."""
        settings = self.settings(job)
        text = json.dumps(settings, sort_keys=True)
        return self.folder / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}{suffix}", settings

    def path(self, job: Any, suffix: str = ".json") -> Path:
        """Where this job's record (or, with another ``suffix``, something else of the job) is kept."""
        return self._entry(job, suffix)[0]

    def load(self, job: Any) -> Optional[Any]:
        """The stored record of this job, or None when it has not finished in this store."""
        path, settings = self._entry(job)
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"benchmark store {path} cannot be read ({exc}); delete that file to train its job "
                              f"again") from exc
        if not isinstance(stored, dict) or stored.get("job") != settings or "record" not in stored:
            raise ConfigError(f"benchmark store {path} holds another job than {settings}; delete that "
                              f"file to train its job again")
        return stored["record"]

    def save(self, job: Any, record: Any) -> None:
        path, settings = self._entry(job)
        write_text_atomic(path, json.dumps({"job": settings, "record": record}, default=_plain) + "\n")

    def forget(self, job: Any) -> None:
        """Drop a job's record, so the next run trains it again."""
        self.path(job).unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists (NaN stays NaN: Python's json reads it back)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def run_jobs(jobs: Sequence[Any], run_one: Callable[[Any, Any], Any], workers: int,
             show: Callable[..., None], finished: Callable[[Any, Any], None],
             store: Optional[JobStore] = None) -> int:
    """Run ``run_one(job, events)`` for every job, in ``workers`` spawned processes (inline with one).

    ``run_one`` must be a module-level function (it is pickled into the workers); it reports progress
    with ``events.put(tuple)``, which reaches ``show(*tuple)`` here. ``finished(job, record)`` receives
    each job's result as it completes. The first job to fail stops the jobs not yet started; those running
    finish (and are handed over) before its exception propagates. With a ``store``, jobs it already
    holds are handed to ``finished`` from it without running, and every job is stored as it finishes.
    Returns how many jobs came from the store.
    """
    resumed = 0
    if store is not None:
        remaining = []
        for job in jobs:
            record = store.load(job)
            if record is None:
                remaining.append(job)
            else:
                finished(job, record)
                resumed += 1
        jobs, report = remaining, finished

        def finished(job: Any, record: Any) -> None:
            store.save(job, record)  # before anything else can fail: a finished job is never trained twice
            report(job, record)
    if workers <= 1:
        for job in jobs:
            finished(job, run_one(job, _Inline(show)))
        return resumed
    context = mp.get_context("spawn")  # torch and MuJoCo state must not be forked mid-run
    error: Optional[BaseException] = None
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        events = manager.Queue()
        pending = {pool.submit(run_one, job, events): job for job in jobs}
        while pending:
            ready, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while True:
                try:
                    show(*events.get_nowait())
                except queue.Empty:
                    break
            for future in ready:
                job = pending.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:  # the first failure: queued jobs never start, running ones finish
                        error = future.exception()
                        for other in pending:
                            other.cancel()
                    continue
                finished(job, future.result())  # kept (and stored) even after another job failed
    if error is not None:
        raise error
    return resumed
