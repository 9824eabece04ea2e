"""Range and consistency checks that types alone cannot express.

Hydra refuses unknown keys and wrong types; this module refuses the values that parse but
make no sense (``algo.n_envs=0``, a negative learning rate, an unknown stage) and names the
full key and a fix, before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from physai.config.schema import ALGO_FRAMEWORK_KEYS, STAGE_NAMES
from physai.errors import ConfigError


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first out-of-range or inconsistent value in ``cfg``."""
    _check_node(cfg, prefix="")
    _check_stages(list(cfg.pipeline.stages))
    _check_algo_keys(cfg.algo)
    tuned_for = cfg.algo.get("tuned_for")
    if tuned_for and tuned_for != cfg.env.id:
        raise ConfigError(
            f"env.id={cfg.env.id} runs with hyperparameters tuned for {tuned_for} (algo.tuned_for); pick the env "
            f"option made for {cfg.env.id} (env=<name>), or env=gym env.id={cfg.env.id} for untuned defaults")
    if "learning_starts" in cfg.algo and cfg.algo.learning_starts >= cfg.algo.total_timesteps:
        raise ConfigError(
            f"algo.learning_starts={cfg.algo.learning_starts} >= algo.total_timesteps={cfg.algo.total_timesteps}: "
            f"the policy would never be updated; lower algo.learning_starts (e.g. algo.learning_starts="
            f"{max(1, cfg.algo.total_timesteps // 10)})")
    synthetic = cfg.synthetic
    if synthetic.world_model.elites > synthetic.world_model.members:
        raise ConfigError(f"synthetic.world_model.elites={synthetic.world_model.elites} is more than "
                          f"synthetic.world_model.members={synthetic.world_model.members}; elites are chosen among "
                          f"the members, so lower elites or raise members")
    for stage in ("collect", "synthesize"):
        settings = synthetic[stage]
        if settings.policy == "bundle" and not settings.bundle:
            raise ConfigError(f"synthetic.{stage}.policy=bundle needs synthetic.{stage}.bundle=<a run's bundle "
                              f"directory>; or use synthetic.{stage}.policy=random")
    if cfg.algo.name == "ppo":
        rollout = cfg.algo.n_steps * cfg.algo.n_envs
        if cfg.algo.batch_size > rollout:
            raise ConfigError(
                f"algo.batch_size={cfg.algo.batch_size} is larger than one rollout "
                f"(algo.n_steps x algo.n_envs = {rollout}); lower algo.batch_size or raise algo.n_steps"
            )


def _check_algo_keys(algo: DictConfig) -> None:
    """Keys added with ``+algo.x=...`` must be keywords of the algorithm class, or SB3 fails mid-run."""
    from hydra.utils import get_class

    try:
        algorithm_class = get_class(algo._target_)
    except Exception as exc:  # hydra raises ImportError or ValueError depending on the path
        raise ConfigError(f"algo._target_={algo._target_!r} cannot be imported: {exc}") from exc
    accepted = set(inspect.signature(algorithm_class.__init__).parameters)
    for key in algo.keys():
        if key not in ALGO_FRAMEWORK_KEYS and key not in accepted:
            raise ConfigError(f"algo.{key} is not a setting of {algorithm_class.__name__}; remove it or fix the "
                              f"spelling (its settings: {sorted(accepted - {'self', 'policy', 'env'})})")


def _check_node(node: Any, prefix: str) -> None:
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        bounds = _field_rules(schema)
        for key in node.keys():
            if OmegaConf.is_missing(node, key):
                raise ConfigError(f"{prefix}{key} has no value; set it with {prefix}{key}=<value>")
            value = node[key]
            full_key = f"{prefix}{key}"
            rule = bounds.get(str(key))
            if rule is not None:
                _check_rule(full_key, value, rule)
            _check_node(value, prefix=f"{full_key}.")
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            _check_node(item, prefix=f"{prefix}{index}.")


def _field_rules(schema: Any) -> dict[str, dict[str, Any]]:
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    return {f.name: dict(f.metadata) for f in dataclasses.fields(schema) if f.metadata}


def _check_rule(key: str, value: Any, rule: dict[str, Any]) -> None:
    if value is None:
        return
    choices = rule.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}; pass e.g. {key}={choices[0]}")
    low, high, low_open = rule.get("low"), rule.get("high"), rule.get("low_open", False)
    hint = rule.get("hint") or ""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lower = f"> {low}" if low_open else f">= {low}"
        span = " and ".join(part for part in (
            lower if low is not None else "", f"<= {high}" if high is not None else "") if part)
        advice = f" ({hint})" if hint else ""
        raise ConfigError(f"{key}={value} is out of range: it must be {span}{advice}; override it, e.g. {key}=<value>")


def _check_stages(stages: list[str]) -> None:
    if not stages:
        raise ConfigError(f"pipeline.stages is empty; list some of {list(STAGE_NAMES)}")
    for stage in stages:
        if stage not in STAGE_NAMES:
            raise ConfigError(
                f"pipeline.stages names an unknown stage {stage!r}; known stages: {list(STAGE_NAMES)}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"pipeline.stages lists a stage twice: {stages}")
    order = [s for s in STAGE_NAMES if s in stages]
    if order != stages:
        raise ConfigError(f"pipeline.stages must keep the pipeline order {order}, got {stages}")


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Refuse a run directory that cannot be created or written, before anything is trained."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{what} '{target}' cannot be created: '{probe}' is a file, not a directory; "
            f"choose another {what} (e.g. hydra.run.dir=outputs/my_run)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} '{target}' is not writable ('{probe}' refuses writes); "
            f"choose a writable {what} (e.g. hydra.run.dir=outputs/my_run)")
    return target
