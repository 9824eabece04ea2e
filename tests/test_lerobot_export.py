"""`physai data export --format lerobot`: every file checked against LeRobot's published v3.0 layout.

The spec is written out here on its own (not imported from the writer), from LeRobot's v3.0 format:
meta/info.json's keys and path templates, one Parquet row per frame with scalar columns for shape (1,) features
and fixed-size lists for (d,), meta/episodes rows pointing into the data and video files, meta/tasks.parquet
indexed by task string, stats per feature (images per channel, shape (3, 1, 1), in [0, 1]), one MP4 stream per
camera with the episodes back to back. Loading with lerobot itself: the slow test at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import physai.synthetic.dataset.lerobot as lerobot
from conftest import REPO, compose_config, require_rendering
from physai.envs.gym_task import GymTask
from physai.envs.registry import packaged_task_configs
from physai.run.cli import main
from physai.synthetic.collect import random_action_episodes
from physai.synthetic.dataset import (PROVENANCE_COLUMNS, DatasetError, Episode, ProvenanceTables, read_dataset,
                                      write_dataset)

ENV_ID = "physai/CartpoleBalance-v0"
CONTROL_RATE = 50  # cartpole_balance: 0.01 s physics, frame_skip 2

SPEC_INFO_KEYS = {"codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                  "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path",
                  "features"}
SPEC_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
SPEC_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
SPEC_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
SPEC_INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                       "task_index": "int64"}
SPEC_VIDEO_INFO = {"video.height", "video.width", "video.codec", "video.pix_fmt", "video.is_depth_map", "video.fps",
                   "video.channels", "has_audio"}
ARROW_TYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
               "uint8": pa.uint8(), "bool": pa.bool_()}
SHARD = re.compile(r"chunk-(\d{3})/file-(\d{3})\.(parquet|mp4)$")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A real cartpole dataset (random actions, 3 episodes) and a mixed one that adds two model branches."""
    task = GymTask(id=ENV_ID, task=packaged_task_configs()["cartpole_balance"]["task"])
    real, observation_space, action_space = random_action_episodes(task, 100, seed=7)
    observation_names, context_names = task.signal_names()
    root = tmp_path_factory.mktemp("lerobot")
    common = dict(task_id=ENV_ID, observation_space=observation_space, action_space=action_space,
                  generator_info={"observation_names": observation_names})
    write_dataset(root / "real", real, dataset_id="physai-CartpoleBalance/real-v0", kind="real",
                  provenance_tables=ProvenanceTables(context_names=tuple(context_names)), **common)
    rng = np.random.default_rng(1)
    branches = []
    for steps, parent, uncertainty in ((6, 3, rng.uniform(0.01, 0.3, 6)), (4, -1, None)):
        terminations = np.zeros(steps, bool)
        terminations[-1] = True
        branches.append(Episode.synthetic(
            rng.normal(size=(steps + 1, observation_space.shape[0])).astype(np.float32),
            rng.uniform(-1, 1, (steps, 1)).astype(np.float32), rng.normal(size=steps), terminations,
            np.zeros(steps, bool), seed=11, parent_state_id=parent, model_index=0, scenario=0,
            uncertainty=uncertainty, context=rng.uniform(0.8, 1.2, len(context_names))))
    write_dataset(root / "mixed", [*real, *branches], dataset_id="physai-CartpoleBalance/mixed-v0", kind="mixed",
                  provenance_tables=ProvenanceTables(model_hashes=("sha256:feedbeef",), scenario_names=("heavy_pole",),
                                                     context_names=tuple(context_names)), **common)
    return root


def check_v30(root: Path) -> dict:
    """Every file of a LeRobot v3.0 dataset against the spec; returns what was read for further checks."""
    info = json.loads((root / "meta/info.json").read_text())
    assert set(info) == SPEC_INFO_KEYS
    assert info["codebase_version"] == "v3.0"
    fps, episodes_total, frames_total = info["fps"], info["total_episodes"], info["total_frames"]
    assert isinstance(fps, int) and fps > 0 and episodes_total > 0 and frames_total >= episodes_total
    assert info["data_path"] == SPEC_DATA_PATH and info["splits"] == {"train": f"0:{episodes_total}"}
    features = info["features"]
    videos = [key for key, feature in features.items() if feature["dtype"] == "video"]
    assert info["video_path"] == (SPEC_VIDEO_PATH if videos else None)
    for key, dtype in SPEC_INDEX_FEATURES.items():
        assert features[key]["dtype"] == dtype and features[key]["shape"] == [1], key
    for key, feature in features.items():
        assert "/" not in key, key
        if feature["dtype"] == "video":
            height, width, channels = feature["shape"]
            assert key.startswith("observation.images.") and channels == 3
            assert feature["names"] == ["height", "width", "channels"]
            assert set(feature["info"]) == SPEC_VIDEO_INFO
            assert (feature["info"]["video.height"], feature["info"]["video.width"]) == (height, width)
            assert feature["info"]["video.fps"] == fps and feature["info"]["video.channels"] == 3
        else:
            assert feature["dtype"] in ARROW_TYPES and len(feature["shape"]) == 1 and feature["shape"][0] >= 1, key
            assert feature["names"] is None or len(feature["names"]) == feature["shape"][0], key

    # data/: one row per frame, columns in info.json's order, scalars for (1,) and fixed-size lists for (d,)
    columns = [key for key in features if features[key]["dtype"] != "video"]
    data_files = sorted((root / "data").rglob("*.parquet"))
    assert data_files and all(_is_shard(root, path, SPEC_DATA_PATH) for path in data_files)
    tables = {path: pq.read_table(path) for path in data_files}
    for table in tables.values():
        assert table.schema.names == columns
        for key in columns:
            expected = ARROW_TYPES[features[key]["dtype"]]
            size = features[key]["shape"][0]
            assert table.schema.field(key).type == (expected if size == 1 else pa.list_(expected, size)), key
    frames = pa.concat_tables(tables.values())
    assert frames.num_rows == frames_total
    index, episode, frame = (frames[key].to_numpy() for key in ("index", "episode_index", "frame_index"))
    np.testing.assert_array_equal(index, np.arange(frames_total))
    assert np.all(np.diff(episode) >= 0) and set(episode.tolist()) == set(range(episodes_total))
    for e in range(episodes_total):
        np.testing.assert_array_equal(frame[episode == e], np.arange(int((episode == e).sum())))
    timestamps = frames["timestamp"].to_numpy()
    assert timestamps.dtype == np.float32
    np.testing.assert_allclose(timestamps, (frame / fps).astype(np.float32), rtol=0, atol=1e-6)

    # meta/tasks.parquet: the task strings are the pandas index of task_index
    tasks_table = pq.read_table(root / "meta/tasks.parquet")
    pandas_meta = json.loads(tasks_table.schema.metadata[b"pandas"])
    (index_column,) = pandas_meta["index_columns"]
    tasks = tasks_table[index_column].to_pylist()
    np.testing.assert_array_equal(tasks_table["task_index"].to_numpy(), np.arange(len(tasks)))
    assert info["total_tasks"] == len(tasks) and set(frames["task_index"].to_numpy().tolist()) <= set(range(len(tasks)))

    # meta/episodes: each row points at its rows in data/ and its frames in each camera's video
    episode_files = sorted((root / "meta/episodes").rglob("*.parquet"))
    assert episode_files and all(_is_shard(root, path, SPEC_EPISODES_PATH) for path in episode_files)
    episodes = []
    for path in episode_files:
        for row in pq.read_table(path).to_pylist():
            assert root / SPEC_EPISODES_PATH.format(chunk_index=row["meta/episodes/chunk_index"],
                                                    file_index=row["meta/episodes/file_index"]) == path
            episodes.append(row)
    assert [row["episode_index"] for row in episodes] == list(range(episodes_total))
    video_end = {}
    for row in episodes:
        e, length = row["episode_index"], row["length"]
        assert row["dataset_to_index"] - row["dataset_from_index"] == length == int((episode == e).sum())
        assert row["dataset_from_index"] == (0 if e == 0 else episodes[e - 1]["dataset_to_index"])
        assert set(row["tasks"]) <= set(tasks)
        table = tables[root / SPEC_DATA_PATH.format(chunk_index=row["data/chunk_index"],
                                                    file_index=row["data/file_index"])]
        rows = table["index"].to_numpy()[table["episode_index"].to_numpy() == e]
        np.testing.assert_array_equal(rows, np.arange(row["dataset_from_index"], row["dataset_to_index"]))
        for key in videos:
            where = (row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"])
            start, stop = row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
            assert start == pytest.approx(video_end.get((key, where), 0.0))
            assert (stop - start) * fps == pytest.approx(length)
            video_end[(key, where)] = stop
        for key in columns:
            assert row[f"stats/{key}/count"][0] in (0, length), key

    # meta/stats.json: per feature, the feature's shape (images: per channel, (3, 1, 1), in [0, 1])
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) <= set(features) and set(videos) | set(SPEC_INDEX_FEATURES) <= set(stats)
    for key, values in stats.items():
        assert {"min", "max", "mean", "std", "count"} <= set(values), key
        shape = (3, 1, 1) if key in videos else (features[key]["shape"][0],)
        for name, value in values.items():
            assert np.shape(value) == ((1,) if name == "count" else shape), (key, name)
        low, mean, high = (np.asarray(values[name]) for name in ("min", "mean", "max"))
        assert np.all(low <= mean + 1e-9) and np.all(mean <= high + 1e-9) and np.all(np.asarray(values["std"]) >= 0)
        if key in videos:
            assert values["count"] == [frames_total] and 0 <= low.min() and high.max() <= 1
        else:
            assert 0 < values["count"][0] <= frames_total

    # videos/: each MP4 decodes to exactly the frames its episodes claim, at the camera's size and the fps
    for key in videos:
        height, width, _ = features[key]["shape"]
        for path in sorted((root / "videos" / key).rglob("*.mp4")):
            assert _is_shard(root, path, SPEC_VIDEO_PATH.replace("{video_key}", key))
            claimed = sum(row["length"] for row in episodes
                          if root / SPEC_VIDEO_PATH.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                           file_index=row[f"videos/{key}/file_index"]) == path)
            decoded = decode(path)
            assert decoded.shape == (claimed, height, width, 3), (path, decoded.shape, claimed)
            # lerobot seeks to from_timestamp + frame / fps and refuses frames further off than its tolerance_s
            np.testing.assert_allclose(frame_times(path), np.arange(claimed) / fps, rtol=0, atol=1e-4)
    return {"info": info, "frames": frames, "episodes": episodes, "stats": stats}


def _is_shard(root: Path, path: Path, template: str) -> bool:
    match = SHARD.search(str(path))
    return bool(match) and root / template.format(chunk_index=int(match[1]), file_index=int(match[2])) == path


def decode(path: Path) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = reader.__next__()
    width, height = meta["size"]
    return np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader])


def frame_times(path: Path) -> np.ndarray:
    """The presentation time of every frame, in seconds, as ffmpeg decodes them."""
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-vf",
                             "showinfo", "-f", "null", "-"], capture_output=True, text=True, check=True)
    return np.array([float(t) for t in re.findall(r"pts_time:\s*([-0-9.e]+)", result.stderr)])


def shade(episode: int, step: int) -> int:
    """One flat colour per frame, easy to find again after lossy H.264."""
    return (40 * episode + 3 * step) % 256


def column(frames: pa.Table, key: str) -> np.ndarray:
    values = frames[key].combine_chunks()
    if pa.types.is_fixed_size_list(values.type):
        return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), values.type.list_size)
    return values.to_numpy(zero_copy_only=False)


def test_cli_exports_a_collected_dataset_to_the_v30_spec(collected, tmp_path, capsys):
    out = tmp_path / "lerobot"
    assert main(["data", "export", str(collected / "real"), "--format", "lerobot", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    read = check_v30(out)
    data = read_dataset(collected / "real")
    rows, frames, info = data.transitions, read["frames"], read["info"]
    assert info["fps"] == CONTROL_RATE and info["total_episodes"] == data.num_episodes and info["video_path"] is None
    assert info["features"]["observation.state"]["names"] == data.metadata["generator"]["observation_names"]
    assert info["features"]["provenance.context"]["names"] == list(data.provenance_tables.context_names)
    np.testing.assert_array_equal(column(frames, "observation.state"), rows.obs.astype(np.float32))
    np.testing.assert_array_equal(column(frames, "next.observation.state"), rows.next_obs.astype(np.float32))
    np.testing.assert_array_equal(column(frames, "action"), rows.act[:, 0])
    np.testing.assert_array_equal(column(frames, "next.reward"), rows.reward.astype(np.float32))
    np.testing.assert_array_equal(column(frames, "next.done"), rows.terminated | rows.truncated)
    np.testing.assert_array_equal(column(frames, "next.truncated"), rows.truncated)
    for name in PROVENANCE_COLUMNS:
        np.testing.assert_array_equal(column(frames, f"provenance.{name}"), getattr(rows, name), err_msg=name)
    np.testing.assert_array_equal(column(frames, "provenance.context"), rows.context)
    state = np.asarray(rows.obs, np.float32).astype(np.float64)
    np.testing.assert_allclose(read["stats"]["observation.state"]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(read["stats"]["observation.state"]["std"], state.std(0), rtol=1e-6)
    assert "provenance.uncertainty" not in read["stats"]  # never estimated for real transitions: no numbers to give
    record = json.loads((out / "meta/physai.json").read_text())
    assert record["exported_from"]["dataset_id"] == data.dataset_id
    written = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()}
    assert set(record["files"]) == written - {"meta/physai.json"}


def test_fps_is_the_control_rate_of_the_run_that_wrote_the_dataset(collected, tmp_path):
    """A run may change the control rate (here frame_skip 2 -> 4: 25 Hz); its saved config says so."""
    run_dir = tmp_path / "run"
    shutil.copytree(collected / "real", run_dir / "datasets/real")
    OmegaConf.save(compose_config(["env=cartpole_balance", "env.task.frame_skip=4"]), run_dir / "config.yaml")
    out = tmp_path / "lerobot"
    assert main(["data", "export", str(run_dir / "datasets/real"), "--format", "lerobot", str(out)]) == 0
    assert json.loads((out / "meta/info.json").read_text())["fps"] == 25


def test_frames_of_real_episodes_are_rendered_by_replaying_them(collected, tmp_path):
    """--frames replays each real episode from its reset seed, checks it against the record, and renders it."""
    require_rendering()
    out = tmp_path / "lerobot"
    assert main(["data", "export", str(collected / "real"), "--format", "lerobot", str(out), "--frames"]) == 0
    read = check_v30(out)
    data = read_dataset(collected / "real")
    (camera,) = [key for key in read["info"]["features"] if key.startswith("observation.images.")]
    video = read["info"]["features"][camera]
    assert video["dtype"] == "video" and video["shape"][2] == 3 and read["info"]["total_frames"] == len(data.transitions)
    decoded = decode(next((out / "videos" / camera).rglob("*.mp4")))
    assert len(decoded) == len(data.transitions) and decoded.std() > 5  # frames of a scene, not a blank
    # The cart moves in the picture as it moves in the record: frames differ within an episode.
    assert np.abs(decoded[0].astype(int) - decoded[read["episodes"][0]["length"] - 1].astype(int)).mean() > 0.5
    # A world-model rollout has no simulator state to draw: refused before anything is written.
    assert main(["data", "export", str(collected / "mixed"), "--format", "lerobot", str(tmp_path / "x"),
                 "--frames"]) == 2
    assert not (tmp_path / "x").exists()
    # A record the replay does not reproduce (collected with other env settings) is refused, naming the episode.
    run_dir = tmp_path / "run"
    shutil.copytree(collected / "real", run_dir / "datasets/real")
    OmegaConf.save(compose_config(["env=cartpole_balance", "env.task.frame_skip=3"]), run_dir / "config.yaml")
    assert main(["data", "export", str(run_dir / "datasets/real"), "--format", "lerobot", str(tmp_path / "y"),
                 "--frames"]) == 2
    assert not (tmp_path / "y").exists()


def test_cameras_and_model_branches_across_several_files(collected, tmp_path):
    data = read_dataset(collected / "mixed")
    lengths = [len(e) for e in data.episodes()]
    images = [{"front": np.stack([np.full((48, 64, 3), shade(e, t), np.uint8) for t in range(n + 1)]),
               "wrist": np.random.default_rng(e).integers(0, 256, (n, 17, 21, 3), dtype=np.uint8)}
              for e, n in enumerate(lengths)]
    out = tmp_path / "lerobot"
    lerobot.export_lerobot(collected / "mixed", out, fps=CONTROL_RATE, images=images, data_file_size_mb=0.002,
                           video_file_size_mb=0.001)
    read = check_v30(out)
    assert len(list((out / "data").rglob("*.parquet"))) > 1
    assert len(list((out / "videos/observation.images.front").rglob("*.mp4"))) > 1
    assert read["info"]["features"]["observation.images.wrist"]["info"]["video.pix_fmt"] == "yuv444p"  # odd size

    front = out / "videos/observation.images.front"
    for row in read["episodes"]:
        e = row["episode_index"]
        path = front / f"chunk-{row['videos/observation.images.front/chunk_index']:03d}" / \
            f"file-{row['videos/observation.images.front/file_index']:03d}.mp4"
        first = round(row["videos/observation.images.front/from_timestamp"] * CONTROL_RATE)
        decoded = decode(path)[first:first + row["length"]].reshape(row["length"], -1).mean(axis=1)
        np.testing.assert_allclose(decoded, [shade(e, t) for t in range(row["length"])], atol=2.5)
    frames, rows = read["frames"], data.transitions
    for name in PROVENANCE_COLUMNS:
        np.testing.assert_array_equal(column(frames, f"provenance.{name}"), getattr(rows, name), err_msg=name)
    synthetic = column(frames, "provenance.source") == 1
    estimated = rows.uncertainty[np.isfinite(rows.uncertainty)].astype(np.float64)
    assert synthetic.sum() == 10 and len(estimated) == 6
    assert read["stats"]["provenance.uncertainty"]["count"] == [6]
    assert read["stats"]["provenance.uncertainty"]["mean"] == pytest.approx([estimated.mean()])
    every_front_pixel = np.concatenate([im["front"][:-1].reshape(-1, 3) for im in images]) / 255.0
    np.testing.assert_allclose(np.ravel(read["stats"]["observation.images.front"]["mean"]),
                               every_front_pixel.mean(0), rtol=1e-9)
    record = json.loads((out / "meta/physai.json").read_text())
    assert record["provenance"]["model_hashes"] == ["sha256:feedbeef"]
    assert record["provenance"]["scenario_names"] == ["heavy_pole"]


def test_bad_input_is_refused_with_the_fix_and_nothing_is_lost(collected, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["data", "export", str(tmp_path / "nowhere"), "--format", "lerobot", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in error and "point at a dataset directory" in error and not out.exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "export", str(collected / "real"), "--format", "rlds", str(out)])
    assert exit_info.value.code == 2 and "invalid choice: 'rlds'" in capsys.readouterr().err and not out.exists()

    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "export", str(collected / "real"), "--format", "lerobot", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert main(["data", "export", str(collected / "real"), "--format", "lerobot", str(out / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    frames = [{"front": np.zeros((len(e), 8, 8, 3), np.float32)} for e in read_dataset(collected / "real").episodes()]
    with pytest.raises(DatasetError, match=r"camera 'front': frames are float32 .* expected uint8"):
        lerobot.export_lerobot(collected / "real", empty, fps=CONTROL_RATE, images=frames)
    with pytest.raises(DatasetError, match=r"pass --fps 33"):
        lerobot.export_lerobot(collected / "real", empty, fps=100 / 3)

    def broken(self, index, frames):
        raise OSError("disk full")

    monkeypatch.setattr(lerobot._VideoShards, "append", broken)
    frames = [{"front": np.zeros((len(e), 8, 8, 3), np.uint8)} for e in read_dataset(collected / "real").episodes()]
    with pytest.raises(OSError, match="disk full"):
        lerobot.export_lerobot(collected / "real", empty, fps=CONTROL_RATE, images=frames)
    assert empty.is_dir() and not any(empty.iterdir()) and not list(tmp_path.glob(".staging-*"))


@pytest.mark.slow
def test_lerobot_loads_the_export(tmp_path):
    """lerobot's own LeRobotDataset reads an export with cameras, in a virtualenv of its own: a fresh one
    (minutes, about 8 GB with lerobot's CUDA torch), or the one PHYSAI_LEROBOT_VENV names."""
    venv = ["--venv", os.environ["PHYSAI_LEROBOT_VENV"]] if os.environ.get("PHYSAI_LEROBOT_VENV") else []
    result = subprocess.run([sys.executable, str(REPO / "benchmarks/lerobot_load.py"), "--work", str(tmp_path),
                             "--out", str(tmp_path), *venv], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] and report["frames_match"] and report["video_frames_match"]
