"""Range and consistency checks that types alone cannot express.

Hydra refuses unknown keys and wrong types; this module refuses the values that parse but
make no sense (``algo.n_envs=0``, a negative learning rate, an unknown stage) and names the
full key and a fix, before any work starts. It knows no section: ranges come from field metadata
and cross-field rules from each schema class's ``check`` (see ``physai.config.schema``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from physai.config.schema import ALGO_FRAMEWORK_KEYS, SAC_CRITIC_KEYS, TEACHER_KEYS
from physai.core.errors import ConfigError


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first out-of-range or inconsistent value in ``cfg``."""
    _check_node(cfg, prefix="")
    _check_algo_keys(cfg.algo)


def _check_algo_keys(algo: DictConfig) -> None:
    """Keys added with ``+algo.x=...`` must be keywords of the algorithm class, or SB3 fails mid-run."""
    try:
        algorithm_class = get_class(algo._target_)
    except Exception as exc:  # hydra raises ImportError or ValueError depending on the path
        raise ConfigError(f"algo._target_={algo._target_!r} cannot be imported: {exc}") from exc
    accepted = set(inspect.signature(algorithm_class.__init__).parameters)
    from stable_baselines3 import SAC  # imported with the algorithm class above anyway

    if issubclass(algorithm_class, SAC):
        accepted |= SAC_CRITIC_KEYS
    # Settings a class's own trainer reads, not its constructor (e.g. rsl-rl's PPO: physai.train.rsl_ppo).
    accepted |= set(getattr(algorithm_class, "trainer_settings", ()))
    for key in algo.keys():
        if key not in ALGO_FRAMEWORK_KEYS | TEACHER_KEYS and key not in accepted:
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
            # NaN or infinity is never a setting; env.kwargs go to third-party envs and are theirs to judge.
            if isinstance(value, float) and not math.isfinite(value) and not full_key.startswith("env.kwargs."):
                raise ConfigError(f"{full_key}={value} is not a finite number; set a finite value, e.g. "
                                  f"{full_key}=<number>")
            rule = bounds.get(str(key))
            if rule is not None:
                _check_rule(full_key, value, rule)
            _check_node(value, prefix=f"{full_key}.")
        section_rules = getattr(schema, "check", None)
        if section_rules is not None:  # the section's own cross-field rules, once its fields are in range
            section_rules(node, prefix)
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
