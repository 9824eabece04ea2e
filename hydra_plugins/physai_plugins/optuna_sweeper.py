"""``hydra/sweeper=physai_optuna``: hydra-optuna-sweeper with a search space per algorithm and seeds.

It wraps the plugin's ``OptunaSweeper`` and adds two things:

- ``search_spaces``: one optuna search space per algorithm (``configs/hydra/sweeper/search_space/``);
  the one for the composed ``algo.name`` is used unless ``hydra.sweeper.params`` is given.
- ``seeds``: ``null`` leaves the seed alone (``seed=0,1,2`` on the command line then makes it a swept,
  categorical axis, as with the plain plugin); a list (``hydra.sweeper.seeds=[0,1,2]``) makes it a
  repeated axis: every configuration optuna proposes runs once per seed, and optuna is told the mean
  of their returns (a failed trial for optuna when any seed failed).

The objective is what ``train.py`` returns: the evaluation mean return; ``direction: maximize``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SeedRepeatLauncher(Launcher):
    """Runs every job once per seed through the configured launcher and folds each job's returns into one."""

    def __init__(self, launcher: Launcher, seeds: Sequence[int]) -> None:
        self.launcher = launcher
        self.seeds = list(seeds)
        self.next_num: Optional[int] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.next_num is None:
            self.next_num = initial_job_idx
        expanded = [tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed") + (f"seed={seed}",)
                    for overrides in job_overrides for seed in self.seeds]
        returns = self.launcher.launch(expanded, initial_job_idx=self.next_num)
        self.next_num += len(expanded)
        folded = []
        k = len(self.seeds)
        for i, overrides in enumerate(job_overrides):
            group = returns[i * k:(i + 1) * k]
            values = [_value(r) for r in group]
            mean = None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]
            log.info("configuration %s: returns %s over seeds %s -> %s", " ".join(overrides), values, self.seeds,
                     "failed" if mean is None else mean)
            folded.append(JobReturn(overrides=list(overrides), working_dir=group[0].working_dir if group else None,
                                    task_name=group[0].task_name if group else None, status=JobStatus.COMPLETED,
                                    _return_value=mean))
        return folded


def _value(ret: JobReturn) -> Optional[float]:
    """A job's return as a finite float, or None (failed: optuna records the trial as failed)."""
    if ret.status != JobStatus.COMPLETED:
        return None
    try:
        value = float(ret._return_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PhysaiOptunaSweeper(Sweeper):
    def __init__(self, search_spaces: Optional[DictConfig] = None, seeds: Optional[List[int]] = None,
                 params: Optional[DictConfig] = None, **optuna_kwargs: Any) -> None:
        try:
            from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
        except ImportError as exc:
            raise ImportError("hydra/sweeper=physai_optuna needs hydra-optuna-sweeper: "
                              "pip install 'physai[sweep]'") from exc
        self._optuna_cls = OptunaSweeper
        self.search_spaces = search_spaces
        self.seeds = list(seeds) if seeds else None
        self.params = params
        self.optuna_kwargs = optuna_kwargs
        self.sweeper: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        algo = OmegaConf.select(config, "algo.name")
        params = self.params
        if not params:
            spaces = self.search_spaces or {}
            if algo not in spaces:
                raise ValueError(f"hydra/sweeper=physai_optuna has no search space for algo '{algo}' "
                                 f"(known: {sorted(spaces)}); give one with hydra.sweeper.params")
            params = spaces[algo]
        log.info("optuna search space (%s): %s", "hydra.sweeper.params" if self.params else f"algo {algo}",
                 dict(params))
        self.sweeper = self._optuna_cls(params=params, **self.optuna_kwargs)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.seeds:
            impl = self.sweeper.sweeper
            impl.launcher = SeedRepeatLauncher(impl.launcher, self.seeds)
            log.info("each configuration runs with seeds %s; optuna sees the mean return", self.seeds)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return self.sweeper.sweep(arguments)
        except ValueError as exc:
            if "No trials are completed yet" not in str(exc):
                raise
            log.error("optuna: no trial completed; the sweep summary lists every trial's error")
            return None
