"""Env-steps/s of physai's engine on the MuJoCo Warp backend, needing only numpy, MuJoCo, Warp and physai.envs.

``physai bench sim --backend warp`` measures the Warp contender beside the C engine (physai.bench.sim); a GPU
host without SB3 or Hydra installed runs this module on its own (``benchmarks/gpu_sim.sh``):

    python -m physai.bench.device_sim --task cartpole_balance --envs 1024,4096,8192,16384 --out benchmarks/results

Each batch size is built, stepped once to compile Warp's kernels (timed apart, as ``compile_s``), then timed
in rounds with the same random actions the other sim benchmarks use (automatic resets on). Two ways of
keeping the batch are measured: on the device where the physics runs (``BatchedEngine(array_device=...)``, the
actions a torch tensor there: what rsl-rl's PPO steps) and on the host (gymnasium's vector API, numpy).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from physai.bench.timing import timed_rounds
from physai.core.io import write_json_atomic
from physai.deploy.devices.host import machine_description
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import backend_class, build_spec
from physai.envs.vector import PhysaiVectorEnv

WARP_BACKEND = "warp"  # physai.envs.spec.BACKENDS
ACTION_BANK = 64  # pre-drawn action batches, cycled, so drawing random numbers is not timed


def random_actions(num_envs: int, num_actions: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(ACTION_BANK, num_envs, num_actions)).astype(np.float32)


def warp_engine_steps(spec, num_envs: int, seed: int) -> tuple[Callable[[int], Any], Callable[[], Any], str]:
    """``step(i)`` of a physai vector env on the Warp backend, its ``close``, and the Warp device it runs on."""
    venv = PhysaiVectorEnv(spec, num_envs, seed=seed, backend=WARP_BACKEND)
    venv.reset(seed=seed)
    actions = random_actions(num_envs, venv.engine.num_actions, seed)
    device = str(venv.engine.backend.device_name)
    return (lambda i: venv.step(actions[i % ACTION_BANK])), venv.close, device


def device_batch_steps(spec, num_envs: int, seed: int) -> tuple[Callable[[int], Any], Callable[[], Any], str]:
    """``step(i)`` of the engine with its batch on the Warp backend's device (torch tensors there, actions
    included), its ``close``, and the device."""
    import torch

    array_device = backend_class(WARP_BACKEND).torch_device_type()  # where the physics runs
    engine = BatchedEngine(spec, num_envs, seed=seed, backend=WARP_BACKEND, array_device=array_device)
    actions = torch.as_tensor(random_actions(num_envs, engine.num_actions, seed), dtype=torch.float64,
                              device=engine.xp.device)
    return (lambda i: engine.step(actions[i % ACTION_BANK])), engine.close, str(engine.backend.device_name)


BATCHES = {"device": device_batch_steps, "host": warp_engine_steps}


def bench_device_sim(task_name: str, envs: list[int], seconds: float, rounds: int, seed: int = 0,
                     batches: tuple[str, ...] = tuple(BATCHES)) -> dict:
    configs = packaged_task_configs()
    if task_name not in configs:
        raise SystemExit(f"--task {task_name!r} is not a physai task; choose one of {sorted(configs)}")
    spec = build_spec(**configs[task_name]["task"])
    points = []
    for num_envs in envs:
        for batch in batches:
            step, close, device = BATCHES[batch](spec, num_envs, seed)
            start = time.perf_counter()
            step(0)  # compiles Warp's kernels (or loads them from its cache) and captures the step's graph
            compile_s = time.perf_counter() - start
            try:
                samples = timed_rounds({"physai warp": lambda i: (step(i), num_envs)[1]}, seconds / rounds, rounds,
                                       warmup=5, min_calls=3)["physai warp"]
            finally:
                close()
            points.append({"num_envs": num_envs, "batch": batch, "device": device, "compile_s": compile_s,
                           "median": float(np.median(samples)), "min": float(np.min(samples)),
                           "max": float(np.max(samples)), "rounds": len(samples),
                           "physics_steps_per_s": float(np.median(samples)) * spec.frame_skip})
            print(f"{task_name} {num_envs} envs on {device}, batch on the {batch}: {points[-1]['median']:,.0f} "
                  f"env-steps/s ({points[-1]['physics_steps_per_s']:,.0f} physics steps/s; first step "
                  f"{compile_s:.1f} s)", file=sys.stderr)
    return {"task": task_name, "backend": WARP_BACKEND, "frame_skip": spec.frame_skip,
            "seconds_per_point": seconds, "rounds": rounds, "points": points,
            "versions": {name: metadata.version(name) for name in ("mujoco", "mujoco-warp", "warp-lang")},
            "note": "physics on the device; batch 'device': the engine's state, terms and bookkeeping there too, "
                    "events on the host for the rows they act on; batch 'host': all but the physics on the host"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole_balance")
    parser.add_argument("--envs", default="1024,4096,8192,16384", help="comma-separated numbers of parallel envs")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per batch size")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", default=",".join(BATCHES),
                        help=f"comma-separated ways to keep the batch, of {list(BATCHES)}")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    batches = tuple(b for b in args.batch.split(",") if b)
    unknown = [b for b in batches if b not in BATCHES]
    if unknown or not batches:
        raise SystemExit(f"--batch {args.batch!r}: choose from {list(BATCHES)}")
    result = bench_device_sim(args.task, [int(n) for n in args.envs.split(",")], args.seconds, args.rounds,
                              batches=batches)
    result = {"command": "python -m physai.bench.device_sim " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_description(), **result}
    write_json_atomic(Path(args.out) / f"sim_{args.task}_warp_device.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
