"""Writing and reading datasets: Minari's HDF5 layout plus physai's metadata, checksummed, swapped in whole."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import h5py
import numpy as np
from gymnasium import spaces

from physai.core.io import (atomic_path, fresh_staging_dir, recover_interrupted_swap, replace_dir_atomically,
                            retired_copies, write_json_atomic)
from physai.core.manifest import file_record, file_status, problem, read_json_object
from physai.synthetic.dataset.records import (_DATASET_ID, CONTEXT_COLUMN, DATA_DIR, FORMAT_NAME, FORMAT_VERSION, KINDS,
                                              MAIN_DATA_FILE, METADATA_FILE, MINARI_VERSION, PROVENANCE_COLUMNS,
                                              SOURCE_CODES, SOURCE_NAMES, SOURCE_REAL, SOURCE_SYNTHETIC, DatasetError,
                                              Episode, LoadedDataset, ProvenanceTables, TransitionBatch)
from physai.synthetic.dataset.spaces import space_from_dict, space_to_dict

log = logging.getLogger(__name__)


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
    recover_interrupted_swap(target)

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
                    "files": {MAIN_DATA_FILE: file_record(main_file)}}
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
            raise DatasetError(problem(status, f"{DATA_DIR}/{METADATA_FILE}",
                                       "rewrite the dataset (rerun the stage that produced it) or restore an "
                                       "intact copy of the whole dataset directory"))
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
        retired = retired_copies(directory)
        if retired and not directory.exists():
            raise DatasetError(f"{directory} is missing but a write was interrupted while replacing it; the previous "
                               f"dataset is intact at {retired[-1]}: rename it back to {directory.name}")
    metadata = read_json_object(path, error=DatasetError, fix="rewrite the dataset",
                                missing=f"{path} does not exist: point at a dataset directory written by physai "
                                        f"(it holds {DATA_DIR}/{MAIN_DATA_FILE} and {DATA_DIR}/{METADATA_FILE})")
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
    return file_status(directory / DATA_DIR / MAIN_DATA_FILE, (metadata.get("files") or {}).get(MAIN_DATA_FILE, {}))


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
