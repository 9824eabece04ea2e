"""Wall-clock to a solved task with rsl-rl's PPO on physai's engine, needing only numpy, torch, MuJoCo, Warp,
rsl-rl-lib and physai.envs: the training run of ``benchmarks/gpu_sim.sh`` on a GPU host without SB3 or Hydra.

    python -m physai.bench.device_train --task quadruped_velocity --envs 4096 --minutes 3 --out benchmarks/results

The training clock starts before the engine is built (the imports come before it), so it counts Warp's kernel
compilation where Warp's kernel cache is cold (``benchmarks/gpu_sim.sh`` gives the run an empty one through
``WARP_CACHE_PATH``). Every ``--eval-every`` iterations the policy's mean action plays ``--eval-episodes``
episodes of the task as shipped, one per env of a C MuJoCo batch with a fixed seed, the clock stopped; the run
stops at the first evaluation whose mean reaches the task's solved threshold, or when the budget is spent. The PPO settings are
rsl-rl's defaults as ``algo=rsl_ppo`` has them, the rollout split into four minibatches whatever the number of
envs; ``--set KEY=VALUE`` changes one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml

from physai.core.io import write_json_atomic
from physai.deploy.devices.host import machine_description
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import TaskError, build_spec
from physai.train.rsl_env import (EngineVecEnv, batch_device, build_ppo, import_rsl_rl, rollout_and_update,
                                  rsl_rl_process_state)

# rsl-rl's defaults, as algo=rsl_ppo's schema has them (tests/test_device_train.py keeps the two equal).
RSL_PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 24, "n_epochs": 5, "learning_rate": 1e-3, "schedule": "adaptive", "desired_kl": 0.01,
    "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.01, "vf_coef": 1.0, "max_grad_norm": 1.0,
    "net_arch": [128, 128], "activation": "elu", "normalize_obs": True, "log_std_init": 0.0,
}
MINIBATCHES = 4  # per rollout: algo=rsl_ppo's default (64 envs x 24 steps / 384), kept at any batch size
EVAL_SEED = 1_000_000  # the evaluation batch's seed: its episodes never share the training batch's draws
VERSIONED = ("mujoco", "mujoco-warp", "warp-lang", "rsl-rl-lib", "torch")


def ppo_settings(num_envs: int, changes: list[str]) -> dict[str, Any]:
    """The run's PPO keys: rsl-rl's defaults, ``num_envs``, four minibatches a rollout, then ``KEY=VALUE`` changes."""
    settings = {**RSL_PPO_DEFAULTS, "n_envs": num_envs}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or key not in RSL_PPO_DEFAULTS:
            raise SystemExit(f"--set {change!r}: write KEY=VALUE with KEY one of {sorted(RSL_PPO_DEFAULTS)}")
        settings[key] = yaml.safe_load(value)
    rollout = int(settings["n_steps"]) * num_envs
    if rollout % MINIBATCHES:
        raise SystemExit(f"a rollout of {rollout} steps (n_steps x envs) does not split into {MINIBATCHES} "
                         f"minibatches; choose --envs or n_steps so their product divides by {MINIBATCHES}")
    settings["batch_size"] = rollout // MINIBATCHES
    return settings


def evaluate(alg, spec, episodes: int, device: str) -> list[float]:
    """Returns of ``episodes`` episodes, one per env of a C MuJoCo batch seeded with ``EVAL_SEED``, under the
    policy's mean action."""
    from tensordict import TensorDict

    engine = BatchedEngine(spec, episodes, seed=EVAL_SEED, nthread=1)
    returns = np.full(episodes, np.nan)
    alg.eval_mode()
    try:
        engine.reset_envs(np.arange(episodes))
        obs = engine.observe()
        while np.isnan(returns).any():
            with torch.inference_mode():
                policy_input = TensorDict({"policy": torch.from_numpy(obs).to(device)}, batch_size=[episodes])
                actions = alg.actor(policy_input)
            out = engine.step(actions.to("cpu", torch.float64).numpy())
            info = out["info"]
            for env_id, episode_return in zip(info.get("done_ids", []), info.get("episode_return", [])):
                if np.isnan(returns[env_id]):
                    returns[env_id] = episode_return
            obs = out["obs"]
    finally:
        alg.train_mode()
        engine.close()
    return returns.tolist()


def train_to_threshold(task_name: str, num_envs: int, backend: str, minutes: float, eval_every: int,
                       eval_episodes: int, changes: list[str], seed: int = 0, device: Optional[str] = None,
                       threshold: Optional[float] = None, batch: str = "auto") -> dict[str, Any]:
    configs = packaged_task_configs()
    if task_name not in configs:
        raise SystemExit(f"--task {task_name!r} is not a physai task; choose one of {sorted(configs)}")
    spec = build_spec(**configs[task_name]["task"])
    threshold = float(spec.solved_threshold if threshold is None else threshold)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: torch {torch.__version__} finds no CUDA device here; use --device cpu")
    settings = ppo_settings(num_envs, changes)
    array_device = _array_device(batch, backend, device, spec)
    import_rsl_rl()  # a process's one-time imports, before the clock
    kernel_cache = _kernel_cache(backend)
    torch.manual_seed(seed)
    budget_s = 60.0 * minutes
    evaluations: list[dict[str, Any]] = []
    clock = 0.0  # training seconds so far; evaluations are not counted
    wall_start = time.perf_counter()
    with rsl_rl_process_state():
        start = time.perf_counter()
        engine = BatchedEngine(spec, num_envs, seed=seed, backend=backend, array_device=array_device)
        env = EngineVecEnv(engine, device=device)
        try:
            alg = build_ppo(env, settings, device)
            obs = env.get_observations()
            alg.train_mode()
            first_iteration_s, iteration, solved_at = None, 0, None
            while clock < budget_s and solved_at is None:
                obs, _ = rollout_and_update(alg, env, obs, int(settings["n_steps"]))
                env.finished.clear()  # the engine's episode records: this run reads evaluations only
                iteration += 1
                clock = time.perf_counter() - start
                if first_iteration_s is None:
                    first_iteration_s = clock  # the engine's build and the first rollout: Warp compiles here
                if iteration % eval_every:
                    continue
                returns = evaluate(alg, spec, eval_episodes, device)
                evaluations.append({"iteration": iteration, "timesteps": env.timesteps, "train_clock_s": clock,
                                    "eval_s": time.perf_counter() - start - clock,
                                    "mean": float(np.mean(returns)), "returns": returns})
                print(f"{task_name}: iteration {iteration}, {env.timesteps:,} steps, {clock:.1f} s of training: "
                      f"evaluation {np.mean(returns):.1f} (threshold {threshold:g})", file=sys.stderr)
                if np.mean(returns) >= threshold:
                    solved_at = evaluations[-1]
                start = time.perf_counter() - clock  # the evaluation's seconds leave the training clock
            physics_device = str(getattr(engine.backend, "device_name", "cpu (C MuJoCo)"))
        finally:
            env.close()
    trained_s = clock - first_iteration_s
    trained_steps = env.timesteps - num_envs * int(settings["n_steps"])
    return {
        "task": task_name, "backend": backend, "num_envs": num_envs, "physics_device": physics_device,
        "policy_device": device, "batch_device": array_device or "host", "seed": seed, "settings": settings,
        "threshold": threshold,
        "budget_s": budget_s, "eval_every_iterations": eval_every, "eval_episodes": eval_episodes,
        "solved": solved_at is not None,
        "time_to_threshold_s": solved_at["train_clock_s"] if solved_at else None,
        "timesteps_to_threshold": solved_at["timesteps"] if solved_at else None,
        "first_iteration_s": first_iteration_s, "iterations": iteration, "timesteps": env.timesteps,
        "train_clock_s": clock, "wall_s": time.perf_counter() - wall_start, "kernel_cache": kernel_cache,
        # Env steps per second of training after the first iteration (which holds the compilation).
        "env_steps_per_s": trained_steps / trained_s if trained_s > 0 else None,
        "evaluations": evaluations,
        "versions": {name: _version(name) for name in VERSIONED},
        "note": "the physics on physics_device; the engine's batch, terms, rewards and terminations on "
                "batch_device, its events on the host for the rows they act on; the networks on policy_device",
    }


BATCH_CHOICES = ("auto", "host", "device")


def _array_device(batch: str, backend: str, device: str, spec) -> Optional[str]:
    """Where the engine keeps its batch: ``device``, on the networks' device (the engine refuses one its physics
    does not run on); ``host``, in numpy arrays; ``auto``, as ``algo=rsl_ppo`` decides (rsl_env.batch_device)."""
    if batch not in BATCH_CHOICES:
        raise SystemExit(f"--batch {batch!r} is not one of {list(BATCH_CHOICES)}")
    if batch == "auto":
        return batch_device(backend, device, spec)
    return device if batch == "device" else None


def _kernel_cache(backend: str) -> Optional[str]:
    """Whether Warp's compilation can count: its kernel cache empty at the start, or the one found there."""
    if not backend.startswith("warp"):
        return None
    path = os.environ.get("WARP_CACHE_PATH")
    if path and (not os.path.isdir(path) or not os.listdir(path)):
        return "empty at the start: compilation counted"
    return "as found (WARP_CACHE_PATH unset or not empty): compilation counted only where the cache was cold"


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value
    return parse


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="quadruped_velocity")
    parser.add_argument("--envs", type=_positive(int), default=4096)
    parser.add_argument("--backend", default="warp", help="a name of physai.envs.spec.BACKENDS")
    parser.add_argument("--minutes", type=_positive(float), default=3.0, help="training wall-clock budget")
    parser.add_argument("--eval-every", type=_positive(int), default=10, help="iterations between evaluations")
    parser.add_argument("--eval-episodes", type=_positive(int), default=10)
    parser.add_argument("--threshold", type=float, default=None, help="default: the task's solved threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="the networks' torch device (default: cuda where present)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a PPO setting")
    parser.add_argument("--batch", choices=BATCH_CHOICES, default="auto",
                        help="where the engine keeps its batch: beside the networks on the physics' device (auto does so where "
                             "it can) or on the host")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = train_to_threshold(args.task, args.envs, args.backend, args.minutes, args.eval_every,
                                    args.eval_episodes, args.set, args.seed, args.device, args.threshold,
                                    args.batch)
    except TaskError as exc:  # a backend that cannot run here, named with what to do instead
        raise SystemExit(str(exc)) from exc
    result = {"command": "python -m physai.bench.device_train " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_description(), **result}
    write_json_atomic(Path(args.out) / f"train_{args.task}_{args.backend}_device.json", result)
    verdict = (f"solved in {result['time_to_threshold_s']:.1f} s" if result["solved"]
               else f"not solved within {args.minutes:g} min")
    print(f"{args.task} on {args.envs} envs ({args.backend}): {verdict}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
