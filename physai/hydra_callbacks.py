"""Hydra callbacks: refuse a bad config before Hydra creates the run directory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from physai.errors import PhysaiError


class Preflight(Callback):
    """Runs ``physai.pipeline.prepare`` on the composed config before Hydra writes anything.

    Hydra turns exceptions raised in callbacks into warnings, so a refusal exits here directly.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from physai.pipeline import prepare

        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            prepare(task_cfg, Path(config.hydra.run.dir))
        except PhysaiError as exc:
            print(f"physai: error: {exc}", file=sys.stderr)
            sys.exit(2)
