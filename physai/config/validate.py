"""Range and consistency checks that types alone cannot express.

Hydra refuses unknown keys and wrong types; this module refuses the values that parse but
make no sense (``algo.n_envs=0``, a negative learning rate, an unknown stage) and names the
full key and a fix, before any work starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from physai.config.schema import ALGO_FRAMEWORK_KEYS
from physai.core.errors import ConfigError


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first out-of-range or inconsistent value in ``cfg``."""
    _check_node(cfg, prefix="")
    _check_algo_keys(cfg.algo)
    tuned_for = cfg.algo.get("tuned_for")
    if tuned_for and tuned_for not in (cfg.env.id, cfg.env.get("twin_of")):
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
        if settings.policy == "bundle" and not (Path(settings.bundle) / "manifest.json").is_file():
            raise ConfigError(f"synthetic.{stage}.bundle={settings.bundle!r} is not a bundle directory (it has no "
                              f"manifest.json); point it at a run's bundle/ folder")
    _check_consistency(cfg)
    if cfg.algo.name == "ppo":
        rollout = cfg.algo.n_steps * cfg.algo.n_envs
        if cfg.algo.batch_size > rollout:
            raise ConfigError(
                f"algo.batch_size={cfg.algo.batch_size} is larger than one rollout "
                f"(algo.n_steps x algo.n_envs = {rollout}); lower algo.batch_size or raise algo.n_steps"
            )


def _check_consistency(cfg: DictConfig) -> None:
    """Values that parse and lie in range alone but cannot work together, or name code that does not exist."""
    widths = list(cfg.algo.net_arch)
    if any(int(width) < 1 for width in widths):
        raise ConfigError(f"algo.net_arch={widths} has a layer of width < 1; every hidden layer needs at least one "
                          f"unit, e.g. algo.net_arch=[64,64] (or algo.net_arch=[] for a linear policy)")
    algo = cfg.algo
    if "rollout_length" in algo:
        schedule = list(algo.rollout_length)
        if len(schedule) != 4 or min(schedule[2:], default=0) < 1 or schedule[1] < schedule[0]:
            raise ConfigError(f"algo.rollout_length={schedule} must be [start_step, end_step, min_len, max_len] with "
                              f"end_step >= start_step and lengths >= 1, e.g. algo.rollout_length=[1000,10000,1,5]")
    horizons = list(cfg.synthetic.world_model.open_loop_horizons)
    if not horizons or min(horizons) < 1:
        raise ConfigError(f"synthetic.world_model.open_loop_horizons={horizons} must list model steps >= 1, e.g. "
                          f"[1,5,10,25,50]")
    backend = cfg.env.get("backend")
    if backend:
        module_name, _, name = str(backend).rpartition(".")
        try:
            getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"env.backend={backend!r} cannot be imported ({exc}); leave it unset for MuJoCo's "
                              f"CPU rollout backend") from exc
    if "guard" in cfg and cfg.guard.enabled:
        from physai.edge.fallback import FALLBACK_MODULE, FALLBACKS

        target = str((cfg.guard.fallback or {}).get("_target_", f"{FALLBACK_MODULE}.ZeroAction"))
        module_name, _, name = target.rpartition(".")
        if (module_name or FALLBACK_MODULE) != FALLBACK_MODULE or name not in FALLBACKS:
            raise ConfigError(f"guard.fallback._target_={target!r} is not a physai fallback controller; use one of "
                              f"{[f'{FALLBACK_MODULE}.{n}' for n in FALLBACKS]}")


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
            # NaN or infinity is never a setting; env.kwargs go to third-party envs and are theirs to judge.
            if isinstance(value, float) and not math.isfinite(value) and not full_key.startswith("env.kwargs."):
                raise ConfigError(f"{full_key}={value} is not a finite number; set a finite value, e.g. "
                                  f"{full_key}=<number>")
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
