"""The one place physai talks to wandb. Offline by default: no account, no network.

``tracking=none`` swaps in ``NullTracker``; stages never import wandb themselves.

``WandbTracker`` opens one wandb run per pipeline stage (``job_type`` = the stage: ``train``,
``evaluate``, ``export``, ...), all in one group: the sweep for a trial of ``python train.py -m``
(every trial and stage of a sweep in one group), else the run directory. When a stage ends, what it
wrote is logged with it: the bundle as a ``model`` artifact, report plots as images, MP4s as videos.
Offline runs land in ``<run_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from physai.run.sweeps import trial_info

log = logging.getLogger(__name__)

MEDIA_DIR = "report"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".gif")
BUNDLE_DIR = "bundle"


class NullTracker:
    """Tracks nothing; the interface every tracker offers."""

    def __init__(self, **_: Any) -> None:
        pass

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Everything logged inside belongs to pipeline stage ``name``."""
        yield

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
        import wandb  # a heavy import, paid only by runs that track

        self._wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run_dir = Path(run_dir)
        self.mode, self.project, self.entity, self.tags = mode, project, entity, list(tags or [])
        trial = trial_info(self.run_dir)
        if trial is not None:
            self.group = group or f"sweep-{_dir_label(Path(trial['sweep_dir']))}"
            self.name = f"t{trial['num']}-{name}"
        else:
            self.group = group or f"run-{_dir_label(self.run_dir.absolute())}"
            self.name = name
        self.config = {**run_config, "trial": {"run_dir": str(self.run_dir.absolute()), **(trial or {})}}
        self.default_job_type = job_type
        self.run: Any = None
        self._logged: set[str] = set()
        self._runs_started = 0

    # ----- runs -----------------------------------------------------------------------------
    def _start(self, job_type: str) -> None:
        # wandb lists every installed package (requirements.txt) at each init, about half a second apiece; they
        # cannot change between the stages of one pipeline, so only its first stage's run records them.
        settings = self._wandb.Settings(console="off", x_disable_stats=True,
                                        x_save_requirements=self._runs_started == 0)
        self.run = self._wandb.init(project=self.project, entity=self.entity, group=self.group, tags=self.tags,
                                    name=f"{self.name}-{job_type}", job_type=job_type, mode=self.mode,
                                    dir=str(self.run_dir), config=self.config, reinit="create_new",
                                    settings=settings)
        self._runs_started += 1
        log.info("wandb run %s (%s, group %s, job_type %s) in %s", self.run.id, self.mode, self.group, job_type,
                 self.run_dir / "wandb")

    def _current(self) -> Any:
        if self.run is None:
            self._start(self.default_job_type)
        return self.run

    def _finish_run(self, exit_code: int = 0) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=exit_code)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._finish_run()
        self._start(name)
        started = time.time()
        ok = False
        try:
            yield
            ok = True
        finally:
            try:
                self._log_outputs(since=started)
            except Exception as exc:  # tracking must never fail a stage
                log.warning("wandb: could not log the outputs of stage %s: %s", name, exc)
            self._finish_run(exit_code=0 if ok else 1)

    # ----- what stages log ---------------------------------------------------------------------
    def log(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self._current().log(metrics, step=step)

    def summary(self, section: str, figures: dict[str, Any]) -> None:
        # One update for the section: setting keys one by one sends wandb's service a message per key.
        self._current().summary.update(_flatten(figures, prefix=section))

    def log_image(self, key: str, path: Path) -> None:
        self._current().log({key: self._wandb.Image(str(path))})
        self._logged.add(_mark(Path(path)))

    def finish(self) -> None:
        self._finish_run()

    # ----- what a stage wrote ------------------------------------------------------------------
    def _log_outputs(self, since: float) -> None:
        """Plots, videos and the bundle the stage just wrote (files newer than its start)."""
        fresh = since - 1.0  # coarse file-system clocks
        media_dir = self.run_dir / MEDIA_DIR
        if media_dir.is_dir():
            for path in sorted(media_dir.rglob("*")):
                suffix = path.suffix.lower()
                if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES or path.name.startswith(".") or not path.is_file():
                    continue
                if path.stat().st_mtime < fresh or _mark(path) in self._logged:
                    continue
                key = str(path.relative_to(self.run_dir).with_suffix("")).replace(os.sep, "/")
                media = self._wandb.Image(str(path)) if suffix in IMAGE_SUFFIXES else self._wandb.Video(str(path))
                self.run.log({key: media})
                self._logged.add(_mark(path))
        manifest = self.run_dir / BUNDLE_DIR / "manifest.json"
        if manifest.is_file() and manifest.stat().st_mtime >= fresh and _mark(manifest) not in self._logged:
            self._log_bundle(manifest)
            self._logged.add(_mark(manifest))

    def _log_bundle(self, manifest_path: Path) -> None:
        manifest = json.loads(manifest_path.read_text())
        provenance = manifest.get("provenance") or {}
        env_id = str(provenance.get("env_id") or self.config.get("env", {}).get("id", "env"))
        algo = str(provenance.get("algo") or self.config.get("algo", {}).get("name", "algo"))
        name = _artifact_name(f"bundle-{env_id}-{algo}")
        trial = self.config.get("trial") or {}
        metadata = {"format_version": manifest.get("format_version"), "provenance": provenance,
                    "control_rate_hz": manifest.get("control_rate_hz"), "evaluation": manifest.get("evaluation"),
                    "run_dir": trial.get("run_dir"), "sweep_dir": trial.get("sweep_dir"), "trial": trial.get("num")}
        artifact = self._wandb.Artifact(name=name, type="model", metadata=_jsonable(metadata),
                                        description=f"physai bundle: {env_id} / {algo} / seed {provenance.get('seed')}")
        # "immutable": wandb references the bundle's files where they are (bundles are swapped in whole,
        # never edited), so an offline run needs no staging copy outside the run directory.
        artifact.add_dir(str(manifest_path.parent), policy="immutable")
        aliases = [f"seed-{provenance.get('seed')}"] + ([f"trial-{trial['num']}"] if trial.get("num") is not None else [])
        self.run.log_artifact(artifact, aliases=aliases)


def _mark(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"


def _dir_label(path: Path) -> str:
    """``multirun/2026-11-23/16-02-00`` -> ``2026-11-23_16-02-00``: the date and time Hydra names runs by."""
    return _artifact_name(f"{path.parent.name}_{path.name}" if path.parent.name else path.name)


def _artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "physai"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flatten(figures: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        full = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, full))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[full] = value
    return flat
