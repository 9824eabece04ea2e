"""Pipeline stages, one module each: ``REQUIRES``, ``PRODUCES``, ``run(cfg, ctx)``, and optionally ``OPTIONAL``,
``check(cfg, task)`` and ``report_lines(cfg, ctx, summary)``. A module here is a stage: nothing registers it.

A stage that produces ``summary:<section>`` declares the section's keys as a ``TypedDict`` in ``SUMMARY``;
the top-level keys it records are checked against it, so every reader of ``summary.json`` can rely on
them. Write a key that may be empty as ``Optional[...]`` and always record it (``None``): with postponed
annotations, ``NotRequired`` is not seen at run time."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Mapping, Optional

from physai.config.schema import STAGE_NAMES


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def known_stages() -> list[str]:
    """Every module of this package: a new stage is its module plus its name in a pipeline config."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def summary_type(section: str) -> Optional[type]:
    """The ``SUMMARY`` of the stage that produces ``summary:<section>``; None when no stage does."""
    for name in known_stages():
        module = stage_module(name)
        if f"summary:{section}" in module.PRODUCES:
            return getattr(module, "SUMMARY", None)
    return None


def section_mismatch(section: str, figures: Mapping[str, object]) -> Optional[str]:
    """Why ``figures`` is not the section its stage declares (missing or undeclared keys); None when it is."""
    declared = summary_type(section)
    if declared is None:
        return f"no stage declares summary:{section} in PRODUCES with its SUMMARY"
    required, known = declared.__required_keys__, declared.__required_keys__ | declared.__optional_keys__
    missing, undeclared = sorted(required - figures.keys()), sorted(figures.keys() - known)
    if missing or undeclared:
        return f"it does not match {declared.__name__}: missing keys {missing}, undeclared keys {undeclared}"
    return None


def report_order() -> list[str]:
    """Every built-in stage in pipeline order, then any other stage by name: the report's section order."""
    return [*STAGE_NAMES, *(name for name in known_stages() if name not in STAGE_NAMES)]
