"""A dataset's contents in memory: episodes, transition batches and the provenance tables they point into."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
from gymnasium import spaces

from physai.core.errors import PhysaiError

FORMAT_NAME = "physai.transitions"
FORMAT_VERSION = 1
# The Minari release whose on-disk HDF5 layout this matches (and that the optional test opens it with).
MINARI_VERSION = "0.5.4"

DATA_DIR = "data"
MAIN_DATA_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"

SOURCE_REAL = 0
SOURCE_SYNTHETIC = 1
SOURCE_CODES = {"real": SOURCE_REAL, "synthetic": SOURCE_SYNTHETIC}
SOURCE_NAMES = {code: name for name, code in SOURCE_CODES.items()}
KINDS = ("real", "synthetic", "mixed")
NO_ID = -1

# name -> (dtype, fill for transitions the column does not apply to; None = always required)
PROVENANCE_COLUMNS: dict[str, tuple[type, Any]] = {
    "source": (np.uint8, None),           # SOURCE_REAL or SOURCE_SYNTHETIC
    "state_id": (np.int64, NO_ID),         # real: unique id of the transition's start state (obs) in this dataset
    "env_index": (np.int32, NO_ID),        # real: which sub-environment of the vector env produced it
    "seed": (np.int64, NO_ID),             # real: the episode's reset seed; synthetic: the rollout seed
    "model_index": (np.int32, NO_ID),      # synthetic: index into the dataset's model_hashes
    "scenario": (np.int32, NO_ID),         # synthetic: index into the dataset's scenario_names (-1: none)
    "branch_depth": (np.int32, 0),         # synthetic: model steps from the branch's start state to next_obs
    "uncertainty": (np.float32, np.nan),   # synthetic: the model's uncertainty for this step (NaN: not estimated)
    "parent_state_id": (np.int64, NO_ID),  # synthetic: state_id of the real start state (-1: prompt-sampled start)
}
# source and seed are one value per episode; the rest may vary from step to step.
PER_STEP_COLUMNS = tuple(name for name in PROVENANCE_COLUMNS if name not in ("source", "seed"))
CONTEXT_COLUMN = "context"  # optional (T, K) float32: physics / domain-randomization parameters, names in context_names

# (namespace/)name-v<N>: Minari parses ids of this form when it builds a dataset's spec.
_DATASET_ID = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")


class DatasetError(PhysaiError):
    """A transition dataset that is malformed, corrupted, of another format, or for another task."""



@dataclass(frozen=True)
class ProvenanceTables:
    """The per-dataset string tables that the integer provenance columns index into."""

    model_hashes: tuple[str, ...] = ()
    scenario_names: tuple[str, ...] = ()
    context_names: tuple[str, ...] = ()
    # The dataset whose state_ids the synthetic parent_state_ids point at; defaults to this dataset when it
    # holds real episodes itself.
    parent_dataset_id: Optional[str] = None

    def __post_init__(self):
        for name in ("model_hashes", "scenario_names", "context_names"):
            values = tuple(getattr(self, name))
            if not all(isinstance(value, str) and value for value in values):
                raise DatasetError(f"provenance_tables.{name} must be non-empty strings, got {list(values)!r}")
            if len(set(values)) != len(values):
                raise DatasetError(f"provenance_tables.{name} has duplicates: {list(values)!r}; list each once")
            object.__setattr__(self, name, values)

    def to_json(self) -> dict[str, Any]:
        return {"source_codes": dict(SOURCE_CODES), "model_hashes": list(self.model_hashes),
                "scenario_names": list(self.scenario_names), "context_names": list(self.context_names),
                "parent_dataset_id": self.parent_dataset_id}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "ProvenanceTables":
        return cls(model_hashes=tuple(record.get("model_hashes", ())),
                   scenario_names=tuple(record.get("scenario_names", ())),
                   context_names=tuple(record.get("context_names", ())),
                   parent_dataset_id=record.get("parent_dataset_id"))

    def scenario_name(self, code: int) -> str:
        return "(none)" if code < 0 else self.scenario_names[code]


@dataclass(eq=False)
class TransitionBatch:
    """Flat transitions for training, one row each, with their provenance columns.

    Provenance columns left as None get their fill value; a scalar is repeated for every row.
    ``episode_index`` / ``step_index`` locate a row in the dataset it was read from (-1 when unknown).
    """

    obs: np.ndarray
    act: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    source: Any
    state_id: Any = None
    env_index: Any = None
    seed: Any = None
    model_index: Any = None
    scenario: Any = None
    branch_depth: Any = None
    uncertainty: Any = None
    parent_state_id: Any = None
    context: Optional[np.ndarray] = None
    episode_index: Any = None
    step_index: Any = None

    def __post_init__(self):
        self.reward = np.asarray(self.reward, dtype=np.float64)
        if self.reward.ndim != 1:
            raise DatasetError(f"TransitionBatch.reward must be 1-D (one per transition), "
                               f"got shape {self.reward.shape}")
        rows = len(self.reward)
        self.obs, self.act, self.next_obs = (np.asarray(a) for a in (self.obs, self.act, self.next_obs))
        for name in ("obs", "act", "next_obs"):
            _check_rows(f"TransitionBatch.{name}", getattr(self, name), rows)
        if self.obs.shape != self.next_obs.shape:
            raise DatasetError(f"TransitionBatch.next_obs has shape {self.next_obs.shape} but obs has "
                               f"{self.obs.shape}; both hold one observation per transition")
        self.terminated = _flags("TransitionBatch.terminated", self.terminated, rows)
        self.truncated = _flags("TransitionBatch.truncated", self.truncated, rows)
        for name in PROVENANCE_COLUMNS:
            setattr(self, name, _provenance_column(f"TransitionBatch.{name}", name, getattr(self, name), rows))
        self.context = _context_column("TransitionBatch.context", self.context, rows)
        self.episode_index = _int_column("TransitionBatch.episode_index", self.episode_index, rows, np.int64)
        self.step_index = _int_column("TransitionBatch.step_index", self.step_index, rows, np.int64)

    def __len__(self) -> int:
        return len(self.reward)

    def columns(self) -> dict[str, Optional[np.ndarray]]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def select(self, rows: np.ndarray | slice) -> "TransitionBatch":
        """The rows picked by a boolean mask, index array or slice, e.g. ``batch.select(batch.source == 1)``."""
        return TransitionBatch(**{name: None if value is None else value[rows]
                                  for name, value in self.columns().items()})

    @classmethod
    def concatenate(cls, batches: Sequence["TransitionBatch"]) -> "TransitionBatch":
        """One batch holding every row of ``batches`` in order; context is NaN where a batch had none."""
        batches = list(batches)
        if not batches:
            raise DatasetError("TransitionBatch.concatenate needs at least one batch")
        for name in ("obs", "act"):
            shapes = {getattr(b, name).shape[1:] for b in batches}
            if len(shapes) > 1:
                raise DatasetError(f"cannot concatenate batches whose {name} shapes differ: {sorted(shapes)}")
        widths = {b.context.shape[1] for b in batches if b.context is not None}
        if len(widths) > 1:
            raise DatasetError(f"cannot concatenate batches whose context widths differ: {sorted(widths)}")
        merged = {}
        for name in cls.__dataclass_fields__:
            if name == CONTEXT_COLUMN:
                merged[name] = None if not widths else np.concatenate(
                    [b.context if b.context is not None else np.full((len(b), *widths), np.nan, np.float32)
                     for b in batches])
            else:
                merged[name] = np.concatenate([getattr(b, name) for b in batches])
        return cls(**merged)


@dataclass(eq=False)
class Episode:
    """One real episode or one synthetic model branch: T transitions with T+1 observations.

    Build with ``Episode.real(...)`` or ``Episode.synthetic(...)``, which fill the columns that do not apply.
    Provenance columns accept a scalar (repeated over the episode) or one value per transition.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    source: int
    seed: Optional[int] = None
    state_id: Any = None
    env_index: Any = None
    model_index: Any = None
    scenario: Any = None
    branch_depth: Any = None
    uncertainty: Any = None
    parent_state_id: Any = None
    context: Optional[np.ndarray] = None

    @classmethod
    def real(cls, observations, actions, rewards, terminations, truncations, *, state_id=None, env_index=0,
             seed: Optional[int] = None, context=None) -> "Episode":
        """A simulator episode. ``state_id`` left None gets fresh dataset-unique ids when written."""
        return cls(observations, actions, rewards, terminations, truncations, source=SOURCE_REAL, seed=seed,
                   state_id=state_id, env_index=env_index, context=context)

    @classmethod
    def synthetic(cls, observations, actions, rewards, terminations, truncations, *, seed: int,
                  parent_state_id=NO_ID, model_index=0, scenario=NO_ID, uncertainty=None,
                  branch_depth=None, context=None) -> "Episode":
        """A world-model branch. ``branch_depth`` defaults to 1..T (the first imagined step has depth 1);
        ``context`` is the physics the model was conditioned on (what the scenario asked for)."""
        return cls(observations, actions, rewards, terminations, truncations, source=SOURCE_SYNTHETIC, seed=seed,
                   parent_state_id=parent_state_id, model_index=model_index, scenario=scenario,
                   uncertainty=uncertainty, branch_depth=branch_depth, context=context)

    def __post_init__(self):
        self.observations = np.asarray(self.observations)
        self.actions = np.asarray(self.actions)
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        steps = len(self.rewards)
        if self.rewards.ndim != 1 or steps == 0:
            raise DatasetError(f"rewards must be a non-empty 1-D array (one per transition), "
                               f"got shape {self.rewards.shape}")
        _check_rows("observations", self.observations, steps + 1,
                    hint="an episode of T transitions holds T+1 observations (the last next_obs included)")
        _check_rows("actions", self.actions, steps)
        for name in ("observations", "actions", "rewards"):
            values = getattr(self, name)
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                raise DatasetError(f"{name} hold NaN or infinite values (first at row "
                                   f"{int(np.argwhere(~np.isfinite(values))[0][0])}); drop or truncate the "
                                   f"episode before writing (a diverged model branch, an exploded simulation)")
        self.terminations = _flags("terminations", self.terminations, steps)
        self.truncations = _flags("truncations", self.truncations, steps)
        ended = np.flatnonzero(self.terminations[:-1] | self.truncations[:-1])
        if len(ended):
            raise DatasetError(f"episode ends at step {int(ended[0])} (terminated or truncated) but goes on to "
                               f"step {steps - 1}; split it into one episode per reset")
        if self.source not in SOURCE_NAMES:
            raise DatasetError(f"source must be {SOURCE_CODES}, got {self.source!r}")
        self.source = int(self.source)
        if self.seed is not None:
            self.seed = int(self.seed)
        synthetic = self.source == SOURCE_SYNTHETIC
        if synthetic and self.branch_depth is None:
            self.branch_depth = np.arange(1, steps + 1)
        for name in PER_STEP_COLUMNS:
            setattr(self, name, _provenance_column(name, name, getattr(self, name), steps))
        self.context = _context_column("context", self.context, steps)
        self._check_columns_fit_source()

    def _check_columns_fit_source(self) -> None:
        kind = SOURCE_NAMES[self.source]
        if self.source == SOURCE_REAL:
            not_applicable = {"model_index": NO_ID, "scenario": NO_ID, "parent_state_id": NO_ID, "branch_depth": 0}
            hint = "real episodes come from the simulator; build model branches with Episode.synthetic"
        else:
            not_applicable = {"state_id": NO_ID, "env_index": NO_ID}
            hint = "a synthetic branch has no state of its own; point at its real start with parent_state_id"
        for name, fill in not_applicable.items():
            if np.any(getattr(self, name) != fill):
                raise DatasetError(f"{kind} episode sets {name}, which only applies to the other source: {hint}")
        if self.source == SOURCE_REAL:
            if not np.all(np.isnan(self.uncertainty)):
                raise DatasetError(f"real episode sets uncertainty, which only model branches have: {hint}")
            if np.any(self.env_index < 0):
                raise DatasetError("real episode env_index must be >= 0 (the vector sub-environment it ran in)")
        else:
            if np.any(self.model_index < 0):
                raise DatasetError("synthetic episode model_index must be >= 0 (an index into model_hashes)")
            if np.any(self.scenario < NO_ID) or np.any(self.parent_state_id < NO_ID):
                raise DatasetError("synthetic episode scenario and parent_state_id must be >= -1 (-1: none)")
            if np.any(self.branch_depth < 1):
                raise DatasetError("synthetic episode branch_depth must be >= 1 (model steps from the branch start)")

    def __len__(self) -> int:
        return len(self.rewards)

    def column(self, name: str) -> np.ndarray:
        """Provenance column ``name`` with one value per transition, as stored in ``infos/``."""
        if name == "source":
            return np.full(len(self), self.source, np.uint8)
        if name == "seed":
            return np.full(len(self), NO_ID if self.seed is None else self.seed, np.int64)
        return getattr(self, name)

    def transitions(self, episode_index: int = NO_ID) -> TransitionBatch:
        """This episode as flat transitions (obs[t], act[t], next_obs[t] = observations[t + 1])."""
        return TransitionBatch(
            obs=self.observations[:-1], act=self.actions, next_obs=self.observations[1:], reward=self.rewards,
            terminated=self.terminations, truncated=self.truncations,
            **{name: self.column(name) for name in PROVENANCE_COLUMNS}, context=self.context,
            episode_index=episode_index, step_index=np.arange(len(self)))


@dataclass(eq=False)
class LoadedDataset:
    """A verified dataset in memory: flat transitions for training and per-episode views for evaluation."""

    directory: Path
    metadata: dict[str, Any]
    observation_space: spaces.Space
    action_space: spaces.Space
    provenance_tables: ProvenanceTables
    transitions: TransitionBatch
    episode_starts: np.ndarray  # (episodes + 1,) row offsets of each episode in ``transitions``
    episode_seeds: list[Optional[int]] = field(default_factory=list)

    @property
    def dataset_id(self) -> str:
        return self.metadata["dataset_id"]

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def task_id(self) -> str:
        return self.metadata["task_id"]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    def episode(self, index: int) -> Episode:
        """Episode ``index`` rebuilt from the flat rows, exactly as it was written."""
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range: {self.dataset_id} has {self.num_episodes} episodes")
        start, stop = int(self.episode_starts[index]), int(self.episode_starts[index + 1])
        rows = self.transitions.select(slice(start, stop))
        return Episode(observations=np.concatenate([rows.obs, rows.next_obs[-1:]]), actions=rows.act,
                       rewards=rows.reward, terminations=rows.terminated, truncations=rows.truncated,
                       source=int(rows.source[0]), seed=self.episode_seeds[index],
                       **{name: getattr(rows, name) for name in PER_STEP_COLUMNS},
                       context=None if rows.context is None or np.isnan(rows.context).all() else rows.context)

    def episodes(self) -> Iterator[Episode]:
        for index in range(self.num_episodes):
            yield self.episode(index)


# ----- column helpers -----------------------------------------------------------------------------

def _check_rows(name: str, values: np.ndarray, rows: int, hint: str = "") -> None:
    if values.ndim == 0 or len(values) != rows:
        found = "a scalar" if values.ndim == 0 else f"{len(values)} rows"
        raise DatasetError(f"{name} has {found}, expected {rows}" + (f": {hint}" if hint else ""))


def _flags(name: str, values: Any, rows: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (rows,):
        raise DatasetError(f"{name} has shape {values.shape}, expected ({rows},)")
    if values.dtype != np.bool_ and not np.isin(values, (0, 1)).all():
        raise DatasetError(f"{name} must be booleans (or 0/1), got values {np.unique(values)[:5].tolist()}")
    return values.astype(np.bool_)


def _provenance_column(name: str, column: str, values: Any, rows: int) -> np.ndarray:
    dtype, fill = PROVENANCE_COLUMNS[column]
    if values is None:
        if fill is None:
            raise DatasetError(f"{name} is required ({SOURCE_CODES})")
        return np.full(rows, fill, dtype)
    if np.issubdtype(dtype, np.integer):
        array = _int_column(name, values, rows, dtype)
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise DatasetError(f"{name} must be numbers, got {array.dtype}")
        array = np.broadcast_to(array, (rows,)) if array.ndim == 0 else array
        if array.shape != (rows,):
            raise DatasetError(f"{name} has shape {array.shape}, expected ({rows},) or a scalar")
        array = array.astype(dtype)
    if column == "source" and not np.isin(array, list(SOURCE_NAMES)).all():
        raise DatasetError(f"{name} holds codes other than {SOURCE_CODES}")
    return array


def _int_column(name: str, values: Any, rows: int, dtype: type) -> np.ndarray:
    if values is None:
        return np.full(rows, NO_ID, dtype)
    array = np.asarray(values)
    if array.dtype.kind not in "biu":
        raise DatasetError(f"{name} must be integers, got {array.dtype}")
    if array.ndim == 0:
        array = np.full(rows, array)
    if array.shape != (rows,):
        raise DatasetError(f"{name} has shape {array.shape}, expected ({rows},) or a scalar")
    limits = np.iinfo(dtype)
    if len(array) and (array.min() < limits.min or array.max() > limits.max):
        raise DatasetError(f"{name} holds values outside {np.dtype(dtype).name} "
                           f"[{limits.min}, {limits.max}]")
    return array.astype(dtype)


def _context_column(name: str, values: Any, rows: int) -> Optional[np.ndarray]:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 1:
        array = np.broadcast_to(array, (rows, len(array))).copy()
    if array.ndim != 2 or len(array) != rows:
        raise DatasetError(f"{name} has shape {array.shape}, expected ({rows}, K) or (K,) for K context parameters")
    return array
