"""Pipeline stages, one module each: ``REQUIRES``, ``PRODUCES``, ``run(cfg, ctx)``, and optionally ``OPTIONAL``,
``check(cfg, task)`` and ``report_lines(cfg, ctx, summary)``. A module here is a stage: nothing registers it."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from physai.config.schema import STAGE_NAMES


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def known_stages() -> list[str]:
    """Every module of this package: a new stage is its module plus its name in a pipeline config."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def report_order() -> list[str]:
    """Every built-in stage in pipeline order, then any other stage by name: the report's section order."""
    return [*STAGE_NAMES, *(name for name in known_stages() if name not in STAGE_NAMES)]
