"""Export a physai dataset as a LeRobot dataset (format v3.0), so robot-learning tools can train on it.

Written from LeRobot's published v3.0 layout with pyarrow and ffmpeg only: lerobot itself pins an older torch
and is never installed with physai (``benchmarks/lerobot_load.py`` loads the result with lerobot's own
``LeRobotDataset`` in a separate virtualenv)::

    <out>/meta/info.json                                   codebase_version "v3.0", fps, features, path templates
    <out>/meta/stats.json                                  min/max/mean/std/count/q01..q99 per feature
    <out>/meta/tasks.parquet                               task strings (pandas index) -> task_index
    <out>/meta/episodes/chunk-000/file-000.parquet         one row per episode: length, row range, file and
                                                           video offsets, per-episode stats
    <out>/data/chunk-000/file-000.parquet                  one row per frame, many episodes per file
    <out>/videos/observation.images.<cam>/chunk-000/file-000.mp4   one H.264 stream per camera, episodes back to back
    <out>/meta/physai.json                                 what LeRobot has no field for: the provenance tables
                                                           the integer columns index into, and sha256 of each file

A frame is one physai transition t of an episode: ``observation.state`` = obs[t], ``action`` = act[t],
``next.reward``/``next.done`` (LeRobot's names) plus ``next.terminated``/``next.truncated`` and
``next.observation.state`` = obs[t+1], so the last observation (needed to bootstrap a truncated episode) is
kept. Every provenance column becomes a ``provenance.<column>`` feature; they sit outside ``observation.*``
so no LeRobot policy takes them (or the physics context) as inputs. LeRobot episode i is physai episode i.
State and action are float32, the dtype LeRobot's policies expect.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from gymnasium import spaces

from physai.core.io import atomic_path, fresh_staging_dir, replace_dir_atomically, write_json_atomic
from physai.core.manifest import files_section
from physai.synthetic.dataset.records import (CONTEXT_COLUMN, FORMAT_NAME, FORMAT_VERSION, PROVENANCE_COLUMNS,
                                              DatasetError, LoadedDataset, ProvenanceTables)
from physai.synthetic.dataset.storage import read_dataset

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_SIZE_MB = 100  # LeRobot's defaults: start a new file once one reaches this size
VIDEO_FILE_SIZE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
PHYSAI_PATH = "meta/physai.json"
IMAGE_KEY_PREFIX = "observation.images."
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# libx264 decodes everywhere (torchcodec, PyAV, browsers) and takes any size; a keyframe every 2 frames, as
# LeRobot encodes, keeps random access cheap; no B-frames, so every frame's pts is exactly frame / fps.
VIDEO_CODEC = "libx264"
VIDEO_OPTIONS = ["-g", "2", "-bf", "0", "-crf", "18"]
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

# Camera frames for episode i: {camera: uint8 (T or T+1, H, W, 3)}, as a sequence or a function of i, so a
# future reader can hand them over one episode at a time.
Images = Union[Sequence[Mapping[str, np.ndarray]], Callable[[int], Mapping[str, np.ndarray]]]


@dataclass(frozen=True)
class _Column:
    """One non-video feature: its values for every frame of the dataset, (N,) or (N, d)."""

    values: np.ndarray
    names: Optional[list[str]] = None

    @property
    def shape(self) -> list[int]:
        return [1] if self.values.ndim == 1 else [int(self.values.shape[1])]


def export_lerobot(dataset: str | os.PathLike, out: str | os.PathLike, *, fps: float,
                   images: Optional[Images] = None, task: Optional[str] = None,
                   data_file_size_mb: float = DATA_FILE_SIZE_MB,
                   video_file_size_mb: float = VIDEO_FILE_SIZE_MB) -> Path:
    """Write the physai dataset at ``dataset`` (plus optional camera frames) as a LeRobot v3.0 dataset at
    ``out``, which must be new or empty.

    ``fps`` is the task's control rate (LeRobot needs an integer); ``task`` the task string (default: the task
    id). Arguments are checked before the dataset is read; the output is assembled beside ``out`` and renamed
    into place, so a failed export leaves nothing behind.
    """
    out = Path(out)
    refuse_export_target(out)
    fps = _integer_fps(fps)
    for name, value in (("data_file_size_mb", data_file_size_mb), ("video_file_size_mb", video_file_size_mb)):
        if not value > 0:
            raise DatasetError(f"{name}={value!r} must be > 0 (megabytes per file)")
    data = read_dataset(dataset)
    lengths = np.diff(data.episode_starts).astype(np.int64)
    frames_of = _frames_source(images, len(lengths))
    cameras = _camera_shapes(frames_of, lengths) if frames_of else {}
    task = task or data.task_id
    columns = _columns(data, lengths, fps)

    staging = fresh_staging_dir(out)
    try:
        pix_fmts, video_stats, video_rows = _write_videos(staging, frames_of, lengths, cameras, fps,
                                                          video_file_size_mb)
        data_rows = _write_data(staging, columns, lengths, data_file_size_mb)
        stats = {**{key: _numeric_stats(column.values) for key, column in columns.items()},
                 **{key: _image_stats(hists.sum(axis=0), int(lengths.sum())) for key, hists in video_stats.items()}}
        episode_stats = [{**{key: _numeric_stats(column.values[start:stop]) for key, column in columns.items()},
                          **{key: _image_stats(hists[i], int(lengths[i])) for key, hists in video_stats.items()}}
                         for i, (start, stop) in enumerate(_bounds(lengths))]
        _write_episodes(staging, lengths, task, data_rows, video_rows, episode_stats, data_file_size_mb)
        _write_tasks(staging, [task])
        # JSON has no NaN: a feature without one finite frame (uncertainty of real data) has no stats to give
        write_json_atomic(staging / STATS_PATH, {key: {name: value.tolist() for name, value in values.items()}
                                                 for key, values in stats.items() if values["count"][0] > 0})
        features = {**{key: _numeric_feature(column) for key, column in columns.items() if key not in _INDEX_KEYS},
                    **{key: _video_feature(cameras[key], fps, pix_fmts[key]) for key in cameras},
                    **{key: _numeric_feature(columns[key]) for key in _INDEX_KEYS}}
        write_json_atomic(staging / INFO_PATH, _info(features, fps, len(lengths), int(lengths.sum()), bool(cameras),
                                                     data.task_id, data_file_size_mb, video_file_size_mb))
        write_json_atomic(staging / PHYSAI_PATH, _physai_record(data, files_section(staging)))
        replace_dir_atomically(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s (LeRobot %s): %d episodes, %d frames at %d fps, cameras %s", data.dataset_id, out,
             CODEBASE_VERSION, len(lengths), int(lengths.sum()), fps, sorted(cameras) or "none")
    return out


def refuse_export_target(out: str | os.PathLike) -> None:
    """An export never merges into or replaces what is there: OUT must be new or an empty directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; give a new directory (or an empty one) for the LeRobot dataset")
    if out.is_dir() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; export into a new or empty directory, or delete {out} "
                           f"first (nothing there was changed)")


# ----- inputs ---------------------------------------------------------------------------------------

_INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # LeRobot's, last in info.json


def _integer_fps(fps: float) -> int:
    """LeRobot stores fps as an integer and timestamps as frame / fps, so the rate must be whole."""
    if fps is None or not isinstance(fps, (int, float, np.number)) or not math.isfinite(fps) or fps <= 0:
        raise DatasetError(f"fps={fps!r} must be a positive number of frames per second (the task's control rate); "
                           f"pass --fps N")
    if abs(fps - round(fps)) > 1e-6 * fps:
        raise DatasetError(f"fps={fps:g} is not a whole number, but LeRobot datasets store an integer fps and "
                           f"timestamps at frame / fps; pass --fps {round(fps)} to accept the rounding")
    return int(round(fps))


def _frames_source(images: Optional[Images], count: int) -> Optional[Callable[[int], Mapping[str, np.ndarray]]]:
    if images is None:
        return None
    if callable(images):
        return images
    if len(images) != count:
        raise DatasetError(f"images holds frames for {len(images)} episodes but the dataset has {count}; give one "
                           f"{{camera: frames}} mapping per episode")
    return images.__getitem__


def _checked_frames(frames_of: Callable[[int], Mapping[str, np.ndarray]], index: int, steps: int,
                    cameras: Optional[Mapping[str, tuple[int, ...]]] = None) -> dict[str, np.ndarray]:
    """Episode ``index``'s frames, one per transition (a T+1'th, for the final observation, is dropped)."""
    frames = dict(frames_of(index))
    names = sorted(frames)
    if cameras is not None and names != sorted(key[len(IMAGE_KEY_PREFIX):] for key in cameras):
        raise DatasetError(f"episode {index} has frames for cameras {names} but episode 0 has "
                           f"{sorted(key[len(IMAGE_KEY_PREFIX):] for key in cameras)}; every episode needs the "
                           f"same cameras")
    checked = {}
    for name, array in frames.items():
        if not isinstance(name, str) or not _CAMERA_NAME.match(name):
            raise DatasetError(f"camera name {name!r} must be letters, digits, '_' or '-' (it becomes the feature "
                               f"{IMAGE_KEY_PREFIX}<name> and a folder name)")
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) not in (steps, steps + 1):
            raise DatasetError(f"episode {index} camera {name!r}: frames are {array.dtype} {array.shape}; expected "
                               f"uint8 (T, H, W, 3) or (T+1, H, W, 3) RGB with T={steps} transitions")
        key = IMAGE_KEY_PREFIX + name
        if cameras is not None and array.shape[1:] != cameras[key]:
            raise DatasetError(f"episode {index} camera {name!r}: frames are {array.shape[1:]} but episode 0's are "
                               f"{cameras[key]}; a camera keeps one size for the whole dataset")
        checked[key] = array[:steps]
    return checked


def _camera_shapes(frames_of: Callable[[int], Mapping[str, np.ndarray]],
                   lengths: np.ndarray) -> dict[str, tuple[int, ...]]:
    first = _checked_frames(frames_of, 0, int(lengths[0]))
    if not first:
        raise DatasetError("images were given but episode 0 has no cameras; leave images out for a state-only export")
    return {key: tuple(array.shape[1:]) for key, array in sorted(first.items())}


def _flat_names(names: Any, size: int, prefix: str) -> list[str]:
    """The dataset's own column names when it has the right number of them, else ``prefix[i]``."""
    if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{prefix}[{i}]" for i in range(size)]


def _as_rows(values: np.ndarray, space: spaces.Space, field: str) -> np.ndarray:
    """(N, d) float32 for continuous spaces, int64 for discrete ones; (N,) when d is 1."""
    rows = values.reshape(len(values), -1)
    if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
        rows = rows.astype(np.float32)
    elif isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        rows = rows.astype(np.int64)
    else:
        raise DatasetError(f"{field} is a {type(space).__name__}; the LeRobot export writes Box, Discrete, "
                           f"MultiDiscrete and MultiBinary spaces")
    return rows[:, 0] if rows.shape[1] == 1 else rows


def _columns(data: LoadedDataset, lengths: np.ndarray, fps: int) -> dict[str, _Column]:
    """Every non-video feature for every frame, in the order they appear in info.json."""
    rows = data.transitions
    obs_size = int(np.prod(data.observation_space.shape or (1,)))
    act_size = int(np.prod(data.action_space.shape or (1,)))
    obs_names = _flat_names(data.metadata.get("generator", {}).get("observation_names"), obs_size, "obs")
    act_names = _flat_names(None, act_size, "act")
    frame_index = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    columns = {
        "observation.state": _Column(_as_rows(rows.obs, data.observation_space, "observation_space"), obs_names),
        "action": _Column(_as_rows(rows.act, data.action_space, "action_space"), act_names),
        "next.observation.state": _Column(_as_rows(rows.next_obs, data.observation_space, "observation_space"),
                                          obs_names),
        "next.reward": _Column(rows.reward.astype(np.float32)),
        "next.done": _Column(rows.terminated | rows.truncated),
        "next.terminated": _Column(rows.terminated.copy()),
        "next.truncated": _Column(rows.truncated.copy()),
        **{f"provenance.{name}": _Column(np.asarray(getattr(rows, name))) for name in PROVENANCE_COLUMNS},
    }
    context_names = list(data.provenance_tables.context_names)
    if context_names:
        context = rows.context.astype(np.float32)
        columns[f"provenance.{CONTEXT_COLUMN}"] = _Column(context[:, 0] if context.shape[1] == 1 else context,
                                                          context_names)
    columns.update({
        "timestamp": _Column((frame_index / fps).astype(np.float32)),
        "frame_index": _Column(frame_index),
        "episode_index": _Column(np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)),
        "index": _Column(np.arange(int(lengths.sum()), dtype=np.int64)),
        "task_index": _Column(np.zeros(int(lengths.sum()), np.int64)),
    })
    return columns


# ----- files ----------------------------------------------------------------------------------------

def _shard_indices(number: int) -> tuple[int, int]:
    """(chunk, file) of the number-th file of a sharded table: CHUNKS_SIZE files per chunk directory."""
    return number // CHUNKS_SIZE, number % CHUNKS_SIZE


def _shard(template: str, number: int, **fields: Any) -> str:
    chunk, file = _shard_indices(number)
    return template.format(chunk_index=chunk, file_index=file, **fields)


def _groups(sizes: Sequence[float], limit_mb: float) -> list[list[int]]:
    """Consecutive episodes packed into files of at most ``limit_mb`` (an episode never spans two files)."""
    groups: list[list[int]] = [[]]
    total = 0.0
    for index, size in enumerate(sizes):
        if groups[-1] and total + size > limit_mb * 2**20:
            groups.append([])
            total = 0.0
        groups[-1].append(index)
        total += size
    return groups


def _bounds(lengths: np.ndarray) -> list[tuple[int, int]]:
    ends = np.cumsum(lengths)
    return [(int(end - n), int(end)) for n, end in zip(lengths, ends)]


def _arrow(values: np.ndarray) -> pa.Array:
    """A scalar column, or a fixed-size list per row: the Arrow form of LeRobot's (1,) and (d,) features."""
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def _write_data(root: Path, columns: Mapping[str, _Column], lengths: np.ndarray,
                limit_mb: float) -> list[dict[str, int]]:
    """The frame tables, many episodes per file; returns each episode's file and row range."""
    row_bytes = sum(column.values.itemsize * int(np.prod(column.shape)) for column in columns.values())
    bounds = _bounds(lengths)
    placed: list[dict[str, int]] = []
    for number, group in enumerate(_groups([row_bytes * int(n) for n in lengths], limit_mb)):
        start, stop = bounds[group[0]][0], bounds[group[-1]][1]
        table = pa.table({key: _arrow(column.values[start:stop]) for key, column in columns.items()})
        _write_parquet(root / _shard(DATA_PATH, number), table)
        chunk, file = _shard_indices(number)
        placed += [{"data/chunk_index": chunk, "data/file_index": file, "dataset_from_index": bounds[i][0],
                    "dataset_to_index": bounds[i][1]} for i in group]
    return placed


class _VideoShards:
    """One camera's MP4 files. Each episode is encoded on its own (so its size is known exactly), then the
    episodes of a file are joined back to back by stream copy, as LeRobot does; a new file starts once the
    next episode would take the current one past the size limit."""

    def __init__(self, root: Path, scratch: Path, key: str, shape: tuple[int, ...], fps: int, limit_mb: float):
        self.root, self.scratch, self.key, self.shape, self.fps = root, scratch, key, shape, fps
        self.limit = limit_mb * 2**20
        self.number, self.frames, self.bytes, self.segments = 0, 0, 0, []
        height, width = shape[:2]
        # yuv420p (what players and LeRobot expect) halves the chroma resolution, so it needs even sizes.
        self.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"

    def append(self, index: int, frames: np.ndarray) -> dict[str, Any]:
        segment = self.scratch / f"{self.key}-{index}.mp4"
        height, width = self.shape[:2]
        _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(self.fps), "-i", "-",
                 "-c:v", VIDEO_CODEC, "-pix_fmt", self.pix_fmt, *VIDEO_OPTIONS, "-an", str(segment)],
                np.ascontiguousarray(frames).tobytes())
        size = segment.stat().st_size
        if self.segments and self.bytes + size >= self.limit:
            self.close()
            self.number += 1
        start = self.frames
        self.segments.append(segment)
        self.frames += len(frames)
        self.bytes += size
        chunk, file = _shard_indices(self.number)
        return {f"videos/{self.key}/chunk_index": chunk, f"videos/{self.key}/file_index": file,
                f"videos/{self.key}/from_timestamp": start / self.fps,
                f"videos/{self.key}/to_timestamp": self.frames / self.fps}

    def close(self) -> None:
        """Write the current file from its episodes' segments."""
        if not self.segments:
            return
        listing = self.scratch / f"{self.key}.txt"
        listing.write_text("".join(f"file '{segment.resolve()}'\n" for segment in self.segments))
        with atomic_path(self.root / _shard(VIDEO_PATH, self.number, video_key=self.key)) as tmp:
            _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(tmp)])
        for segment in self.segments:
            segment.unlink()
        self.frames, self.bytes, self.segments = 0, 0, []


def _ffmpeg(arguments: list[str], stdin: Optional[bytes] = None) -> None:
    """Run the ffmpeg that imageio-ffmpeg ships (no system ffmpeg needed); its own words if it fails."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *arguments]
    if stdin is not None:
        command.remove("-nostdin")
    result = subprocess.run(command, input=stdin, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {' '.join(command)}\n"
                           f"{result.stderr.decode(errors='replace')[-2000:]}")


def _write_videos(root: Path, frames_of: Optional[Callable[[int], Mapping[str, np.ndarray]]],
                  lengths: np.ndarray, cameras: Mapping[str, tuple[int, ...]], fps: int, limit_mb: float):
    """Encode every camera in one pass over the episodes; returns each camera's pixel format, per-episode
    channel histograms (for stats) and each episode's video offsets."""
    rows: list[dict[str, Any]] = [{} for _ in lengths]
    histograms = {key: np.zeros((len(lengths), 3, 256), np.int64) for key in cameras}
    if not cameras:
        return {}, {}, rows
    scratch = root / ".segments"
    scratch.mkdir()
    shards = {key: _VideoShards(root, scratch, key, shape, fps, limit_mb) for key, shape in cameras.items()}
    for index, steps in enumerate(lengths):
        for key, frames in _checked_frames(frames_of, index, int(steps), cameras).items():
            rows[index].update(shards[key].append(index, frames))
            for channel in range(3):
                histograms[key][index, channel] = np.bincount(frames[..., channel].reshape(-1), minlength=256)
    for shard in shards.values():
        shard.close()
    shutil.rmtree(scratch)
    return {key: shard.pix_fmt for key, shard in shards.items()}, histograms, rows


def _write_episodes(root: Path, lengths: np.ndarray, task: str, data_rows: Sequence[Mapping[str, int]],
                    video_rows: Sequence[Mapping[str, Any]], episode_stats: Sequence[Mapping[str, Any]],
                    limit_mb: float) -> None:
    """meta/episodes: where each episode's rows and frames are, and its own stats, sharded like the data."""
    records = []
    for index, length in enumerate(lengths):
        stats = {f"stats/{key}/{name}": value.tolist() for key, values in episode_stats[index].items()
                 for name, value in values.items()}
        records.append({"episode_index": index, "tasks": [task], "length": int(length), **data_rows[index],
                        **video_rows[index], **stats})
    sizes = [len(json.dumps(record, default=str)) for record in records]  # a size estimate, as in _write_data
    for number, group in enumerate(_groups(sizes, limit_mb)):
        chunk, file = _shard_indices(number)
        rows = [{**records[i], "meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file} for i in group]
        _write_parquet(root / _shard(EPISODES_PATH, number), pa.Table.from_pylist(rows))


def _write_tasks(root: Path, tasks: Sequence[str]) -> None:
    """Task strings as the pandas index of a task_index column: how LeRobot's ``pd.read_parquet`` expects them."""
    pandas_schema = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = pa.table({"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)),
                      "__index_level_0__": pa.array(list(tasks), pa.string())})
    _write_parquet(root / TASKS_PATH, table.replace_schema_metadata({"pandas": json.dumps(pandas_schema)}))


# ----- metadata -------------------------------------------------------------------------------------

def _numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats over the frames whose values are all finite (a NaN uncertainty means "not
    estimated", not a number); count says how many, and the rest is NaN when there are none."""
    rows = values.astype(np.float64).reshape(len(values), -1)
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    if not len(rows):
        nan = np.full(rows.shape[1], np.nan)
        return {**{name: nan for name in ("min", "max", "mean", "std", *QUANTILES)}, "count": np.array([0])}
    return {"min": rows.min(0), "max": rows.max(0), "mean": rows.mean(0), "std": rows.std(0),
            "count": np.array([len(rows)]),
            **{name: np.quantile(rows, q, axis=0) for name, q in QUANTILES.items()}}


def _image_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats of every pixel of ``frames`` frames from their (3, 256) value counts, exact, scaled
    to [0, 1] and shaped (3, 1, 1) as LeRobot stores them; count is the number of frames."""
    values = np.arange(256, dtype=np.float64)
    pixels = histogram.sum(axis=1)  # every episode has a frame, so never 0
    mean = histogram @ values / pixels
    std = np.sqrt(np.maximum(histogram @ values**2 / pixels - mean**2, 0.0))
    cumulative = np.cumsum(histogram, axis=1)
    present = histogram > 0
    stats = {"min": present.argmax(axis=1).astype(np.float64),
             "max": 255 - present[:, ::-1].argmax(axis=1).astype(np.float64), "mean": mean, "std": std,
             **{name: np.array([np.searchsorted(cumulative[c], q * pixels[c]) for c in range(3)], np.float64)
                for name, q in QUANTILES.items()}}
    scaled = {name: (value / 255.0).reshape(3, 1, 1) for name, value in stats.items()}
    return {**scaled, "count": np.array([frames])}


def _numeric_feature(column: _Column) -> dict[str, Any]:
    dtype = column.values.dtype
    return {"dtype": "bool" if dtype == np.bool_ else dtype.name, "shape": column.shape, "names": column.names}


def _video_feature(shape: tuple[int, ...], fps: int, pix_fmt: str) -> dict[str, Any]:
    height, width, channels = shape
    return {"dtype": "video", "shape": [height, width, channels], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": "h264",
                     "video.pix_fmt": pix_fmt, "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": channels, "has_audio": False}}


def _info(features: Mapping[str, Any], fps: int, episodes: int, frames: int, has_video: bool, robot: str,
          data_file_size_mb: float, video_file_size_mb: float) -> dict[str, Any]:
    """meta/info.json with exactly the keys LeRobot v3.0 defines (physai's own go to meta/physai.json)."""
    return {"codebase_version": CODEBASE_VERSION, "robot_type": robot, "total_episodes": episodes,
            "total_frames": frames, "total_tasks": 1, "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": data_file_size_mb, "video_files_size_in_mb": video_file_size_mb, "fps": fps,
            "splits": {"train": f"0:{episodes}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if has_video else None, "features": dict(features)}


def _physai_record(data: LoadedDataset, files: Mapping[str, Any]) -> dict[str, Any]:
    """What the integer provenance columns mean and where the data came from, plus each file's sha256."""
    tables: ProvenanceTables = data.provenance_tables
    metadata = data.metadata
    return {"exported_from": {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                              "dataset_id": data.dataset_id, "kind": data.kind, "task_id": data.task_id,
                              "path": str(data.directory), "created_at": metadata.get("created_at"),
                              "generator": metadata.get("generator", {}), "summary": metadata.get("summary", {})},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "episode_index": "LeRobot episode i is physai episode i; a frame is transition t of it",
            "provenance": tables.to_json(), "files": dict(files)}
