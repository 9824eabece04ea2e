"""The one place physai talks to wandb. Offline by default: no account, no network.

``tracking=none`` swaps in ``NullTracker``; stages never import wandb themselves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)


class NullTracker:
    """Tracks nothing; the interface every tracker offers."""

    def __init__(self, **_: Any) -> None:
        pass

    def log(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        pass

    def summary(self, section: str, figures: dict[str, Any]) -> None:
        pass

    def log_image(self, key: str, path: Path) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, run_dir: Path, run_config: dict[str, Any], name: str, mode: str = "offline",
                 project: str = "physai", entity: Optional[str] = None, group: Optional[str] = None,
                 tags: Optional[list[str]] = None, job_type: str = "pipeline") -> None:
        import wandb

        self._wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=project, entity=entity, group=group, tags=list(tags or []), name=name,
                              job_type=job_type, mode=mode, dir=str(run_dir), config=run_config,
                              settings=wandb.Settings(console="off", x_disable_stats=True))
        log.info("wandb run %s (%s) in %s", self.run.id, mode, run_dir / "wandb")

    def log(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self.run.log(metrics, step=step)

    def summary(self, section: str, figures: dict[str, Any]) -> None:
        for key, value in _flatten(figures, prefix=section).items():
            self.run.summary[key] = value

    def log_image(self, key: str, path: Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def finish(self) -> None:
        self.run.finish()


def _flatten(figures: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        full = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, full))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[full] = value
    return flat
