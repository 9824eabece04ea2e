"""Load a physai LeRobot export with lerobot's own ``LeRobotDataset``, in a virtualenv of its own.

lerobot pins an older torch than physai's, so it is never installed beside physai: this script makes a
separate virtualenv (under --work, or reuses --venv), installs the lerobot release named by --lerobot there,
exports a small mixed cart-pole dataset with two cameras (real and synthetic episodes, several Parquet and MP4
files), and has lerobot read it back: every frame's table values, camera frames through lerobot's video
decoders (torchcodec and PyAV), delta_timestamps windows and a DataLoader batch, all compared with what was
exported. Run with physai's interpreter:

    .venv/bin/python benchmarks/lerobot_load.py [--work DIR] [--venv DIR] [--out benchmarks/results]

It prints one JSON line (what was installed, how long it took, what lerobot read) and writes it to
<out>/lerobot_load.json. The slow test ``tests/test_lerobot_export.py::test_lerobot_loads_the_export`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from physai.core.io import write_json_atomic
from physai.envs.gym_task import GymTask
from physai.envs.registry import packaged_task_configs
from physai.synthetic.collect import random_action_episodes
from physai.synthetic.dataset import Episode, ProvenanceTables, read_dataset, write_dataset
from physai.synthetic.dataset.lerobot import export_lerobot

ENV_ID = "physai/CartpoleBalance-v0"
FPS = 50
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_FREE_GB = 15  # lerobot's CUDA torch and its libraries take about 7 GB when no CPU wheel is reachable
INSTALL_TIMEOUT_S = 900

# Runs inside the lerobot virtualenv: reads the export with LeRobotDataset and compares it with expected.npz.
CHECK = r'''
import json, sys, time
import numpy as np
import torch
import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root, expected_path = sys.argv[1], sys.argv[2]
expected = np.load(expected_path)
report = {"lerobot": lerobot.__version__, "torch": torch.__version__, "backends": {}}
for backend in ("torchcodec", "pyav"):
    try:
        start = time.perf_counter()
        ds = LeRobotDataset("physai/cartpole-export", root=root, video_backend=backend)
        table = {key: np.stack([ds[i][key].numpy() for i in range(len(ds))])
                 for key in ("observation.state", "action", "episode_index", "frame_index", "provenance.source",
                             "provenance.uncertainty", "next.reward")}
        shades = np.array([[ds[i][key].mean().item() * 255 for key in ("observation.images.front",)]
                           for i in range(len(ds))])[:, 0]
        item = ds[len(ds) // 2]
        windowed = LeRobotDataset("physai/cartpole-export", root=root, video_backend=backend,
                                  delta_timestamps={"observation.images.front": [-1 / ds.fps, 0.0],
                                                    "action": [0.0, 1 / ds.fps]})
        window = windowed[int(expected["frame_start"][1])]  # an episode's first frame: the earlier one is padding
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
        report["backends"][backend] = {
            "loaded": True, "seconds": round(time.perf_counter() - start, 2),
            "frames": len(ds), "episodes": ds.num_episodes, "fps": ds.fps,
            "features": sorted(ds.features), "stats_keys": sorted(ds.meta.stats),
            "task": item["task"],
            "front_shape": list(item["observation.images.front"].shape),
            "wrist_shape": list(item["observation.images.wrist"].shape),
            "frames_match": bool(all(np.allclose(table[key].reshape(len(ds), -1),
                                                 expected[key].reshape(len(ds), -1), equal_nan=True)
                                     for key in table)),
            "video_frames_match": bool(np.abs(shades - expected["front_shade"]).max() < 3),
            "video_max_shade_error": float(np.abs(shades - expected["front_shade"]).max()),
            "window_shapes": {key: list(window[key].shape) for key in ("observation.images.front", "action")},
            "window_pad": window["observation.images.front_is_pad"].tolist(),
            "batch_shapes": {key: list(value.shape) for key, value in batch.items() if hasattr(value, "shape")},
        }
    except Exception as exc:  # report each decoder on its own: torchcodec needs the system's FFmpeg libraries
        lines = f"{type(exc).__name__}: {exc}".splitlines()
        causes = [line.strip() for line in lines if "cannot open shared object file" in line]
        report["backends"][backend] = {"loaded": False, "error": " ... ".join(lines[:1] + causes[:1])}
print(json.dumps(report))
'''


def shade(episode: int, step: int) -> int:
    """One flat colour per frame of the front camera, easy to recognise after lossy video coding."""
    return (40 * episode + 3 * step) % 256


def make_export(work: Path) -> tuple[Path, Path]:
    """A mixed cart-pole dataset (3 real episodes, 2 model branches) with two cameras, exported in several files."""
    task = GymTask(id=ENV_ID, task=packaged_task_configs()["cartpole_balance"]["task"])
    real, observation_space, action_space = random_action_episodes(task, 100, seed=7)
    observation_names, context_names = task.signal_names()
    rng = np.random.default_rng(1)
    branches = [Episode.synthetic(rng.normal(size=(steps + 1, observation_space.shape[0])).astype(np.float32),
                                  rng.uniform(-1, 1, (steps, 1)).astype(np.float32), rng.normal(size=steps),
                                  np.arange(steps) == steps - 1, np.zeros(steps, bool), seed=11, parent_state_id=3,
                                  uncertainty=rng.uniform(0.01, 0.3, steps), context=np.ones(len(context_names)))
                for steps in (6, 4)]
    source = work / "physai_dataset"
    write_dataset(source, [*real, *branches], dataset_id="physai-CartpoleBalance/mixed-v0", kind="mixed",
                  task_id=ENV_ID, observation_space=observation_space, action_space=action_space,
                  provenance_tables=ProvenanceTables(model_hashes=("sha256:feedbeef",), scenario_names=(),
                                                     context_names=tuple(context_names)),
                  generator_info={"observation_names": observation_names})
    data = read_dataset(source)
    lengths = [len(e) for e in data.episodes()]
    images = [{"front": np.stack([np.full((48, 64, 3), shade(e, t), np.uint8) for t in range(n)]),
               "wrist": np.random.default_rng(e).integers(0, 256, (n, 24, 32, 3), dtype=np.uint8)}
              for e, n in enumerate(lengths)]
    out = work / "lerobot_export"
    export_lerobot(source, out, fps=FPS, images=images, data_file_size_mb=0.004, video_file_size_mb=0.01)
    rows = data.transitions
    episode_index = np.repeat(np.arange(len(lengths)), lengths)
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    expected = work / "expected.npz"
    np.savez(expected, **{"observation.state": rows.obs.astype(np.float32), "action": rows.act.astype(np.float32),
                          "episode_index": episode_index, "frame_index": frame_index,
                          "provenance.source": rows.source, "provenance.uncertainty": rows.uncertainty,
                          "next.reward": rows.reward.astype(np.float32),
                          "front_shade": np.array([shade(e, t) for e, t in zip(episode_index, frame_index)], float),
                          "frame_start": np.concatenate([[0], np.cumsum(lengths)[:-1]])})
    return out, expected


def cpu_torch_index_reachable() -> bool:
    try:
        with urllib.request.urlopen(CPU_TORCH_INDEX + "/torch/", timeout=10):
            return True
    except OSError:
        return False


def install_lerobot(venv: Path, requirement: str) -> dict:
    """A fresh virtualenv holding ``requirement``; a CPU torch wheel when its index is reachable. A venv this
    script made before is reused, and its install record (time, size) reported again."""
    record = venv / "physai-install.json"
    if record.is_file() and subprocess.run([str(venv / "bin/python"), "-c", "import lerobot"],
                                           capture_output=True).returncode == 0:
        return {**json.loads(record.read_text()), "reused": True}
    free_gb = shutil.disk_usage(venv.parent).free / 2**30
    if free_gb < MIN_FREE_GB:
        raise SystemExit(f"only {free_gb:.1f} GB free under {venv.parent}; lerobot and its torch need about "
                         f"{MIN_FREE_GB} GB: pass --work on a larger disk")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cpu_index = cpu_torch_index_reachable()
    command = [str(venv / "bin/python"), "-m", "pip", "install", "-q", requirement]
    if cpu_index:
        command += ["--extra-index-url", CPU_TORCH_INDEX]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"gave up: `{' '.join(command)}` did not finish in {INSTALL_TIMEOUT_S} s")
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed after {seconds:.0f} s:\n{result.stderr[-3000:]}")
    installed = {"requirement": requirement, "seconds": round(seconds, 1), "cpu_torch_index": cpu_index,
                 "venv_gb": round(sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()) / 2**30, 2)}
    write_json_atomic(record, installed)
    return {**installed, "reused": False}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="where the virtualenv and the export go (default: a new temp dir)")
    parser.add_argument("--venv", help="an existing lerobot virtualenv to reuse (default: <work>/lerobot-venv)")
    parser.add_argument("--lerobot", default="lerobot==0.4.4", help="the lerobot release to install")
    parser.add_argument("--out", default="benchmarks/results", help="where lerobot_load.json goes")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="physai-lerobot-"))
    work.mkdir(parents=True, exist_ok=True)
    venv = Path(args.venv) if args.venv else work / "lerobot-venv"
    export, expected = make_export(work)
    install = install_lerobot(venv, args.lerobot)
    check = subprocess.run([str(venv / "bin/python"), "-c", CHECK, str(export), str(expected)], capture_output=True,
                           text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check.returncode != 0:
        raise SystemExit(f"the lerobot check did not run:\n{check.stderr[-3000:]}")
    loaded = json.loads(check.stdout.strip().splitlines()[-1])
    working = [b for b in loaded["backends"].values() if b.get("loaded")]
    report = {"requirement": args.lerobot, "install": install, **loaded,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "loaded": bool(working),
              "frames_match": bool(working) and all(b["frames_match"] for b in working),
              "video_frames_match": bool(working) and all(b["video_frames_match"] for b in working)}
    write_json_atomic(Path(args.out) / "lerobot_load.json", report)
    print(json.dumps(report))
    return 0 if report["loaded"] and report["frames_match"] and report["video_frames_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
