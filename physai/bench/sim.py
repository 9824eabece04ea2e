"""Simulation throughput: physai's batched engine against gymnasium's SyncVectorEnv and bare rollout.

All contenders step the same task with the same controls in one process. "Bare rollout" is the
engine's own physics backend (``mujoco.rollout``) alone on the same per-env models, controls and
threads: physics only, no observations, rewards or resets, the ceiling the engine's Python side is
measured against. Engine and bare rollout alternate in interleaved rounds (medians reported), so
noise from a shared machine lands on both. The SyncVectorEnv contender steps the task's single-env
view (the engine at N=1), seeded like the engine: what a gymnasium user gets without batching.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from physai.envs.vector import PhysaiVectorEnv

log = logging.getLogger(__name__)


def _rates(contenders: dict[str, Callable[[int], None]], num_envs: int, seconds: float, rounds: int = 3,
           warmup: int = 5) -> dict[str, float]:
    """Median env-steps/s of each contender over ``rounds`` interleaved rounds (noise hits all alike)."""
    for step in contenders.values():
        for i in range(warmup):
            step(i)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, step in contenders.items():
            calls, start = 0, time.perf_counter()
            while True:
                step(calls)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds / rounds and calls >= 3:
                    break
            samples[name].append(calls * num_envs / elapsed)
    return {name: float(np.median(values)) for name, values in samples.items()}


def bench_point(task: dict, spec, num_envs: int, nthread: int, seconds: float, sync_rate: float,
                seed: int = 0) -> dict:
    """Engine vs bare backend stepping (same models, controls and threads); SyncVectorEnv measured apart."""
    venv = PhysaiVectorEnv(spec, num_envs, seed=seed, nthread=nthread)
    venv.reset(seed=seed)
    engine = venv.engine
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(64, num_envs, engine.num_actions)).astype(np.float32)
    controls = engine._ctrl_mid + engine._ctrl_half * actions.astype(np.float64)
    state = engine.state.copy()
    control = np.zeros_like(engine._control)
    state_out, sensor_out = np.zeros_like(engine._state_out), np.zeros_like(engine._sensor_out)

    def bare(i: int) -> None:
        # Physics alone through the engine's own backend: no terms, no resets.
        control[:, :, engine.actuator_ids] = controls[i % 64][:, None, :]
        engine.backend.step(engine.models, state, control, state_out, sensor_out)
        state[:] = state_out[:, -1]
        bad = ~np.isfinite(state).all(axis=1)
        if bad.any():  # keep a diverged env from slowing the loop, as the engine resets it
            state[bad] = engine.state[bad]

    rates = _rates({"engine": lambda i: venv.step(actions[i % 64]), "bare": bare}, num_envs, seconds)
    venv.close()
    return {"num_envs": num_envs, "threads": engine.nthread, "physai_steps_per_s": rates["engine"],
            "gymnasium_sync_steps_per_s": sync_rate, "raw_rollout_steps_per_s": rates["bare"],
            "ratio_vs_gymnasium_sync": rates["engine"] / sync_rate,
            "fraction_of_raw_rollout": rates["engine"] / rates["bare"]}


def sync_rate(task: dict, num_envs: int, seconds: float, seed: int = 0) -> float:
    """gymnasium's SyncVectorEnv over the task's single env (seeded like the engine's envs)."""
    import gymnasium as gym

    from physai.envs.single import PhysaiEnv

    sync = gym.vector.SyncVectorEnv([lambda: PhysaiEnv(task) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    sync.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(64, *sync.action_space.shape)).astype(np.float32)
    rate = _rates({"sync": lambda i: sync.step(actions[i % 64])}, num_envs, seconds)["sync"]
    sync.close()
    return rate


def memory_per_env(spec, num_envs: int = 256) -> float:
    """Bytes per env the engine holds (models, batch arrays, thread scratch), counted, not sampled:
    in-process RSS deltas are hidden by the allocator reusing freed pages."""
    venv = PhysaiVectorEnv(spec, num_envs, seed=0, nthread=2)
    total = venv.engine.memory_bytes()
    venv.close()
    return total / num_envs


def ppo_training_rate(task, algo_overrides: list[str], timesteps: int) -> dict:
    """PPO env-steps/s (collection + updates) on the batched engine vs SB3 on single envs."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from stable_baselines3.common.env_util import make_vec_env

    from physai.config import register_configs
    from physai.training.sb3 import build_model

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("physai.configs", version_base="1.3"):
        cfg = compose("config", overrides=algo_overrides)
    torch.set_num_threads(1)
    rates = {}
    for name, make in (("physai_engine", lambda: task.make_sb3_vec_env(cfg.algo.n_envs, 0)),
                       ("sb3_dummy_vec_env", lambda: make_vec_env(task.env_fn(), n_envs=cfg.algo.n_envs, seed=0))):
        venv = make()
        model = build_model(cfg.algo, venv, seed=0)
        start = time.perf_counter()
        model.learn(timesteps)
        rates[name] = model.num_timesteps / (time.perf_counter() - start)
        venv.close()
    return {"ppo_steps_per_s": rates, "ppo_speedup": rates["physai_engine"] / rates["sb3_dummy_vec_env"],
            "ppo_n_envs": int(cfg.algo.n_envs), "ppo_timesteps": timesteps}


def bench_sim(task_name: str, envs: list[int], threads: list[int], seconds: float, out_dir: Path,
              ppo_timesteps: int) -> dict:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from physai.envs.registry import packaged_task_configs
    from physai.envs.spec import build_spec
    from physai.pipeline import build_task

    configs = packaged_task_configs()
    if task_name not in configs:
        from physai.errors import ConfigError

        raise ConfigError(f"--task {task_name!r} is not a physai task; choose one of {sorted(configs)}")
    env_cfg = configs[task_name]
    spec = build_spec(**env_cfg["task"])
    points = []
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"bench sim {task_name}", total=len(envs) * (len(threads) + 1))
        for n in envs:
            sync = sync_rate(env_cfg["task"], n, seconds)  # single-threaded: measured once per size
            progress.advance(bar)
            # The engine never runs more threads than envs, so N=1 is measured once, not once per thread count.
            for t in sorted({min(t, n) for t in threads}):
                points.append(bench_point(env_cfg["task"], spec, n, t, seconds, sync))
            progress.advance(bar, len(threads))
    mem = memory_per_env(spec)
    table = Table(title=f"{task_name}: env steps/s (frame_skip {spec.frame_skip}, {seconds:g} s per point)")
    for column in ("envs", "threads", "physai", "gymnasium Sync", "bare rollout", "vs Sync", "of bare"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(str(p["num_envs"]), str(p["threads"]), f"{p['physai_steps_per_s']:,.0f}",
                      f"{p['gymnasium_sync_steps_per_s']:,.0f}", f"{p['raw_rollout_steps_per_s']:,.0f}",
                      f"{p['ratio_vs_gymnasium_sync']:.1f}x", f"{p['fraction_of_raw_rollout']:.0%}")
    console = Console(stderr=True)
    console.print(table)
    console.print(f"memory per env: {mem / 1024:.1f} KiB (engine-held bytes at 256 envs / 256)")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"sim_scaling_{task_name}.png"
    _plot(points, plot, task_name)
    ppo = ppo_training_rate(build_task(_env_node(env_cfg)), [f"env={task_name}"], ppo_timesteps) \
        if ppo_timesteps else {}
    headline = next((p for p in points if p["num_envs"] == 64 and p["threads"] == 2), points[-1])
    result = {"task": task_name, "num_envs": headline["num_envs"], "threads": headline["threads"],
              "steps_per_s": headline["physai_steps_per_s"],
              "ratio_vs_gymnasium_sync": headline["ratio_vs_gymnasium_sync"],
              "fraction_of_raw_rollout": headline["fraction_of_raw_rollout"],
              "memory_per_env_bytes": mem, "points": points, "plot": str(plot), **ppo}
    return result


def _env_node(env_cfg: dict):
    from omegaconf import OmegaConf

    node = {k: v for k, v in env_cfg.items() if k != "defaults"}
    return OmegaConf.create(node)


def _plot(points: list[dict], target: Path, task_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from physai.reporting import save_png

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for threads in sorted({p["threads"] for p in points}):
        rows = [p for p in points if p["threads"] == threads]
        xs = [p["num_envs"] for p in rows]
        ax.plot(xs, [p["physai_steps_per_s"] for p in rows], "o-", label=f"physai engine, {threads} thr")
        ax.plot(xs, [p["raw_rollout_steps_per_s"] for p in rows], "s--", label=f"bare rollout, {threads} thr")
    sync = [p for p in points if p["threads"] == min(p["threads"] for p in points)]
    ax.plot([p["num_envs"] for p in sync], [p["gymnasium_sync_steps_per_s"] for p in sync], "^:",
            label="gymnasium SyncVectorEnv")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parallel envs")
    ax.set_ylabel("env steps / s")
    ax.set_title(f"{task_name}: simulation throughput")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, target)


