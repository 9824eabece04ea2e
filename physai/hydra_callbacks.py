"""Hydra callbacks: refuse a bad config before Hydra creates the run directory."""

from __future__ import annotations

import copy
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from physai.errors import PhysaiError


class Preflight(Callback):
    """Runs the checks of ``physai.pipeline.prepare`` that need no run directory yet.

    Hydra turns exceptions raised in callbacks into warnings, so a refusal exits here directly.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from physai.config.validate import check_writable_dir, validate_config
        from physai.pipeline import build_task

        run_dir = config.hydra.run.dir
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            check_writable_dir(run_dir, "run directory (hydra.run.dir)")
            validate_config(task_cfg)
            build_task(task_cfg.env)
        except PhysaiError as exc:
            print(f"physai: error: {exc}", file=sys.stderr)
            sys.exit(2)
