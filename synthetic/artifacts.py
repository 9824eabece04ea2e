"""Where the collect / world_model / synthesize stages put their artifacts in a run directory, and
the Minari-style ids of the datasets they write."""

from __future__ import annotations

import re

REAL_DATASET = "datasets/real"
SYNTHETIC_DATASET = "datasets/synthetic"
WORLD_MODEL_FILE = "world_model/model.pt"
# Inside a checkpoint: the ensemble a model-based learner (MBPO) refit and trained its policy with.
CHECKPOINT_WORLD_MODEL = "world_model.pt"


def dataset_id(env_id: str, kind: str) -> str:
    """A Minari-style id, ``<task>/<kind>-v0``, from an env id such as ``physai/CartpoleBalance-v0``."""
    task = re.sub(r"-v\d+$", "", env_id).replace("/", "-")
    return f"{task}/{kind}-v0"
