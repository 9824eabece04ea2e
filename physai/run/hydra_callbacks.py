"""Hydra callbacks: refuse a bad config before Hydra creates the run directory; record and sum up sweeps."""

from __future__ import annotations

import copy
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from physai.core.errors import ConfigError, PhysaiError
from physai.core.io import read_summary
from physai.run import sweeps
from physai.run.pipeline import prepare


class Preflight(Callback):
    """Runs ``physai.run.pipeline.prepare`` on the composed config before Hydra writes anything.

    Hydra turns exceptions raised in callbacks into warnings, so a refusal exits here directly.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            check_optional_choices(list(config.hydra.overrides.task))
            prepare(task_cfg, Path(config.hydra.run.dir))
        except PhysaiError as exc:
            print(f"physai: error: {exc}", file=sys.stderr)
            sys.exit(2)


# Groups the primary config lists as `optional`: Hydra silently applies nothing for a missing option.
OPTIONAL_GROUPS = ("preset", "guard")


def check_optional_choices(overrides: list[str]) -> None:
    """Refuse ``preset=nope`` or ``guard=nope``: an optional group would otherwise ignore the typo."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key not in OPTIONAL_GROUPS or not value or value == "null":
            continue
        folder = files("physai.configs") / key
        known = sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
        for option in (o.strip() for o in value.split(",")):
            if option not in known:
                raise ConfigError(f"'{override}': configs/{key} has no option '{option}'; known options: {known}")


class SweepSummary(Callback):
    """Records every trial of a multirun and ends the sweep with a table of all of them.

    Each trial normally writes its own ``trial.json`` (``physai.run.sweeps.run_trial``); ``on_job_end``
    writes one for a job that raised before or outside it. ``on_multirun_end`` prints the table and
    writes ``sweep_summary.json`` and ``sweep_summary.md`` in the sweep directory. A sweep in which
    no trial completed exits with status 1.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _register_physai_plugins()
        try:
            check_optional_choices(list(config.hydra.overrides.task))
        except PhysaiError as exc:
            print(f"physai: error: {exc}", file=sys.stderr)
            sys.exit(2)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        if sweeps.read_trial(run_dir) is not None:
            return
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        record = sweeps.trial_record(run_dir, num=int(config.hydra.job.num),
                                     overrides=list(config.hydra.overrides.task),
                                     status=sweeps.FAILED if failed else sweeps.COMPLETED,
                                     sweep_dir=str(Path(config.hydra.sweep.dir).absolute()),
                                     summary=read_summary(run_dir), error=error)
        sweeps.write_trial(run_dir, record)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.exists():
            return
        summary = sweeps.summarize_sweep(sweep_dir)
        print("\n".join(sweeps.format_summary(summary)), flush=True)
        print(f"\nsweep summary: {sweep_dir.absolute() / sweeps.SUMMARY_MD}; "
              f"`physai sweep-report {sweep_dir}` aggregates seeds", flush=True)
        if summary["n_trials"] and not summary["counts"][sweeps.COMPLETED]:
            print("physai: error: no trial of the sweep completed", file=sys.stderr)
            sys.exit(1)


def _register_physai_plugins() -> None:
    """Make physai's launcher and sweeper known to Hydra before it instantiates them.

    Hydra finds plugins by walking the ``hydra_plugins`` namespace, which misses ours in an editable
    install used outside the checkout (``physai train -m ...`` elsewhere); registering them by hand
    is idempotent and works either way.
    """
    try:
        from hydra_plugins.physai_plugins.optuna_sweeper import PhysaiOptunaSweeper
        from hydra_plugins.physai_plugins.ray_launcher import PhysaiRayLauncher
    except ImportError:  # not installed with this physai: Hydra reports the unknown plugin itself
        return
    for plugin in (PhysaiRayLauncher, PhysaiOptunaSweeper):
        Plugins.instance().register(plugin)
