"""Simulation throughput: physai's batched engine against gymnasium's SyncVectorEnv and bare rollout.

All contenders step the same task model with the same controls in one process, one after
another for each (envs, threads) point. "Bare rollout" is ``mujoco.rollout`` alone on the
same models and controls (physics only, no observations, rewards or resets): the ceiling
our engine's Python side is measured against.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def _rate(step: Callable[[int], None], num_envs: int, seconds: float, warmup: int = 5) -> float:
    """Env steps per second of ``step`` (one call steps every env once), over at least ``seconds``."""
    for i in range(warmup):
        step(i)
    calls, start = 0, time.perf_counter()
    while True:
        step(calls)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * num_envs / elapsed


def bench_point(task: dict, spec, num_envs: int, nthread: int, seconds: float, seed: int = 0) -> dict:
    import gymnasium as gym
    import mujoco
    from mujoco import rollout

    from physai.envs.single import PhysaiEnv
    from physai.envs.vector import PhysaiVectorEnv

    rng = np.random.default_rng(seed)
    venv = PhysaiVectorEnv(spec, num_envs, seed=seed, nthread=nthread)
    venv.reset(seed=seed)
    actions = rng.uniform(-1, 1, size=(64, num_envs, venv.engine.num_actions)).astype(np.float32)
    engine_rate = _rate(lambda i: venv.step(actions[i % 64]), num_envs, seconds)

    # Bare rollout: same per-env models, same control mapping, state chained step to step.
    engine = venv.engine
    models, datas = engine.models, [mujoco.MjData(engine.model) for _ in range(engine.nthread)]
    pool = rollout.Rollout(nthread=engine.nthread if engine.nthread > 1 else 0)
    state = engine.state.copy()
    control = np.zeros((num_envs, spec.frame_skip, engine.model.nu))
    controls = engine._ctrl_mid + engine._ctrl_half * actions.astype(np.float64)
    state_out = np.zeros((num_envs, spec.frame_skip, state.shape[1]))
    sensor_out = np.zeros((num_envs, spec.frame_skip, engine.model.nsensordata))

    def bare(i: int) -> None:
        control[:, :, engine.actuator_ids] = controls[i % 64][:, None, :]
        pool.rollout(models, datas, state, control, nstep=spec.frame_skip, state=state_out,
                     sensordata=sensor_out, skip_checks=True)
        state[:] = state_out[:, -1]
        bad = ~np.isfinite(state).all(axis=1)
        if bad.any():  # keep a diverged env from slowing the loop; the engine resets the same way
            state[bad] = engine.state[bad]

    raw_rate = _rate(bare, num_envs, seconds)
    pool.close()
    venv.close()

    sync = gym.vector.SyncVectorEnv([lambda: PhysaiEnv(task) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    sync.reset(seed=seed)
    sync_rate = _rate(lambda i: sync.step(actions[i % 64]), num_envs, seconds)
    sync.close()
    return {"num_envs": num_envs, "threads": nthread, "physai_steps_per_s": engine_rate,
            "gymnasium_sync_steps_per_s": sync_rate, "raw_rollout_steps_per_s": raw_rate,
            "ratio_vs_gymnasium_sync": engine_rate / sync_rate, "fraction_of_raw_rollout": engine_rate / raw_rate}


def memory_per_env(spec, num_envs: int = 256) -> float:
    """Bytes per env the engine holds (models, batch arrays, thread scratch), counted, not sampled:
    in-process RSS deltas are hidden by the allocator reusing freed pages."""
    from physai.envs.vector import PhysaiVectorEnv

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
        bar = progress.add_task(f"bench sim {task_name}", total=len(envs) * len(threads))
        for n in envs:
            for t in threads:
                points.append(bench_point(env_cfg["task"], spec, n, t, seconds))
                progress.advance(bar)
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

    from physai.io import atomic_path

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
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


