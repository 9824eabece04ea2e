"""Which policy a config trains: the identity a run directory keeps and a bundle's provenance records."""

from __future__ import annotations

import hashlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from physai.config.schema import NON_IDENTITY_KEYS


def training_identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that decides which policy gets trained (see ``NON_IDENTITY_KEYS``)."""
    identity = OmegaConf.to_container(cfg, resolve=True)
    for dotted in NON_IDENTITY_KEYS:
        *parents, leaf = dotted.split(".")
        node = identity
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    env = identity.get("env")
    if isinstance(env, dict) and not env.get("train_events"):
        env.pop("train_events", None)  # none is what runs made before the key existed meant: same identity
    return identity


def identity_hash(cfg: DictConfig) -> str:
    text = OmegaConf.to_yaml(OmegaConf.create(training_identity(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
