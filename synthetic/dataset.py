"""Transition datasets on disk: real (simulator) and synthetic (world-model) experience, with provenance.

The layout is Minari's HDF5 storage, so Farama tools (``minari.MinariDataset(<directory>/data)``) open
physai datasets as they are::

    <directory>/data/main_data.hdf5   episode_{i}/observations   (T+1, *obs_shape)
                                      episode_{i}/actions        (T, *act_shape)
                                      episode_{i}/rewards        (T,) float64
                                      episode_{i}/terminations   (T,) bool
                                      episode_{i}/truncations    (T,) bool
                                      episode_{i}/infos/<column> (T,)  provenance, one row per transition
    <directory>/data/metadata.json    Minari's keys, plus physai's format version, kind, task, provenance
                                      tables, summary counts, generator info and the sha256 of the HDF5 file

Provenance is what lets a trained policy be traced back to the simulator states and the world model
(and scenario prompt) that produced its experience, and lets synthetic branches be compared with the real
states they started from. Every transition carries the same columns (see ``PROVENANCE_COLUMNS``); a column
that does not apply to a transition's source holds its fill value (-1, 0 or NaN).

One deliberate difference from Minari's own collector: Minari stores T+1 info rows (the reset info first),
physai stores T, aligned with actions and rewards, because provenance describes transitions. Minari does
not check info lengths and loads these files unchanged.

A dataset is assembled in a staging directory beside its target and swapped in whole, so a failed or
killed write never leaves a half-written dataset where a good one was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import h5py
import numpy as np
from gymnasium import spaces

from physai.errors import PhysaiError
from physai.io import atomic_path, fresh_staging_dir, replace_dir_atomically, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------
# In-memory forms


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


# --------------------------------------------------------------------------------------------------
# Writing


def write_dataset(directory: str | os.PathLike, episodes: Sequence[Episode | Mapping[str, Any]], *,
                  dataset_id: str, kind: str, task_id: str, observation_space: spaces.Space,
                  action_space: spaces.Space, provenance_tables: ProvenanceTables = ProvenanceTables(),
                  generator_info: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``episodes`` as a Minari-layout dataset at ``directory``, replacing any dataset there whole.

    Everything is checked before a byte is written. ``generator_info`` is free-form JSON describing how the
    data was made (model id, policy, seeds, config); the tables and counts are recorded from the episodes.
    """
    target = Path(directory)
    if not isinstance(dataset_id, str) or not _DATASET_ID.match(dataset_id):
        raise DatasetError(f"dataset_id={dataset_id!r} is not of the form (namespace/)name-v<N> that Minari reads, "
                           f"e.g. 'physai/halfcheetah-real-v0'")
    if kind not in KINDS:
        raise DatasetError(f"kind={kind!r} is not one of {KINDS}")
    if not isinstance(task_id, str) or not task_id:
        raise DatasetError(f"task_id={task_id!r} must name the task the data was collected in, e.g. 'HalfCheetah-v5'")
    observation_record = space_to_dict(observation_space, "observation_space")
    action_record = space_to_dict(action_space, "action_space")
    generator = dict(generator_info or {})
    try:
        json.dumps(generator, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"generator_info must be plain JSON (str, numbers, lists, dicts): {exc}") from exc

    episodes = [_as_episode(index, episode) for index, episode in enumerate(episodes)]
    if not episodes:
        raise DatasetError(f"no episodes to write to {target}; a dataset holds at least one")
    for index, episode in enumerate(episodes):
        _check_episode_fits(index, episode, kind, observation_space, action_space, provenance_tables)
    episodes = _with_fresh_state_ids(episodes)
    tables = _checked_parents(episodes, dataset_id, provenance_tables)
    _refuse_foreign_directory(target)
    _finish_interrupted_swap(target)

    total_steps = sum(len(episode) for episode in episodes)
    minari_fields = {"dataset_id": dataset_id, "minari_version": MINARI_VERSION, "total_episodes": len(episodes),
                     "total_steps": total_steps, "observation_space": json.dumps(observation_record),
                     "action_space": json.dumps(action_record)}
    physai_fields = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind, "task_id": task_id}
    root_attrs = {**minari_fields, **physai_fields,
                  **{name: json.dumps(value) for name, value in tables.to_json().items()}}

    staging = fresh_staging_dir(target)
    try:
        data_dir = staging / DATA_DIR
        data_dir.mkdir()
        main_file = data_dir / MAIN_DATA_FILE
        with atomic_path(main_file) as tmp:
            _write_hdf5(tmp, episodes, root_attrs, observation_space, action_space, tables)
        metadata = {**minari_fields, "data_format": "hdf5", "jpeg_encoding": False, **physai_fields,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "provenance": tables.to_json(), "summary": _summarize(episodes, tables),
                    "generator": generator,
                    "files": {MAIN_DATA_FILE: {"sha256": sha256_file(main_file), "bytes": main_file.stat().st_size}}}
        write_json_atomic(data_dir / METADATA_FILE, metadata)
        replace_dir_atomically(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote dataset %s to %s: %d episodes, %d transitions", dataset_id, target, len(episodes), total_steps)
    return target


def _as_episode(index: int, episode: Episode | Mapping[str, Any]) -> Episode:
    """A checked Episode; an Episode is checked again since its arrays may have changed since it was built."""
    try:
        return dataclasses.replace(episode) if isinstance(episode, Episode) else Episode(**episode)
    except DatasetError as exc:
        raise DatasetError(f"episode {index}: {exc}") from exc
    except TypeError as exc:
        raise DatasetError(f"episode {index} is not an Episode or a mapping of its fields: {exc}") from exc


def _check_episode_fits(index: int, episode: Episode, kind: str, observation_space: spaces.Space,
                        action_space: spaces.Space, tables: ProvenanceTables) -> None:
    where = f"episode {index}"
    source = SOURCE_NAMES[episode.source]
    if kind != "mixed" and source != kind:
        raise DatasetError(f"{where} is {source} but kind={kind!r}; use kind='mixed' for a dataset holding both")
    for name, values, space in (("observations", episode.observations, observation_space),
                                ("actions", episode.actions, action_space)):
        if values.shape[1:] != space.shape:
            raise DatasetError(f"{where}: {name} have shape {values.shape[1:]} per row but the space has "
                               f"{space.shape}")
        if not np.can_cast(values.dtype, space.dtype, "same_kind"):
            raise DatasetError(f"{where}: {name} are {values.dtype} and cannot be stored as the space's "
                               f"{space.dtype} without changing their kind")
    if episode.source == SOURCE_SYNTHETIC:
        if np.any(episode.model_index >= len(tables.model_hashes)):
            raise DatasetError(f"{where}: model_index {int(episode.model_index.max())} but "
                               f"provenance_tables.model_hashes names {len(tables.model_hashes)} model(s); "
                               f"add the hash of the model that generated it")
        if np.any(episode.scenario >= len(tables.scenario_names)):
            raise DatasetError(f"{where}: scenario {int(episode.scenario.max())} but "
                               f"provenance_tables.scenario_names names {len(tables.scenario_names)} scenario(s)")
    elif tables.context_names:
        width = 0 if episode.context is None else episode.context.shape[1]
        if width != len(tables.context_names):
            raise DatasetError(f"{where}: context has {width} values per step but provenance_tables.context_names "
                               f"names {len(tables.context_names)}: {list(tables.context_names)}")
    elif episode.context is not None:
        raise DatasetError(f"{where} has context values but provenance_tables.context_names is empty; "
                           f"name each context parameter")


def _with_fresh_state_ids(episodes: list[Episode]) -> list[Episode]:
    """Give real transitions without a state_id new ids above every given one, then check all are unique."""
    real = [e for e in episodes if e.source == SOURCE_REAL]
    if not real:
        return episodes
    given = np.concatenate([e.state_id for e in real])
    next_id = int(given.max()) + 1 if np.any(given >= 0) else 0
    updated = []
    for episode in episodes:
        missing = (episode.state_id < 0) & (episode.source == SOURCE_REAL)
        if missing.any():
            state_id = episode.state_id.copy()
            state_id[missing] = np.arange(next_id, next_id + int(missing.sum()))
            next_id += int(missing.sum())
            episode = dataclasses.replace(episode, state_id=state_id)
        updated.append(episode)
    ids = np.concatenate([e.state_id for e in updated if e.source == SOURCE_REAL])
    unique, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise DatasetError(f"state_id {int(unique[counts > 1][0])} is given to {int(counts.max())} real transitions; "
                           f"state ids must be unique within a dataset (leave them None to have them assigned)")
    return updated


def _checked_parents(episodes: list[Episode], dataset_id: str, tables: ProvenanceTables) -> ProvenanceTables:
    """Resolve which dataset parent_state_ids point into, and check them when it is this one."""
    has_real = any(e.source == SOURCE_REAL for e in episodes)
    branches = [e.parent_state_id for e in episodes if e.source == SOURCE_SYNTHETIC]
    parents = np.concatenate(branches or [np.empty(0, np.int64)])
    parent_dataset_id = tables.parent_dataset_id or (dataset_id if has_real and branches else None)
    if np.any(parents >= 0) and parent_dataset_id is None:
        raise DatasetError("synthetic branches point at real start states (parent_state_id >= 0) but "
                           "provenance_tables.parent_dataset_id is not set: name the real dataset those state ids "
                           "come from")
    if parent_dataset_id == dataset_id:
        real_ids = np.concatenate([e.state_id for e in episodes if e.source == SOURCE_REAL] or [np.empty(0)])
        dangling = np.setdiff1d(parents[parents >= 0], real_ids)
        if len(dangling):
            raise DatasetError(f"parent_state_id {int(dangling[0])} names no real transition in this dataset "
                               f"({len(dangling)} dangling); set provenance_tables.parent_dataset_id to the dataset "
                               f"the branches started in")
    return dataclasses.replace(tables, parent_dataset_id=parent_dataset_id)


def _write_hdf5(path: Path, episodes: list[Episode], root_attrs: dict[str, Any], observation_space: spaces.Space,
                action_space: spaces.Space, tables: ProvenanceTables) -> None:
    with h5py.File(path, "w", track_order=True) as file:
        file.attrs.update(root_attrs)
        for index, episode in enumerate(episodes):
            _write_episode_group(file, index, episode, observation_space, action_space, tables)


def _write_episode_group(file: h5py.File, index: int, episode: Episode, observation_space: spaces.Space,
                         action_space: spaces.Space, tables: ProvenanceTables) -> None:
    group = file.create_group(f"episode_{index}", track_order=True)
    group.attrs["id"] = index
    group.attrs["total_steps"] = len(episode)
    if episode.seed is not None:
        group.attrs["seed"] = episode.seed
    group.attrs["source"] = SOURCE_NAMES[episode.source]
    group.create_dataset("observations", data=episode.observations.astype(observation_space.dtype, copy=False))
    group.create_dataset("actions", data=episode.actions.astype(action_space.dtype, copy=False))
    group.create_dataset("rewards", data=episode.rewards)
    group.create_dataset("terminations", data=episode.terminations)
    group.create_dataset("truncations", data=episode.truncations)
    infos = group.create_group("infos", track_order=True)
    for name in PROVENANCE_COLUMNS:
        infos.create_dataset(name, data=episode.column(name))
    infos["source"].attrs["codes"] = json.dumps(SOURCE_CODES)
    if tables.context_names:
        context = episode.context if episode.context is not None else np.full(
            (len(episode), len(tables.context_names)), np.nan, np.float32)
        infos.create_dataset(CONTEXT_COLUMN, data=context)
        infos[CONTEXT_COLUMN].attrs["names"] = json.dumps(list(tables.context_names))


def _summarize(episodes: list[Episode], tables: ProvenanceTables) -> dict[str, Any]:
    """Counts recorded in metadata.json, so ``dataset_info`` needs no pass over the data."""
    real = [e for e in episodes if e.source == SOURCE_REAL]
    synthetic = [e for e in episodes if e.source == SOURCE_SYNTHETIC]
    summary: dict[str, Any] = {
        "real_episodes": len(real), "synthetic_episodes": len(synthetic),
        "real_transitions": sum(map(len, real)), "synthetic_transitions": sum(map(len, synthetic)),
        "scenario_transitions": {}, "model_transitions": {}, "uncertainty": None, "max_branch_depth": 0,
    }
    if not synthetic:
        return summary
    scenarios = np.concatenate([e.scenario for e in synthetic])
    models = np.concatenate([e.model_index for e in synthetic])
    for code, count in zip(*np.unique(scenarios, return_counts=True)):
        summary["scenario_transitions"][tables.scenario_name(int(code))] = int(count)
    for code, count in zip(*np.unique(models, return_counts=True)):
        summary["model_transitions"][tables.model_hashes[int(code)]] = int(count)
    uncertainty = np.concatenate([e.uncertainty for e in synthetic]).astype(np.float64)
    estimated = uncertainty[np.isfinite(uncertainty)]
    if len(estimated):
        summary["uncertainty"] = {"min": float(estimated.min()), "mean": float(estimated.mean()),
                                  "max": float(estimated.max()), "n": int(len(estimated))}
    summary["max_branch_depth"] = int(max(e.branch_depth.max() for e in synthetic))
    return summary


def _refuse_foreign_directory(target: Path) -> None:
    """Writing swaps the whole directory, so only ever replace a dataset, never a folder of other files."""
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target} is a file; give write_dataset a directory for the dataset")
    if target.is_dir() and any(target.iterdir()) and not (target / DATA_DIR / METADATA_FILE).is_file():
        raise DatasetError(f"{target} exists and is not a dataset (no {DATA_DIR}/{METADATA_FILE}); writing would "
                           f"replace everything in it: choose a new or empty directory")


def _retired_copies(target: Path) -> list[Path]:
    pattern = re.compile(rf"^\.retired-{re.escape(target.name)}-\d+$")
    if not target.parent.is_dir():
        return []
    return sorted((p for p in target.parent.iterdir() if pattern.match(p.name)), key=lambda p: p.stat().st_mtime)


def _finish_interrupted_swap(target: Path) -> None:
    """A write killed between the two renames of its swap leaves the old dataset retired: put it back."""
    retired = _retired_copies(target)
    if retired and not target.exists():
        os.replace(retired.pop(), target)
    for leftover in retired:
        shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading


def read_dataset(directory: str | os.PathLike, *, expected_task_id: Optional[str] = None,
                 observation_space: Optional[spaces.Space] = None, action_space: Optional[spaces.Space] = None,
                 verify: bool = True) -> LoadedDataset:
    """Load a dataset after checking its format version, its sha256 (``verify``) and, when given, that its
    task and spaces are the ones the caller trains on; every refusal names the field and the fix."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    if verify:
        status = checksum_status(directory, metadata)
        if status["status"] != "ok":
            raise DatasetError(_checksum_message(status))
    if expected_task_id is not None and metadata["task_id"] != expected_task_id:
        raise DatasetError(f"{directory}: task_id is {metadata['task_id']!r} in the dataset but {expected_task_id!r} "
                           f"is expected; use a dataset collected in this task")
    stored_observation_space = json.loads(metadata["observation_space"])
    stored_action_space = json.loads(metadata["action_space"])
    for name, stored, expected in (("observation_space", stored_observation_space, observation_space),
                                   ("action_space", stored_action_space, action_space)):
        if expected is not None:
            _check_same_space(directory, name, stored, space_to_dict(expected, name))
    tables = ProvenanceTables.from_json(metadata["provenance"])
    batches, seeds = _read_episodes(directory / DATA_DIR / MAIN_DATA_FILE, metadata, tables)
    transitions = TransitionBatch.concatenate(batches)
    return LoadedDataset(directory=directory, metadata=metadata,
                         observation_space=space_from_dict(stored_observation_space),
                         action_space=space_from_dict(stored_action_space), provenance_tables=tables,
                         transitions=transitions,
                         episode_starts=np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64),
                         episode_seeds=seeds)


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """``metadata.json`` of a physai dataset, refused if missing, unreadable or of another format version."""
    directory = Path(directory)
    path = directory / DATA_DIR / METADATA_FILE
    if not path.is_file():
        retired = _retired_copies(directory)
        if retired and not directory.exists():
            raise DatasetError(f"{directory} is missing but a write was interrupted while replacing it; the previous "
                               f"dataset is intact at {retired[-1]}: rename it back to {directory.name}")
        raise DatasetError(f"{path} does not exist: point at a dataset directory written by physai "
                           f"(it holds {DATA_DIR}/{MAIN_DATA_FILE} and {DATA_DIR}/{METADATA_FILE})")
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); rewrite the dataset") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path} is not a physai transition dataset (format={metadata.get('format')!r}); "
                           f"a plain Minari dataset has no provenance: convert it with write_dataset")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path} has format_version={metadata.get('format_version')!r}; this physai reads version "
                           f"{FORMAT_VERSION}: rewrite the dataset with this physai version, or upgrade physai")
    return metadata


def checksum_status(directory: str | os.PathLike, metadata: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Whether main_data.hdf5 matches the sha256 in metadata.json: status is ok, mismatch or missing."""
    directory = Path(directory)
    metadata = metadata if metadata is not None else read_metadata(directory)
    path = directory / DATA_DIR / MAIN_DATA_FILE
    expected = (metadata.get("files") or {}).get(MAIN_DATA_FILE, {}).get("sha256")
    if not path.is_file():
        return {"file": str(path), "status": "missing", "expected": expected, "actual": None}
    actual = sha256_file(path)
    return {"file": str(path), "status": "ok" if actual == expected else "mismatch", "expected": expected,
            "actual": actual}


def _checksum_message(status: Mapping[str, Any]) -> str:
    if status["status"] == "missing":
        return (f"{status['file']} is missing (metadata.json expects sha256 {status['expected']}): copy the whole "
                f"dataset directory, or rewrite the dataset")
    return (f"{status['file']} does not match the checksum in {METADATA_FILE}: expected sha256 {status['expected']}, "
            f"found {status['actual']}. The file was changed or corrupted after it was written; rewrite the dataset "
            f"(rerun the stage that produced it) or restore an intact copy")


def _check_same_space(directory: Path, name: str, stored: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    order = ("type", "shape", "dtype", "n", "nvec", "start", "low", "high")
    for key in sorted(set(stored) | set(expected), key=lambda k: (order.index(k) if k in order else len(order), k)):
        dataset_value, expected_value = stored.get(key), expected.get(key)
        if not _same_value(dataset_value, expected_value):
            raise DatasetError(f"{directory}: {name}.{key} is {_short(dataset_value)} in the dataset but "
                               f"{_short(expected_value)} is expected; use a dataset collected with this "
                               f"environment's {name}")


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        left, right = np.asarray(a), np.asarray(b)
        return left.shape == right.shape and bool(np.array_equal(left, right))
    return a == b


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ...]"


def _read_episodes(path: Path, metadata: Mapping[str, Any],
                   tables: ProvenanceTables) -> tuple[list[TransitionBatch], list[Optional[int]]]:
    batches, seeds = [], []
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get("format_version") != FORMAT_VERSION:
                raise DatasetError(f"{path} has format_version={file.attrs.get('format_version')!r}, its metadata "
                                   f"says {FORMAT_VERSION}: the two files come from different writes; rewrite it")
            for index in range(int(metadata["total_episodes"])):
                name = f"episode_{index}"
                if name not in file:
                    raise DatasetError(f"{path} lacks {name} although metadata.json lists "
                                       f"{metadata['total_episodes']} episodes; rewrite the dataset")
                batches.append(_read_episode_group(path, file[name], index, tables))
                seeds.append(int(file[name].attrs["seed"]) if "seed" in file[name].attrs else None)
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read as HDF5 ({exc}); rewrite the dataset") from exc
    return batches, seeds


def _read_episode_group(path: Path, group: h5py.Group, index: int, tables: ProvenanceTables) -> TransitionBatch:
    required = ["observations", "actions", "rewards", "terminations", "truncations",
                *(f"infos/{name}" for name in PROVENANCE_COLUMNS)]
    if tables.context_names:
        required.append(f"infos/{CONTEXT_COLUMN}")
    missing = [name for name in required if name not in group]
    if missing:
        raise DatasetError(f"{path}: episode_{index} lacks {missing}; it was not written by this physai version")
    observations = group["observations"][()]
    steps = int(group.attrs["total_steps"])
    if len(observations) != steps + 1:
        raise DatasetError(f"{path}: episode_{index} has {len(observations)} observations for {steps} steps "
                           f"(expected {steps + 1}); rewrite the dataset")
    try:
        return TransitionBatch(
            obs=observations[:-1], act=group["actions"][()], next_obs=observations[1:],
            reward=group["rewards"][()], terminated=group["terminations"][()], truncated=group["truncations"][()],
            **{name: group[f"infos/{name}"][()] for name in PROVENANCE_COLUMNS},
            context=group[f"infos/{CONTEXT_COLUMN}"][()] if tables.context_names else None,
            episode_index=index, step_index=np.arange(steps))
    except DatasetError as exc:
        raise DatasetError(f"{path}: episode_{index}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Spaces, in the JSON form Minari uses for its metadata


def space_to_dict(space: spaces.Space, field_name: str = "space") -> dict[str, Any]:
    """Minari's JSON form of a gymnasium space; only the flat-array spaces physai stores are supported."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                "low": space.low.tolist(), "high": space.high.tolist()}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "dtype": str(space.dtype), "nvec": space.nvec.tolist(),
                "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.ndim(n) == 0 else [int(v) for v in np.ravel(n)]}
    raise DatasetError(f"{field_name} is a {type(space).__name__}; datasets store flat arrays, so it must be a "
                       f"gymnasium Box, Discrete, MultiDiscrete or MultiBinary (flatten Dict/Tuple spaces first)")


def space_from_dict(record: Mapping[str, Any]) -> spaces.Space:
    kind = record.get("type")
    if kind == "Box":
        dtype = np.dtype(record["dtype"])
        return spaces.Box(low=np.array(record["low"], dtype=dtype), high=np.array(record["high"], dtype=dtype),
                          shape=tuple(record["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(n=int(record["n"]), start=int(record["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(nvec=record["nvec"], dtype=record["dtype"], start=record["start"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(n=record["n"])
    raise DatasetError(f"space type {kind!r} is not one physai datasets store (Box, Discrete, MultiDiscrete, "
                       f"MultiBinary)")


# --------------------------------------------------------------------------------------------------
# Column helpers


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


# --------------------------------------------------------------------------------------------------
# Inspection


def dataset_info(directory: str | os.PathLike) -> dict[str, Any]:
    """What a dataset holds and whether its data file is intact, from metadata.json plus one checksum pass."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    summary = metadata.get("summary", {})
    provenance = metadata.get("provenance", {})
    return {
        "path": str(directory), "dataset_id": metadata["dataset_id"], "kind": metadata["kind"],
        "task_id": metadata["task_id"], "format_version": metadata["format_version"],
        "minari_version": metadata.get("minari_version"), "created_at": metadata.get("created_at"),
        "observation_space": json.loads(metadata["observation_space"]),
        "action_space": json.loads(metadata["action_space"]),
        "episodes": metadata["total_episodes"], "transitions": metadata["total_steps"],
        "real_episodes": summary.get("real_episodes", 0), "synthetic_episodes": summary.get("synthetic_episodes", 0),
        "real_transitions": summary.get("real_transitions", 0),
        "synthetic_transitions": summary.get("synthetic_transitions", 0),
        "scenario_transitions": summary.get("scenario_transitions", {}),
        "model_transitions": summary.get("model_transitions", {}),
        "uncertainty": summary.get("uncertainty"), "max_branch_depth": summary.get("max_branch_depth", 0),
        "context_names": provenance.get("context_names", []),
        "parent_dataset_id": provenance.get("parent_dataset_id"),
        "generator": metadata.get("generator", {}),
        "checksum": checksum_status(directory, metadata),
    }


def format_dataset_info(info: Mapping[str, Any]) -> str:
    """``dataset_info`` as a two-column table for a terminal."""
    rows: list[tuple[str, str]] = [
        ("dataset", f"{info['dataset_id']}  ({info['kind']})"),
        ("path", info["path"]),
        ("task", info["task_id"]),
        ("observations", _describe_space(info["observation_space"])),
        ("actions", _describe_space(info["action_space"])),
        ("episodes", f"{info['episodes']:,}  (real {info['real_episodes']:,}, "
                     f"synthetic {info['synthetic_episodes']:,})"),
        ("transitions", f"{info['transitions']:,}  (real {info['real_transitions']:,}, "
                        f"synthetic {info['synthetic_transitions']:,})"),
    ]
    if info["context_names"]:
        rows.append(("context", ", ".join(info["context_names"])))
    if info["synthetic_transitions"]:
        rows += _count_rows("scenarios", info["scenario_transitions"])
        rows += _count_rows("models", info["model_transitions"])
        if info["parent_dataset_id"]:
            rows.append(("branched from", info["parent_dataset_id"]))
        rows.append(("branch depth", f"max {info['max_branch_depth']}"))
        stats = info["uncertainty"]
        rows.append(("uncertainty", "not estimated" if not stats else
                     f"min {stats['min']:.4g}  mean {stats['mean']:.4g}  max {stats['max']:.4g}  (n {stats['n']:,})"))
    for key, value in sorted(info["generator"].items()):
        rows.append((f"generator.{key}", value if isinstance(value, str) else json.dumps(value)))
    rows.append(("created", str(info["created_at"])))
    rows.append(("format", f"physai.transitions v{info['format_version']}, Minari {info['minari_version']} layout"))
    checksum = info["checksum"]
    rows.append(("checksum", {"ok": f"ok (sha256 {str(checksum['actual'])[:16]}...)",
                              "missing": f"MISSING: {checksum['file']}",
                              "mismatch": f"MISMATCH: expected {str(checksum['expected'])[:16]}..., "
                                          f"found {str(checksum['actual'])[:16]}..."}[checksum["status"]]))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _count_rows(label: str, counts: Mapping[str, int]) -> list[tuple[str, str]]:
    if not counts:
        return [(label, "-")]
    total = sum(counts.values())
    return [(label if i == 0 else "", f"{name}: {count:,} transitions ({100 * count / total:.0f}%)")
            for i, (name, count) in enumerate(sorted(counts.items(), key=lambda item: -item[1]))]


def _describe_space(record: Mapping[str, Any]) -> str:
    kind = record["type"]
    if kind == "Box":
        return (f"Box({record['dtype']}, shape {tuple(record['shape'])}, low {_bounds(record['low'])}, "
                f"high {_bounds(record['high'])})")
    if kind == "Discrete":
        return f"Discrete(n {record['n']}, start {record['start']})"
    return json.dumps(record)


def _bounds(values: Any) -> str:
    flat = np.ravel(np.asarray(values, dtype=np.float64))
    if len(flat) and np.all(flat == flat[0]):
        return f"{flat[0]:g}"
    return f"{flat.min():g}..{flat.max():g}" if len(flat) else "-"
