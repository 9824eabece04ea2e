"""Camera throughput: rendered env-steps/s of physai's batched camera against gymnasium's ``rgb_array``.

Contenders, each stepping N envs of a cart-pole with random actions and rendering one frame per env
per step at the same size (automatic resets on):

- ``physai``: the task with a camera observation (``pixels:``), the whole batch drawn as tiles of one
  framebuffer (``physai.envs.camera``), training-camera flags (no shadows, reflections, skybox).
- ``gymnasium rgb_array``: gymnasium's own cart-pole (``InvertedPendulum-v5``) made with
  ``render_mode="rgb_array"`` at the same size, stepped and rendered env by env as a script does.
- ``gymnasium rgb_array, fast flags``: the same, with the same flags switched off as physai's training
  camera, so both sides draw the same kind of frame.
- ``one env at a time, same scene``: physai's own single env of the task (a gymnasium env) rendering
  ``rgb_array`` through ``mujoco.Renderer`` with the same fast flags: the identical scene and frame,
  drawn and read back env by env. What the tiled batch gains over the obvious way.

The rasterizer (mesa's llvmpipe on a CPU machine) takes its thread count from ``LP_NUM_THREADS`` when
the process first renders, so each thread count is measured in its own child process; inside it, the
contenders run in interleaved rounds. Per-core figures divide by the threads given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import gymnasium as gym
import numpy as np

import physai.envs  # noqa: F401  chooses the GL backend before MuJoCo renders, registers the ids
from physai.bench.timing import timed_rounds
from physai.core.errors import ConfigError
from physai.envs.camera import SLOW_FLAGS
from physai.envs.registry import packaged_task_configs, packaged_tasks
from physai.envs.spec import build_spec
from physai.envs.vector import PhysaiVectorEnv

GYMNASIUM_PEER = "InvertedPendulum-v5"
TARGET_PER_CORE = 300.0  # rendered 64x64 env-steps/s per core, physics included (issue 16)
# gymnasium's peer holds one GL context per env: beyond this many, a script would not render that way.
PEER_MAX_ENVS = 64


def _child_point(task: dict[str, Any], num_envs: int, nthread: int, size: int, seconds: float, rounds: int,
                 seed: int) -> dict:
    """Runs inside the child process: every contender at one point, interleaved."""
    spec = build_spec(**task)
    venv = PhysaiVectorEnv(spec, num_envs, seed=seed, nthread=nthread)
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(64, num_envs, venv.engine.num_actions)).astype(np.float32)

    def physai_step(i: int) -> int:
        venv.step(actions[i % 64])
        return num_envs

    single_id = next(env_id for env_id, config in packaged_tasks().items() if config["name"] == task["name"])
    peers = {}
    contenders = (("gymnasium rgb_array", GYMNASIUM_PEER, False), ("gymnasium rgb_array, fast flags", GYMNASIUM_PEER, True),
                  ("one env at a time, same scene", single_id, True))
    for name, env_id, fast in () if num_envs > PEER_MAX_ENVS else contenders:
        envs = [gym.make(env_id, render_mode="rgb_array", width=size, height=size) for _ in range(num_envs)]
        for k, env in enumerate(envs):
            env.reset(seed=seed + k)
            env.render()
            if fast:
                unwrapped = env.unwrapped
                scene = (unwrapped._renderer.scene if hasattr(unwrapped, "_renderer")
                         else unwrapped.mujoco_renderer._get_viewer("rgb_array").scn)
                for flag in SLOW_FLAGS:
                    scene.flags[flag] = False
        space = envs[0].action_space
        peer_actions = rng.uniform(space.low, space.high, size=(64, num_envs, *space.shape)).astype(space.dtype)

        def peer_step(i: int, envs=envs, peer_actions=peer_actions) -> int:
            for k, env in enumerate(envs):
                _, _, terminated, truncated, _ = env.step(peer_actions[i % 64, k])
                env.render()
                if terminated or truncated:
                    env.reset()
            return num_envs

        peers[name] = (peer_step, envs)
    steps = {"physai": physai_step, **{name: step for name, (step, _) in peers.items()}}
    samples = timed_rounds(steps, seconds / rounds, rounds, warmup=3, min_calls=2)
    venv.close()
    for _, envs in peers.values():
        for env in envs:
            env.close()
    return {name: {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values)),
                   "rounds": len(values)} for name, values in samples.items()}


def _run_child(task: dict, num_envs: int, nthread: int, size: int, seconds: float, rounds: int) -> dict:
    env = {**os.environ, "LP_NUM_THREADS": str(nthread)}
    payload = json.dumps({"task": task, "num_envs": num_envs, "nthread": nthread, "size": size, "seconds": seconds,
                          "rounds": rounds})
    result = subprocess.run([sys.executable, "-m", "physai.bench.camera", payload], env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"camera benchmark child ({num_envs} envs, {nthread} thread(s)) failed:\n"
                           f"{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_camera(task_name: str, camera: str, size: int, envs: list[int], threads: list[int], seconds: float,
                 rounds: int) -> dict:
    """Every (envs, threads) point in its own child process; the table and the target check."""
    from rich.progress import Progress

    configs = packaged_task_configs()
    if task_name not in configs:
        raise ConfigError(f"--task {task_name!r} is not a physai task; choose one of {sorted(configs)}")
    task = dict(configs[task_name]["task"])
    task["pixels"] = {"camera": camera, "height": size, "width": size, "frame_stack": 1}
    points = []
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"bench camera {task_name}", total=len(envs) * len(threads))
        for n in envs:
            for t in sorted(set(threads)):
                contenders = _run_child(task, n, t, size, seconds, rounds)
                for figures in contenders.values():
                    figures["per_core"] = figures["median"] / t
                point = {"num_envs": n, "threads": t, "contenders": contenders}
                peer = contenders.get("gymnasium rgb_array, fast flags")
                if peer:
                    point["speedup_vs_gymnasium_fast_flags"] = contenders["physai"]["median"] / peer["median"]
                points.append(point)
                progress.advance(bar)
    worst = min(p["contenders"]["physai"]["per_core"] for p in points)
    return {"task": task_name, "camera": camera, "size": size, "peer": GYMNASIUM_PEER, "seconds_per_point": seconds,
            "rounds": rounds, "points": points,
            "targets": [{"target": f">= {TARGET_PER_CORE:.0f} rendered {size}x{size} env-steps/s per core, "
                                   f"physics included, at every point", "value": worst,
                         "threshold": TARGET_PER_CORE, "met": worst >= TARGET_PER_CORE}]}


def print_camera_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names = []
    for p in result["points"]:
        names += [name for name in p["contenders"] if name not in names]
    table = Table(title=f"{result['task']}: rendered {result['size']}x{result['size']} env-steps/s, median "
                        f"(per core)")
    for column in ("envs", "threads", *names):
        table.add_column(column, justify="right")
    for p in result["points"]:
        cells = ["-" if name not in p["contenders"] else
                 f"{p['contenders'][name]['median']:.0f} ({p['contenders'][name]['per_core']:.0f})" for name in names]
        table.add_row(str(p["num_envs"]), str(p["threads"]), *cells)
    Console(stderr=True).print(table)


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(_child_point(args["task"], args["num_envs"], args["nthread"], args["size"], args["seconds"],
                                  args["rounds"], seed=0)))
