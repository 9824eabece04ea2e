"""What every part of the world model shares: its error type, the settings that rebuild the network,
the inference block size."""

from __future__ import annotations

from dataclasses import dataclass

from physai.core.errors import PhysaiError

# Inference runs over rows in blocks this size, so each [elites, rows, hidden] activation stays in the
# CPU's cache: the elementwise SiLU and bias adds are memory-bound (the matmuls are not).
INFERENCE_CHUNK_ROWS = 1024


class WorldModelError(PhysaiError):
    """A world-model file or data set that cannot be used: corrupted, for another task, or malformed."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Everything needed to rebuild the network; saved with the weights."""

    obs_dim: int
    act_dim: int
    context_dim: int = 0
    context_names: tuple[str, ...] = ()
    obs_names: tuple[str, ...] = ()
    members: int = 7
    elites: int = 5
    hidden: int = 200
    layers: int = 4
    seed: int = 0
    weight_decay: tuple[float, ...] = ()
    learning_rate: float = 1e-3
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_penalty: float = 0.01
    termination_loss_weight: float = 1.0
