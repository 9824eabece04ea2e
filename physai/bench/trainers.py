"""PPO trainers on the same engine with the same settings: rsl-rl-lib's (``algo=rsl_ppo``) against SB3's
(``algo=ppo``).

Both arms train through the train stage's own functions (``train_rsl_ppo``, ``train_policy``) on physai's
batched engine, with the same value for every setting both define (:data:`SHARED_KEYS`: envs, rollout length,
minibatch, epochs, learning rate, discount, GAE lambda, clip range, entropy and value coefficients, gradient
clipping, network, initial std, observation normalization, torch threads), so each does the same number of
env steps and minibatch updates of the same networks. rsl-rl's adaptive learning rate is off here (it changes
the learning rate, not the work). What still differs is each library's own PPO, which can change the return
reached but hardly the time: rsl-rl normalizes observations with statistics updated after each update and
never clips them (SB3: VecNormalize, updated every step, clipped at ``clip_obs``), clips the value loss, normalizes
advantages over the rollout (SB3: per minibatch), keeps one minibatch split for all epochs, clips gradients per
network, bootstraps time-outs with the value of the step's own observation (SB3: of the final observation),
uses Adam's eps 1e-8 (SB3: 1e-5) and its own weight initialization (SB3: orthogonal). Only the SB3 arm runs
physai's per-step finite check of the batch (a small cost against it). The arms alternate ``repeats`` times,
repeat ``i`` training both on seed ``i``; each run's training wall-clock gives env-steps/s, and its final
policy plays fixed-seed deterministic episodes for the return it reached.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.progress import Progress

from physai.config.compose import build_task, compose_config, override_value
from physai.config.validate import validate_config
from physai.core.errors import ConfigError
from physai.core.stats import mean_ci95
from physai.envs.registry import packaged_task_configs
from physai.run.tracking import NullTracker
from physai.train.checkpoints import CHECKPOINT_DIR, FINAL_NAME
from physai.train.evaluation import episode_returns
from physai.train.rsl_ppo import check_rsl_ppo, train_rsl_ppo
from physai.train.sb3 import load_trained_policy, train_policy

SHARED_KEYS = ("n_envs", "n_steps", "batch_size", "n_epochs", "learning_rate", "gamma", "gae_lambda", "clip_range",
               "ent_coef", "vf_coef", "max_grad_norm", "net_arch", "activation", "log_std_init", "normalize_obs",
               "normalize_reward", "total_timesteps", "checkpoint_every_steps", "torch_threads")
ARMS = ("rsl-rl PPO", "SB3 PPO")
RESULT_FILE = "trainers.json"
EVAL_SEED_BASE = 4_000_000


def arm_configs(task_name: str, timesteps: int) -> dict[str, Any]:
    """Each arm's config: rsl-rl's PPO defaults (fixed learning rate), and SB3's PPO given the same values."""
    rsl = compose_config([f"env={task_name}", "algo=rsl_ppo", f"algo.total_timesteps={timesteps}",
                          "algo.schedule=fixed", f"algo.checkpoint_every_steps={timesteps}"])
    shared = {key: OmegaConf.to_container(rsl.algo, resolve=True)[key] for key in SHARED_KEYS}
    sb3 = compose_config([f"env={task_name}", "algo=ppo",
                          *(f"algo.{key}={override_value(value)}" for key, value in shared.items())])
    for cfg in (rsl, sb3):
        validate_config(cfg)
    check_rsl_ppo(rsl, build_task(rsl.env))
    return {"rsl-rl PPO": rsl, "SB3 PPO": sb3}


def _train(arm: str, cfg, seed: int, run_dir: Path) -> float:
    """Train one arm into ``run_dir``; the training wall-clock in seconds."""
    task = build_task(cfg.env)
    started = time.perf_counter()
    if arm == "rsl-rl PPO":
        train_rsl_ppo(task, cfg.algo, seed, run_dir, NullTracker(), resume=False)
    else:
        train_policy(task, cfg.algo, seed, run_dir, NullTracker(), resume=False)
    return time.perf_counter() - started


def bench_trainers(tasks: Sequence[str], timesteps: int, repeats: int, episodes: int = 10) -> dict[str, Any]:
    """For each task, both arms ``repeats`` times in alternation; env-steps/s and final return per run."""
    known = packaged_task_configs()
    unknown = [task for task in tasks if task not in known]
    if unknown:
        raise ConfigError(f"--tasks names {unknown}: rsl-rl's PPO trains on physai tasks; choose from {sorted(known)}")
    results: dict[str, Any] = {}
    configs = {task: arm_configs(task, timesteps) for task in tasks}  # every config checked before any training
    importlib.import_module("rsl_rl.algorithms")  # before any clock starts: loading a library is not training
    torch_threads = torch.get_num_threads()
    with Progress(transient=True) as progress, tempfile.TemporaryDirectory(prefix="physai-bench-trainers-") as scratch:
        bar = progress.add_task("bench trainers", total=len(tasks) * repeats * len(ARMS))
        for task_name, arms in configs.items():
            runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
            for seed in range(repeats):
                for arm in ARMS:
                    cfg = arms[arm]
                    run_dir = Path(scratch) / f"{task_name}-{arm.split()[0]}-{seed}"
                    run_dir.mkdir()
                    seconds = _train(arm, cfg, seed, run_dir)
                    task = build_task(cfg.env)
                    policy = load_trained_policy(cfg.algo, run_dir / CHECKPOINT_DIR / FINAL_NAME, task, run_dir)
                    returns = episode_returns(task, policy.predict, [EVAL_SEED_BASE + i for i in range(episodes)])
                    runs[arm].append({"seed": seed, "seconds": seconds, "timesteps": policy.timesteps,
                                      "steps_per_s": policy.timesteps / seconds,
                                      "mean_return": float(np.mean(returns))})
                    progress.advance(bar)
            torch.set_num_threads(torch_threads)
            rates = {arm: [r["steps_per_s"] for r in runs[arm]] for arm in ARMS}
            results[task_name] = {
                "settings": {key: OmegaConf.to_container(arms["rsl-rl PPO"].algo, resolve=True)[key]
                             for key in SHARED_KEYS},
                "arms": {arm: {"steps_per_s": {"median": float(np.median(rates[arm])), "min": float(np.min(rates[arm])),
                                               "max": float(np.max(rates[arm]))},
                               "final_return": mean_ci95([r["mean_return"] for r in runs[arm]]), "runs": runs[arm]}
                         for arm in ARMS},
                "speedup": float(np.median(rates["rsl-rl PPO"]) / np.median(rates["SB3 PPO"])),
            }
    return {"timesteps": timesteps, "repeats": repeats, "eval_episodes": episodes,
            "eval": f"deterministic actions; episodes reset with seeds {EVAL_SEED_BASE}+i, the same for both arms",
            "tasks": results}


def markdown_table(record: dict[str, Any]) -> str:
    lines = ["| task | rsl-rl PPO: env-steps/s (median [min, max]) | SB3 PPO: env-steps/s | rsl-rl / SB3 | "
             "rsl-rl PPO: final return (95% CI) | SB3 PPO: final return |", "|---|---|---|---|---|---|"]
    for task, result in record["tasks"].items():
        cells = []
        for arm in ARMS:
            rate = result["arms"][arm]["steps_per_s"]
            cells.append(f"{rate['median']:,.0f} [{rate['min']:,.0f}, {rate['max']:,.0f}]")
        returns = []
        for arm in ARMS:
            ret = result["arms"][arm]["final_return"]
            returns.append(f"{ret['mean']:.1f} [{ret['ci95_low']:.1f}, {ret['ci95_high']:.1f}]")
        lines.append(f"| `{task}` | {cells[0]} | {cells[1]} | {result['speedup']:.2f}x | {returns[0]} | {returns[1]} |")
    return "\n".join(lines)
