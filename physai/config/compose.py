"""One way to get a config and a task: what ``train.py``, the stages, ``physai gate`` and the benchmarks use."""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig

from physai.config.schema import register_configs
from physai.core.errors import ConfigError, PhysaiError

CONFIG_FILE = "config.yaml"  # a run directory's resolved config, the one every later command rebuilds from


def build_task(env_cfg: DictConfig) -> Any:
    """Instantiate the configured task, letting our own input errors through unwrapped."""
    try:
        return instantiate(env_cfg, _convert_="all")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, PhysaiError):
            raise exc.__cause__ from None
        raise ConfigError(f"env._target_={env_cfg._target_!r} could not build the task: {exc}") from exc


def compose_config(overrides: list[str]) -> DictConfig:
    """The config ``train.py`` would run with these overrides (packaged configs, schema defaults filled)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("physai.configs", version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except MissingConfigException as exc:
        raise ConfigError(f"{overrides}: {exc}") from None


def override_value(value: Any) -> str:
    """A Python value as the right-hand side of a Hydra override: ``null``, ``true``/``false``, ``[a,b]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, (list, tuple)) else str(value)
