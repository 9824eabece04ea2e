"""Wall-clock to a fixed deterministic return: physai's preset on its batched engine against the stock
RL Baselines3 Zoo recipe on gymnasium's own env.

What a researcher weighs is minutes to a policy that works, not steps per second. Both arms train
HalfCheetah-v5 (physai's twin is parity-tested against gymnasium's), each with its own settings and as
many envs as it likes:

* ``zoo``: what ``rl_zoo3 train --algo ppo --env HalfCheetah-v5`` runs: SB3's PPO with the zoo's tuned
  HalfCheetah hyperparameters (``configs/preset/ppo_half_cheetah.yaml``), one gymnasium env in a
  ``DummyVecEnv`` with SB3's ``Monitor``, under ``VecNormalize``; nothing of physai's in its loop.
* ``physai``: ``python train.py env=physai_half_cheetah preset=ppo_half_cheetah_batched``: the same
  PPO on physai's batched engine, built exactly as the train stage builds it.

**One rule for both.** Every ``eval_every`` env steps each arm's deterministic policy plays the same
``eval_episodes`` fixed-seed episodes of gymnasium's own ``HalfCheetah-v5``; the clock counts training
only (evaluation time is taken out of both arms alike). An arm's score is the training wall-clock at
its first evaluation whose mean return reaches ``target`` (the zoo's published HalfCheetah score,
fixed before any run). Arms run one after another in one process with the same torch threads, so they
never share the cores.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from stable_baselines3.common.callbacks import BaseCallback

from physai.bench.synthetic import first_reach
from physai.config.compose import build_task, compose_config
from physai.core.errors import ConfigError
from physai.core.io import write_json_atomic
from physai.deploy.devices.host import cpu_model
from physai.report.format import save_png
from physai.train.evaluation import episode_returns
from physai.train.sb3 import build_model, build_vec_env

RESULT_FILE = "time_to_return.json"
PLOT_FILE = "time_to_return.png"
# RL Baselines3 Zoo's published PPO HalfCheetah score (5,819 +- 664): the target, fixed before any run.
ZOO_TARGET = 5819.0
EVAL_SEED_BASE = 2_000_000  # evaluation episodes reset with these seeds, for every arm and checkpoint


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: tuple[str, ...]
    stock: bool  # True: the zoo's own loop (gymnasium env, Monitor, VecNormalize), no physai wrapper


ARMS: dict[str, Arm] = {
    "zoo": Arm("RL Zoo PPO, gymnasium HalfCheetah-v5, 1 env", ("env=half_cheetah", "algo=ppo"), stock=True),
    "physai": Arm("physai PPO preset, batched physai/HalfCheetah-v5",
                  ("env=physai_half_cheetah", "algo=ppo", "preset=ppo_half_cheetah_batched"), stock=False),
}


class _TimedEvaluation(BaseCallback):
    """Evaluates on the grid, keeps a training-only clock, and stops at the target when asked."""

    def __init__(self, evaluate: Callable[[], list[float]], every: int, target: float, stop_at_target: bool,
                 on_eval: Callable[[int, float, float], None]) -> None:
        super().__init__()
        self.evaluate, self.every, self.target, self.stop_at_target = evaluate, every, target, stop_at_target
        self.on_eval = on_eval
        self.curve: list[dict[str, Any]] = []
        self.eval_seconds = 0.0

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()
        self.next_eval = self.every

    def training_seconds(self) -> float:
        return time.perf_counter() - self.started - self.eval_seconds

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.every
        seconds = self.training_seconds()
        begun = time.perf_counter()
        returns = self.evaluate()
        self.eval_seconds += time.perf_counter() - begun
        mean = float(np.mean(returns))
        self.curve.append({"steps": int(self.num_timesteps), "seconds": seconds, "return": mean,
                           "episode_returns": [float(r) for r in returns]})
        self.on_eval(int(self.num_timesteps), seconds, mean)
        return not (self.stop_at_target and mean >= self.target)


def train_arm(name: str, seed: int, budget: int, eval_every: int, eval_episodes: int, target: float,
              stop_at_target: bool, on_eval: Callable[[int, float, float], None],
              extra_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train one arm until the target (or its budget), evaluating on the grid; returns its record.

    ``extra_overrides`` (Hydra ``key=value``) try another preset or setting on the arm."""
    arm = ARMS[name]
    overrides = list(arm.overrides) + list(extra_overrides)
    cfg = compose_config(overrides)
    task = build_task(cfg.env)
    judge = build_task(compose_config(["env=half_cheetah"]).env)  # gymnasium's own env scores both arms
    venv = build_vec_env(task, cfg.algo, seed, check_finite=not arm.stock)
    model = build_model(cfg.algo, venv, seed)
    seeds = [EVAL_SEED_BASE + i for i in range(eval_episodes)]

    def evaluate() -> list[float]:
        def act(obs: np.ndarray) -> np.ndarray:
            return model.predict(venv.normalize_obs(obs), deterministic=True)[0]
        return episode_returns(judge, act, seeds)

    timer = _TimedEvaluation(evaluate, eval_every, target, stop_at_target, on_eval)
    model.learn(total_timesteps=budget, callback=timer)
    venv.close()
    steps = [p["steps"] for p in timer.curve]
    reach_steps = first_reach(steps, [p["return"] for p in timer.curve], target)
    reach_seconds = next((p["seconds"] for p in timer.curve if p["steps"] == reach_steps), None)
    return {"label": arm.label, "overrides": overrides, "seed": seed, "n_envs": int(cfg.algo.n_envs),
            "settings": OmegaConf.to_container(cfg.algo, resolve=True),
            "curve": timer.curve, "steps_to_target": reach_steps, "seconds_to_target": reach_seconds,
            "training_seconds": timer.training_seconds(), "steps": int(model.num_timesteps),
            "steps_per_s": model.num_timesteps / max(timer.training_seconds(), 1e-9)}


def bench_time_to_return(arms: Sequence[str], seed: int, budget: int, eval_every: int, eval_episodes: int,
                         target: float, out_dir: Optional[Path], *, stop_at_target: bool = True,
                         torch_threads: int = 2, overrides: Optional[dict[str, list[str]]] = None,
                         command: str = "") -> dict[str, Any]:
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ConfigError(f"--arms {','.join(arms)!r}: unknown arm(s) {unknown}; arms are {', '.join(ARMS)}")
    if eval_every <= 0 or budget < eval_every or eval_episodes <= 0:
        raise ConfigError(f"--budget {budget}, --eval-every {eval_every}, --episodes {eval_episodes}: need "
                          f"0 < eval-every <= budget and at least one episode")
    torch.set_num_threads(torch_threads)
    records: dict[str, Any] = {}
    result: dict[str, Any] = {
        "command": command, "machine": f"{cpu_model()}, {torch_threads} torch threads, Python {platform.python_version()}",
        "task": "HalfCheetah-v5", "target": target, "seed": seed, "budget": budget, "eval_every": eval_every,
        "eval_episodes": eval_episodes, "stop_at_target": stop_at_target, "arms": records,
    }
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,} steps"),
               TimeElapsedColumn())
    with Progress(*columns) as progress:
        for name in arms:
            bar = progress.add_task(ARMS[name].label, total=budget)

            def on_eval(step: int, seconds: float, value: float, name=name, bar=bar) -> None:
                progress.update(bar, completed=step, description=f"{name}: {value:8.1f} at {step:,} ({seconds:.0f} s)")

            records[name] = train_arm(name, seed, budget, eval_every, eval_episodes, target, stop_at_target, on_eval,
                                      (overrides or {}).get(name, ()))
            progress.console.log(f"{name}: {_reach_text(records[name])}")
            zoo, ours = records.get("zoo"), records.get("physai")
            if zoo and ours and zoo["seconds_to_target"] and ours["seconds_to_target"]:
                result["wall_clock_ratio"] = ours["seconds_to_target"] / zoo["seconds_to_target"]
            if out_dir is not None:  # after every arm: a later failure loses nothing already measured
                out_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(out_dir / RESULT_FILE, result)
    if out_dir is not None:
        plot_time_to_return(result, out_dir / PLOT_FILE)
    return result


def _reach_text(record: dict[str, Any]) -> str:
    reach = (f"target reached at {record['steps_to_target']:,} steps, {record['seconds_to_target']:.0f} s"
             if record["steps_to_target"] is not None else "target not reached")
    return f"{reach}; {record['steps_per_s']:.0f} env steps/s"


def plot_time_to_return(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, record in result["arms"].items():
        curve = record["curve"]
        axes[0].plot([p["seconds"] / 60 for p in curve], [p["return"] for p in curve], marker=".", label=record["label"])
        axes[1].plot([p["steps"] for p in curve], [p["return"] for p in curve], marker=".", label=record["label"])
    for ax, xlabel in zip(axes, ("training wall-clock (min)", "env steps")):
        ax.axhline(result["target"], color="grey", linestyle="--", label=f"target {result['target']:,.0f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"deterministic return ({result['eval_episodes']} episodes)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Time to return on {result['task']}, seed {result['seed']}")
    save_png(fig, path)
