"""``hydra/launcher=ray``: every trial of a sweep is one Ray task; Ray schedules them, we only wait.

The configuration has the shape of Hydra's own hydra-ray-launcher (``ray.init``, ``ray.remote``).
``ray.init.address: null`` starts a local Ray instance (or joins the one ``RAY_ADDRESS`` names);
``hydra.launcher.ray.init.address=HOST:6379`` (or ``auto``, or ``ray://HOST:10001`` with
``ray[client]``) submits to an existing cluster. Each task asks for ``ray.remote.num_cpus`` CPUs and
``ray.remote.num_gpus`` GPUs, so a machine runs as many trials at once as its resources allow.

A trial records its own failure (``physai.run.sweeps.run_trial``); a trial whose worker died (killed,
out of memory) is recorded here as failed with Ray's error, and the sweep goes on. Cluster nodes need
the same environment (physai installed) and the sweep directory on a file system they all share.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from physai.run import sweeps

log = logging.getLogger(__name__)


def _run_job(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
             singleton_state: Dict[Any, Any]) -> JobReturn:
    """Runs in a Ray worker: Hydra's own job runner, as the basic launcher would call it."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class PhysaiRayLauncher(Launcher):
    """``ray.init`` holds ``ray.init()`` arguments (``address``), ``ray.remote`` each trial's task options."""

    def __init__(self, ray: Optional[DictConfig] = None) -> None:
        settings = _container(ray)
        self.init = _container(settings.get("init"))
        self.remote = {k: v for k, v in _container(settings.get("remote")).items() if v is not None}
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _start_ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("hydra/launcher=ray needs Ray: pip install 'physai[sweep]' (or pip install ray)") from exc
        if ray.is_initialized():
            return ray
        address = self.init.get("address") or os.environ.get("RAY_ADDRESS")
        if address and address != "local":
            log.info("Ray launcher: joining the Ray cluster at %s", address)
            ray.init(address=address, **{k: v for k, v in self.init.items() if k in _CLUSTER_INIT_KEYS})
        else:
            kwargs = {k: v for k, v in self.init.items() if v is not None and k != "address"}
            log.info("Ray launcher: starting a local Ray instance (%s)", kwargs or "defaults")
            ray.init(address="local", **kwargs)
        return ray

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        ray = self._start_ray()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        resources = ray.cluster_resources()
        log.info("Ray launcher: %d trial(s) into %s, each with %s (cluster: %s CPUs, %s GPUs)",
                 len(job_overrides), sweep_dir, self.remote or "Ray's defaults", resources.get("CPU", 0),
                 resources.get("GPU", 0))
        run_remote = ray.remote(_run_job).options(**self.remote)
        refs, configs = [], []
        for offset, overrides in enumerate(job_overrides):
            num = initial_job_idx + offset
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{num}"
                sweep_config.hydra.job.num = num
                sweep_config.hydra.sweep.dir = str(sweep_dir)  # one absolute directory for every worker
            configs.append(sweep_config)
            refs.append(run_remote.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state()))
        results: List[Optional[JobReturn]] = [None] * len(refs)
        pending = {ref: i for i, ref in enumerate(refs)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # the worker died or the task could not run: record it, go on
                    log.error("trial #%s failed in Ray: %s", configs[i].hydra.job.num, exc)
                    results[i] = _failed_return(configs[i], list(job_overrides[i]), exc)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return results  # type: ignore[return-value]


# ray.init arguments that also make sense when joining a cluster (the rest describe a local instance).
_CLUSTER_INIT_KEYS = ("runtime_env", "namespace", "log_to_driver", "logging_level", "ignore_reinit_error")


def _container(node: Any) -> Dict[str, Any]:
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    return dict(node)


def _failed_return(sweep_config: DictConfig, overrides: List[str], exc: BaseException) -> JobReturn:
    """A trial Ray could not bring back: recorded as failed (``trial.json``), no objective, sweep goes on."""
    subdir = str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
    run_dir = Path(str(sweep_config.hydra.sweep.dir)) / subdir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if sweeps.read_trial(run_dir) is None or sweeps.read_trial(run_dir).get("status") != sweeps.FAILED:
            sweeps.write_trial(run_dir, sweeps.trial_record(
                run_dir, num=int(sweep_config.hydra.job.num), overrides=overrides, status=sweeps.FAILED,
                sweep_dir=str(sweep_config.hydra.sweep.dir), error=exc))
    except Exception as record_exc:  # never let bookkeeping end the sweep
        log.error("could not record the failed trial in %s: %s", run_dir, record_exc)
    ret = JobReturn(overrides=overrides, working_dir=str(run_dir), task_name=str(sweep_config.hydra.job.name),
                    status=JobStatus.COMPLETED)
    ret.return_value = None  # not a float: optuna records the trial as failed; the basic sweeper goes on
    return ret
