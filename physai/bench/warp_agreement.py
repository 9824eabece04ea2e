"""How closely the MuJoCo Warp backend follows the C engine, task by task (issue 17's agreement table).

    python -m physai.bench.warp_agreement --out benchmarks/results

Each task is built twice from the same seed, once per backend, so both draw the same randomized physics, start
poses and events; both then take the same random actions (automatic resets on) and the largest difference in
observations and rewards is recorded after 1, 10, 50 and ``--steps`` control steps, with the first step at
which a termination or truncation differs. Warp computes in float32, C MuJoCo in float64: see the README
("Agreement with C MuJoCo") for what the figures mean.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from physai.core.io import write_json_atomic
from physai.deploy.devices.host import machine_description
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import TaskError, build_spec

CHECKPOINTS = (1, 10, 50)  # control steps at which the running maximum is reported, besides the last


def task_agreement(task_name: str, steps: int, num_envs: int, seed: int = 0) -> dict[str, Any]:
    """The C engine against the Warp engine on one task; a task Warp refuses is reported with the reason."""
    config = packaged_task_configs()[task_name]["task"]
    try:
        engines = [BatchedEngine(build_spec(**copy.deepcopy(config)), num_envs, seed=seed, nthread=1, backend=name)
                   for name in ("rollout", "warp")]
    except TaskError as exc:
        return {"task": task_name, "refused": str(exc)}
    c_engine, warp_engine = engines
    actions = np.random.default_rng(seed + 1).uniform(-1, 1, size=(steps, num_envs, c_engine.num_actions))
    obs_deviation, reward_deviation, first_done_mismatch, resets = [], [], None, 0
    try:
        for step, action in enumerate(actions, start=1):
            c_out, warp_out = c_engine.step(action), warp_engine.step(action)
            obs_deviation.append(float(np.abs(c_out["obs"] - warp_out["obs"]).max()))
            reward_deviation.append(float(np.abs(c_out["reward"] - warp_out["reward"]).max()))
            same_ends = (np.array_equal(c_out["terminated"], warp_out["terminated"])
                         and np.array_equal(c_out["truncated"], warp_out["truncated"]))
            if not same_ends and first_done_mismatch is None:
                first_done_mismatch = step
            resets += len(c_out["info"].get("done_ids", ()))
    finally:
        c_engine.close()
        warp_engine.close()
    marks = [mark for mark in CHECKPOINTS if mark < steps] + [steps]
    return {"task": task_name, "steps": steps, "num_envs": num_envs,
            "max_obs_deviation": {str(mark): max(obs_deviation[:mark]) for mark in marks},
            "max_reward_deviation": {str(mark): max(reward_deviation[:mark]) for mark in marks},
            "first_done_mismatch": first_done_mismatch, "c_engine_resets": resets}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs = packaged_task_configs()
    parser.add_argument("--tasks", default=",".join(sorted(configs)), help="comma-separated physai tasks")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = sorted(set(tasks) - set(configs))
    if unknown:
        raise SystemExit(f"--tasks: {unknown} are not physai tasks; choose from {sorted(configs)}")
    if args.steps < 1 or args.envs < 1:
        raise SystemExit("--steps and --envs must be at least 1")
    rows = []
    for task in tasks:
        rows.append(task_agreement(task, args.steps, args.envs))
        row = rows[-1]
        summary = row.get("refused") or ", ".join(f"obs {value:.1e} by step {mark}"
                                                  for mark, value in row["max_obs_deviation"].items())
        print(f"{task}: {summary}", file=sys.stderr)
    result = {"command": "python -m physai.bench.warp_agreement " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_description(), "tasks": rows}
    write_json_atomic(Path(args.out) / "warp_agreement.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
