"""The pipeline runner: validate everything, then run the configured stages in order.

A stage is a module in ``physai.stages`` with ``REQUIRES`` and ``PRODUCES`` (artifact paths
relative to the run directory; ``summary:<section>`` for a section of ``summary.json``) and
``run(cfg, ctx) -> dict``. The runner checks every contract before the first stage starts,
so a pipeline that cannot finish refuses to begin.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from physai.config.compose import CONFIG_FILE, build_task
from physai.config.identity import training_identity
from physai.config.schema import (ALL_DEVICES, NON_IDENTITY_KEYS, DeviceConfig, PhysaiConfig, algo_schema_for,
                                  packaged_device_keys)
from physai.config.validate import check_writable_dir, validate_config
from physai.core.errors import ConfigError, ExistingRunError
from physai.core.io import read_summary, recover_interrupted_swaps, update_summary, write_text_atomic
from physai.deploy.devices.roofline import check_device
from physai.envs.engine import BatchedEngine
from physai.stages import known_stages, section_mismatch, stage_module

log = logging.getLogger(__name__)

# Trackers a run directory's config.yaml may name from before they moved to physai.run.tracking.
MOVED_TRACKERS = {"physai.tracking.WandbTracker": "physai.run.tracking.WandbTracker",
                  "physai.tracking.NullTracker": "physai.run.tracking.NullTracker"}

RUNNER_SECTIONS = ("timings_s",)  # summary sections the runner writes itself: seconds per stage


def _reads(module) -> set[str]:
    """What a stage reads: its REQUIRES, and the OPTIONAL artifacts it uses when an earlier stage wrote them
    (``summary:*``: every summary section)."""
    return set(module.REQUIRES) | set(getattr(module, "OPTIONAL", ()))


def _overlap(reads: set[str], produces: list[str]) -> list[str]:
    every_section = "summary:*" in reads
    return sorted(p for p in produces if p in reads or (every_section and p.startswith("summary:")))


def check_stages(stages: list[str]) -> None:
    """Known stages, each once, and none listed before a stage that produces what it reads."""
    known = known_stages()
    if not stages:
        raise ConfigError(f"pipeline.stages is empty; list some of {known}")
    for stage in stages:
        if stage not in known:
            raise ConfigError(f"pipeline.stages names an unknown stage {stage!r}; known stages: {known} "
                              f"(one module each in physai/stages/)")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"pipeline.stages lists a stage twice: {stages}")
    for stage in stages:
        module = stage_module(stage)
        untyped = [p for p in module.PRODUCES if p.startswith("summary:") and getattr(module, "SUMMARY", None) is None]
        if untyped:
            raise ConfigError(f"stage {stage!r} produces {untyped} but declares no SUMMARY; give its module "
                              f"SUMMARY = <a TypedDict of the section's keys> (see physai/stages/evaluate.py)")
    for i, earlier in enumerate(stages):
        for later in stages[i + 1:]:
            clash = _overlap(_reads(stage_module(earlier)), stage_module(later).PRODUCES)
            if clash:
                raise ConfigError(f"pipeline.stages runs '{earlier}' before '{later}', but '{later}' produces "
                                  f"{clash}, which '{earlier}' reads; list '{later}' before '{earlier}'")


@dataclass
class RunContext:
    """What a stage may touch: the run directory, the task, the tracker and the summary."""

    run_dir: Path
    cfg: DictConfig
    tracker: Any
    _task: Any = field(default=None, repr=False)

    @property
    def task(self):
        if self._task is None:
            self._task = build_task(self.cfg.env)
        return self._task

    def record(self, section: str, figures: dict[str, Any]) -> None:
        """Write one section of summary.json: a stage's typed section, or the runner's own timings."""
        mismatch = None if section in RUNNER_SECTIONS else section_mismatch(section, figures)
        if mismatch:  # a stage and its SUMMARY disagree: a bug in the stage, caught before readers trip on it
            raise TypeError(f"summary section {section!r}: {mismatch}")
        update_summary(self.run_dir, section, figures)
        self.tracker.summary(section, figures)

    def summary(self) -> dict[str, Any]:
        return read_summary(self.run_dir)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in _differences(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def _check_existing_run(cfg: DictConfig, run_dir: Path, stages: list[str]) -> None:
    """An existing run keeps what it trained: no silent retraining over it, no relabelled config."""
    saved_path = run_dir / CONFIG_FILE
    if saved_path.exists():
        saved = training_identity(OmegaConf.load(saved_path))
        changed = _differences(saved, training_identity(cfg))
        if changed:
            raise ExistingRunError(
                f"{run_dir} was trained with another config ({'; '.join(changed[:4])}); a run directory keeps "
                f"its training config. Use `physai run {run_dir} ...` to rerun stages with it, or choose a new "
                f"hydra.run.dir")
    if "train" in stages and not cfg.resume and (run_dir / "checkpoints").exists():
        raise ExistingRunError(
            f"{run_dir} already holds checkpoints; pass resume=true to continue that training, or choose a new "
            f"hydra.run.dir so nothing is overwritten")


# ----- contracts ---------------------------------------------------------------------------
def _artifact_exists(run_dir: Path, artifact: str, summary: dict[str, Any]) -> bool:
    if artifact.startswith("summary:"):
        return artifact.split(":", 1)[1] in summary
    return (run_dir / artifact).exists()


def check_contracts(stages: list[str], run_dir: Path) -> None:
    """Every artifact a stage reads must come from an earlier stage or already be in the run directory."""
    summary = read_summary(run_dir)
    produced: set[str] = set()
    for name in stages:
        module = stage_module(name)
        for artifact in module.REQUIRES:
            if artifact not in produced and not _artifact_exists(run_dir, artifact, summary):
                makers = [s for s in known_stages() if artifact in stage_module(s).PRODUCES]
                raise ConfigError(
                    f"pipeline.stages runs '{name}', which needs {artifact}, but no earlier stage produces it and "
                    f"{run_dir} does not have it; add {makers} before '{name}' in pipeline.stages, "
                    f"or rerun on a run directory that has it")
        produced.update(module.PRODUCES)


def prepare(cfg: DictConfig, run_dir: Path) -> None:
    """All checks that need no training: values, env, output directory, existing run, stage contracts."""
    validate_config(cfg)
    check_stages(list(cfg.pipeline.stages))
    check_writable_dir(run_dir, "run directory")
    task = build_task(cfg.env)  # refuses an unknown env id or a broken task definition
    task.make().close()  # the env itself refuses env.kwargs it does not take, or term parameters that conflict
    if getattr(task, "train_spec", None) is not getattr(task, "task_spec", None):
        # so do training-only events (env.train_events); the engine alone, so a refusal loads no trainer
        BatchedEngine(task.train_spec, 1, seed=0, nthread=1, backend=task.backend).close()
    for key, device in cfg.device.items():
        check_device(key, device)  # a device file the model cannot use fails before training, not at profile
    stages = list(cfg.pipeline.stages)
    for name in stages:  # a stage's own input checks (e.g. a scenario's columns) fail now, not after training
        check = getattr(stage_module(name), "check", None)
        if check is not None:
            check(cfg, task)
    _check_existing_run(cfg, run_dir, stages)
    check_contracts(stages, run_dir)


# ----- running -----------------------------------------------------------------------------
def make_tracker(cfg: DictConfig, run_dir: Path) -> Any:
    name = f"{cfg.experiment}-{cfg.env.id}-{cfg.algo.name}-s{cfg.seed}"
    return instantiate(cfg.tracking, run_dir=run_dir, name=name,
                       run_config=OmegaConf.to_container(cfg, resolve=True), _recursive_=False,
                       _convert_="all")


def run_pipeline(cfg: DictConfig, run_dir: Path, tracker: Optional[Any] = None) -> dict[str, Any]:
    """Run ``cfg.pipeline.stages`` against ``run_dir`` and return the final summary."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        recover_interrupted_swaps(run_dir)
        if (run_dir / "checkpoints").exists():
            recover_interrupted_swaps(run_dir / "checkpoints")
    prepare(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / CONFIG_FILE).exists():
        write_text_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    own_tracker = tracker is None
    tracker = make_tracker(cfg, run_dir) if own_tracker else tracker
    ctx = RunContext(run_dir=run_dir, cfg=cfg, tracker=tracker)
    timings: dict[str, float] = dict(read_summary(run_dir).get("timings_s", {}))
    try:
        for name in cfg.pipeline.stages:
            log.info("stage %s", name)
            start = time.perf_counter()
            with tracker.stage(name):  # one tracked run per stage (wandb job_type), its outputs logged at the end
                stage_module(name).run(cfg, ctx)
                timings[name] = round(time.perf_counter() - start, 3)
                ctx.record("timings_s", timings)
    finally:
        if own_tracker:
            tracker.finish()
    return read_summary(run_dir)


# ----- reruns ------------------------------------------------------------------------------
# Groups whose option may change when stages are rerun; env and algo define what was trained.
RERUN_GROUPS = ("tracking", "pipeline", "device", "guard")


def load_run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The config a run was made with, plus overrides, checked against the schema.

    ``key.sub=value`` sets one key; ``tracking=none``, ``pipeline=deploy`` or ``device=[a,b]`` replace
    that group with options from configs/. Only keys outside the training identity may change.
    """
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist: '{run_dir}' is not a physai run directory "
                          f"(run `python train.py` first, or point at the folder that holds {CONFIG_FILE})")
    saved = OmegaConf.load(path)
    if OmegaConf.select(saved, "tracking._target_") in MOVED_TRACKERS:  # a run made before the tracker moved
        saved.tracking._target_ = MOVED_TRACKERS[saved.tracking._target_]
    replacements, dotted = _split_overrides(overrides)
    for group, node in replacements.items():
        saved[group] = node
    try:
        algo_schema = algo_schema_for(saved.algo._target_)
    except KeyError:
        raise ConfigError(f"{path} names algo._target_={saved.algo._target_!r}, which this physai does not know")
    schema = OmegaConf.structured(PhysaiConfig)
    schema.algo = OmegaConf.structured(algo_schema)
    schema.device = {key: OmegaConf.structured(DeviceConfig) for key in saved.get("device", {})}
    try:
        return OmegaConf.merge(schema, saved, OmegaConf.from_dotlist(dotted))
    except Exception as exc:  # omegaconf raises several types; all mean a bad key or value
        raise ConfigError(f"override {overrides} does not fit the run's config: {exc}") from exc


def _split_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Group choices (``tracking=none``) apart from single-key overrides (``gate.strict=true``)."""
    replacements: dict[str, Any] = {}
    dotted = []
    for override in overrides:
        key, _, value = override.partition("=")
        if not any(key == allowed or key.startswith(allowed + ".") for allowed in NON_IDENTITY_KEYS):
            raise ConfigError(f"'{override}' would change what the run trained; a rerun may change only "
                              f"{list(NON_IDENTITY_KEYS)}. Start a new run with `python train.py {override}`")
        if key in RERUN_GROUPS:
            options = [o.strip() for o in value.strip("[]").split(",") if o.strip()]
            if key == "device" and options == [ALL_DEVICES]:
                options = packaged_device_keys()
            loaded = {option: _load_group_option(key, option, override) for option in options}
            replacements[key] = loaded if key == "device" else copy.deepcopy(loaded[options[0]])
        else:
            dotted.append(override)
    return replacements, dotted


def _load_group_option(group: str, option: str, override: str) -> DictConfig:
    folder = files("physai.configs") / group
    source = folder / f"{option}.yaml"
    if not source.is_file():
        known = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"'{override}': configs/{group} has no option '{option}'; known options: {known}")
    loaded = OmegaConf.create(source.read_text())
    loaded.pop("defaults", None)
    return loaded
