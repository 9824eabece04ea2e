"""Simulation throughput: physai's batched engine against the simulators a user would otherwise pick.

Contenders, each stepping the same task with the same random actions (automatic resets on):

- ``physai``: the batched engine (``gym.make_vec("physai/<Task>")``), on the threads it is given.
- ``bare rollout``: the engine's own physics backend (``mujoco.rollout``) alone on the same models,
  threads, states and controls: it redoes the physics the engine did in the round just before it
  (``PhysicsReplay``), without observations, rewards or resets. The ceiling of the engine.
- ``physai warp`` (``--backend warp``): the same engine on the MuJoCo Warp backend (physics on Warp's
  device, a GPU when there is one, else Warp's CPU device; terms on the host), measured at the first
  thread count only (it uses no host threads for physics). See physai.bench.device_sim.
- ``EnvPool``: the C++ batched env engine (``envpool``, the ``bench`` extra) in synchronous mode
  (batch_size = num_envs) on the same number of threads. It ships gymnasium's v5 MuJoCo tasks, the
  identical work for physai's batched twins of them, and dm_control's cart-pole, a similar but not
  identical model for physai's cart-pole (compare physics steps/s there: the frame skips differ).
- ``gymnasium Sync`` / ``gymnasium Async``: gymnasium's own env (the gymnasium twin where the task has
  one, else physai's single env) in ``SyncVectorEnv`` (one thread) and ``AsyncVectorEnv`` (one worker
  process per env, as ``gym.make_vec(..., vectorization_mode="async")`` builds it; measured up to
  ``ASYNC_MAX_ENVS`` envs).

Every contender of a point runs in the same process in interleaved rounds, so noise from a shared
machine lands on all alike; the median and the spread (min..max over rounds) are reported.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import physai.envs  # noqa: F401  registers physai/<Task>-v0 ids, also in SubprocVecEnv workers
from physai.bench.device_sim import ACTION_BANK, random_actions, warp_engine_steps
from physai.bench.timing import timed_rounds
from physai.config.compose import build_task, compose_config
from physai.core.errors import ConfigError
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import build_spec
from physai.envs.vector import PhysaiVectorEnv
from physai.report.format import save_png
from physai.train.sb3 import build_model
from physai.train.vec_env import make_training_vec_env

log = logging.getLogger(__name__)

ASYNC_MAX_ENVS = 64  # one process per env: beyond this, a 2-core machine measures process thrashing

# EnvPool's model of a physai task that has no gymnasium twin: (EnvPool id, physics steps per env step).
SIMILAR_ENVPOOL = {"cartpole_balance": ("CartpoleBalance-v1", 1)}


@dataclass
class Contender:
    """One way of stepping ``num_envs`` envs; ``step(i)`` advances all of them once."""

    name: str
    step: Callable[[int], Any]
    close: Callable[[], Any]
    physics_steps_per_env_step: int
    threads: int


def _timed_rounds(contenders: list[Contender], num_envs: int, seconds: float, rounds: int,
                  warmup: int = 5) -> dict[str, list[float]]:
    """Env-steps/s of each contender in each of ``rounds`` interleaved rounds."""
    steps = {c.name: (lambda i, step=c.step: (step(i), num_envs)[1]) for c in contenders}
    return timed_rounds(steps, seconds / rounds, rounds, warmup=warmup, min_calls=3)


class PhysicsReplay:
    """The physics the engine did, kept so ``bare rollout`` can redo exactly that work.

    The engine contender copies each step's starting states and controls into a ring (the copies are timed
    with the engine, a small cost against it); at the start of each of its rounds (its call 0, as
    ``timed_rounds`` numbers calls) the bare contender takes the steps the engine made since it last
    started one (the newest, up to the ring's size) and replays them in order, cycling if it makes more
    calls. A fixed bank from the first steps after reset was not the same work: a trajectory's physics cost
    changes as it runs (on HalfCheetah the first steps after reset cost less than later ones).
    """

    MEMORY_BYTES = 16 * 2**20  # the ring's size: steps of states and controls in this many bytes (at most
    MAX_STEPS = 1024           # this many steps)

    def __init__(self, engine) -> None:
        self.engine = engine
        per_step = engine.state.nbytes + engine._control.nbytes
        capacity = int(min(self.MAX_STEPS, max(ACTION_BANK, self.MEMORY_BYTES // per_step)))
        # Written once here, so no timed copy meets a page the kernel has not handed out yet.
        self.states = np.ones((capacity, *engine.state.shape))
        self.controls = np.ones((capacity, *engine._control.shape))
        self.count = 0        # steps recorded
        self.pending = 0      # of those, made since the replay last started a round
        self.window = 0       # the steps the current replay round cycles through (the newest ``window``)
        self.state_out, self.sensor_out = np.zeros_like(engine._state_out), np.zeros_like(engine._sensor_out)

    def record(self, step: Callable[[], Any]) -> None:
        """Run one engine step, keeping the states it started from and the controls it applied."""
        slot = self.count % len(self.states)
        np.copyto(self.states[slot], self.engine.state)
        step()
        np.copyto(self.controls[slot], self.engine._control)
        self.count += 1
        self.pending += 1

    def replay(self, i: int) -> None:
        """Call ``i`` of a round: the physics alone of one recorded step, on the engine's own backend."""
        if i == 0 and self.pending:
            self.window, self.pending = min(self.pending, len(self.states)), 0
        slot = (self.count - self.window + i % self.window) % len(self.states)
        engine = self.engine
        engine.backend.step(engine.models, self.states[slot], self.controls[slot], self.state_out, self.sensor_out)


def physai_contenders(spec, num_envs: int, nthread: int, seed: int) -> list[Contender]:
    """The engine and its bare physics backend on the same models, threads, states and controls
    (``PhysicsReplay``: the bare contender redoes the physics the engine did in its latest round)."""
    venv = PhysaiVectorEnv(spec, num_envs, seed=seed, nthread=nthread)
    venv.reset(seed=seed)
    engine = venv.engine
    actions = random_actions(num_envs, engine.num_actions, seed)
    replay = PhysicsReplay(engine)

    def engine_step(i: int) -> None:
        replay.record(lambda: venv.step(actions[i % ACTION_BANK]))

    for i in range(ACTION_BANK):  # something to replay before the first round
        engine_step(i)
    skip = spec.frame_skip
    used = getattr(engine.backend, "nthread", engine.nthread)  # the backend keeps one thread where that is faster
    return [Contender("physai", engine_step, venv.close, skip, used),
            Contender("bare rollout", replay.replay, lambda: None, skip, used)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _available_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# Bytes per env a peer took when it was first built, by peer name: a larger batch that would not fit in
# half of the free memory is skipped and said so (EnvPool's dm_control cart-pole holds ~12 MB per env).
_BYTES_PER_ENV: dict[str, float] = {}


def fits_in_memory(name: str, num_envs: int) -> Optional[str]:
    """None when ``num_envs`` of this peer fit in half of the free memory, else why not."""
    per_env = _BYTES_PER_ENV.get(name)
    if per_env is None:
        return None
    needed, free = per_env * num_envs, _available_bytes()
    if needed <= free / 2:
        return None
    return (f"{name} at {num_envs} envs would need about {needed / 2**30:.1f} GiB "
            f"({per_env / 2**20:.1f} MiB per env measured at a smaller batch); {free / 2**30:.1f} GiB free")


def envpool_contender(envpool_id: str, num_envs: int, nthread: int, seed: int, frame_skip: int) -> Contender:
    import envpool

    before = _rss_bytes()
    env = envpool.make_gymnasium(envpool_id, num_envs=num_envs, batch_size=num_envs, num_threads=nthread, seed=seed)
    env.reset()
    _BYTES_PER_ENV.setdefault("EnvPool", max(0, _rss_bytes() - before) / num_envs)
    actions = random_actions(num_envs, int(np.prod(env.action_space.shape)), seed).astype(env.action_space.dtype)
    return Contender("EnvPool", lambda i: env.step(actions[i % ACTION_BANK]), env.close, frame_skip, nthread)


def gymnasium_contender(env_id: str, num_envs: int, mode: str, seed: int, frame_skip: int) -> Contender:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode,
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    env.reset(seed=seed)
    actions = random_actions(num_envs, int(np.prod(env.single_action_space.shape)), seed)
    name = "gymnasium Sync" if mode == "sync" else "gymnasium Async"
    return Contender(name, lambda i: env.step(actions[i % ACTION_BANK]), env.close, frame_skip,
                     1 if mode == "sync" else num_envs)


def _summary(samples: list[float], frame_skip: int) -> dict:
    return {"median": float(np.median(samples)), "min": float(np.min(samples)), "max": float(np.max(samples)),
            "rounds": len(samples), "physics_steps_per_s": float(np.median(samples)) * frame_skip}


def warp_contender(spec, num_envs: int, seed: int) -> Contender:
    step, close, _ = warp_engine_steps(spec, num_envs, seed)
    step(0)  # compiles Warp's kernels (or loads them from its cache) before any round is timed
    return Contender("physai warp", step, close, spec.frame_skip, 1)


def bench_point(task_name: str, spec, peers: dict, num_envs: int, nthread: int, seconds: float, rounds: int,
                include_single_threaded: bool, seed: int = 0, backend: str = "rollout") -> dict:
    """Every contender at one (num_envs, threads) point, interleaved. Single-threaded peers (Sync),
    one-process-per-env peers (Async) and the Warp backend are measured at the first thread count only."""
    contenders = physai_contenders(spec, num_envs, nthread, seed)
    if backend == "warp" and include_single_threaded:
        contenders.append(warp_contender(spec, num_envs, seed))
    skipped = {}
    if peers.get("envpool"):
        reason = fits_in_memory("EnvPool", num_envs)
        if reason:
            skipped["EnvPool"] = reason
            log.warning("skipped: %s", reason)
        else:
            contenders.append(envpool_contender(peers["envpool"], num_envs, nthread, seed, peers["envpool_frame_skip"]))
    if include_single_threaded:
        contenders.append(gymnasium_contender(peers["gymnasium"], num_envs, "sync", seed, peers["gymnasium_frame_skip"]))
        if num_envs <= ASYNC_MAX_ENVS:
            contenders.append(gymnasium_contender(peers["gymnasium"], num_envs, "async", seed,
                                                  peers["gymnasium_frame_skip"]))
    try:
        samples = _timed_rounds(contenders, num_envs, seconds, rounds)
    finally:
        for contender in contenders:
            contender.close()
    point = {"num_envs": num_envs, "threads": nthread, "contenders": {}, "skipped": skipped}
    for contender in contenders:
        figures = _summary(samples[contender.name], contender.physics_steps_per_env_step)
        figures["threads"] = contender.threads
        point["contenders"][contender.name] = figures
    ours_median = point["contenders"]["physai"]["median"]
    point["fraction_of_bare_rollout"] = ours_median / point["contenders"]["bare rollout"]["median"]
    if "EnvPool" in point["contenders"]:
        ours = point["contenders"]["physai"]["physics_steps_per_s"]
        point["ratio_vs_envpool_physics_steps"] = ours / point["contenders"]["EnvPool"]["physics_steps_per_s"]
    if "physai warp" in point["contenders"]:
        point["ratio_warp_vs_c_engine"] = point["contenders"]["physai warp"]["median"] / ours_median
    return point


def task_peers(task_name: str, env_cfg: dict, use_envpool: bool) -> dict:
    """Who physai's task is measured against: gymnasium's own twin where it has one (identical work), else
    physai's single env in gymnasium's vector wrappers; EnvPool's same id, or its similar model."""
    twin = env_cfg.get("twin_of")
    frame_skip = int(env_cfg["task"]["frame_skip"])
    peers: dict[str, Any] = {"identical": bool(twin)}
    if twin:
        peers.update(gymnasium=twin, gymnasium_frame_skip=frame_skip, envpool=twin, envpool_frame_skip=frame_skip)
    else:
        peers.update(gymnasium=env_cfg["id"], gymnasium_frame_skip=frame_skip)
        similar = SIMILAR_ENVPOOL.get(task_name)
        if similar:
            peers.update(envpool=similar[0], envpool_frame_skip=similar[1])
    if peers.get("envpool") and use_envpool:
        try:
            import envpool  # noqa: F401
        except ImportError as exc:
            raise ConfigError("EnvPool is not installed: install the bench extra (pip install -e '.[bench]'), or "
                              "pass --no-envpool to measure without it") from exc
    else:
        peers["envpool"] = None
        peers.pop("envpool_frame_skip", None)
    return peers


def memory_per_env(spec, num_envs: int = 256) -> float:
    """Bytes per env the engine holds (models, batch arrays, thread scratch), counted, not sampled:
    in-process RSS deltas are hidden by the allocator reusing freed pages."""
    venv = PhysaiVectorEnv(spec, num_envs, seed=0, nthread=2)
    total = venv.engine.memory_bytes()
    venv.close()
    return total / num_envs


def _make_registered(env_id: str):
    """``gym.make(env_id)`` in any process: physai's ids are registered by importing physai.envs."""
    return gym.make(env_id)


def single_env_rates(env_id: str, peer_id: str, seconds: float, rounds: int, seed: int = 0) -> dict:
    """``gym.make(env_id)`` against ``gym.make(peer_id)`` stepped one env at a time, as RL Baselines3 Zoo and
    most scripts do; interleaved rounds, episodes reset when they end."""
    contenders = []
    for name, make_id in (("physai gym.make", env_id), ("gymnasium gym.make", peer_id)):
        env = gym.make(make_id)
        env.reset(seed=seed)
        actions = np.random.default_rng(seed).uniform(-1, 1, size=(ACTION_BANK, *env.action_space.shape))
        actions = actions.astype(env.action_space.dtype)

        def step(i: int, env=env, actions=actions) -> None:
            _, _, terminated, truncated, _ = env.step(actions[i % ACTION_BANK])
            if terminated or truncated:
                env.reset()

        contenders.append(Contender(name, step, env.close, 1, 1))
    try:
        samples = _timed_rounds(contenders, 1, seconds, rounds)
    finally:
        for contender in contenders:
            contender.close()
    rates = {name: _summary(values, 1) for name, values in samples.items()}
    for figures in rates.values():
        figures.pop("physics_steps_per_s")
    return {"single_env": {"steps_per_s": rates, "env_id": env_id, "peer_env_id": peer_id,
                           "ratio": rates["physai gym.make"]["median"] / rates["gymnasium gym.make"]["median"]}}


def ppo_training_rate(task_name: str, env_cfg: dict, timesteps: int, repeats: int) -> dict:
    """PPO env-steps/s (collection + updates, same hyperparameters) on physai's engine against SB3 on
    gymnasium's own env (the twin where the task has one) in DummyVecEnv and SubprocVecEnv; the three
    alternate ``repeats`` times."""
    cfg = compose_config([f"env={task_name}"])
    task = build_task(cfg.env)
    peer_id = env_cfg.get("twin_of") or env_cfg["id"]
    n_envs = int(cfg.algo.n_envs)
    torch.set_num_threads(1)
    make_peer = functools.partial(_make_registered, peer_id)  # picklable for SubprocVecEnv's workers
    makers = {
        "physai engine": lambda: make_training_vec_env(task, n_envs, 0),
        "SB3 DummyVecEnv": lambda: make_vec_env(make_peer, n_envs=n_envs, seed=0, vec_env_cls=DummyVecEnv),
        "SB3 SubprocVecEnv": lambda: make_vec_env(make_peer, n_envs=n_envs, seed=0, vec_env_cls=SubprocVecEnv),
    }
    samples: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            venv = make()
            model = build_model(cfg.algo, venv, seed=0)
            start = time.perf_counter()
            model.learn(timesteps)
            samples[name].append(model.num_timesteps / (time.perf_counter() - start))
            venv.close()
    rates = {name: _summary(values, 1) for name, values in samples.items()}
    for figures in rates.values():
        figures.pop("physics_steps_per_s")
    best_peer = max(rates["SB3 DummyVecEnv"]["median"], rates["SB3 SubprocVecEnv"]["median"])
    return {"ppo": {"steps_per_s": rates, "speedup_vs_best_sb3": rates["physai engine"]["median"] / best_peer,
                    "n_envs": n_envs, "timesteps": timesteps, "repeats": repeats, "peer_env_id": peer_id,
                    "hyperparameters": f"what `python train.py env={task_name}` composes: its PPO preset (a twin "
                                       f"uses its gymnasium option's), else SB3's PPO defaults"}}


def bench_sim(task_name: str, envs: list[int], threads: list[int], seconds: float, rounds: int, out_dir: Path,
              ppo_timesteps: int, ppo_repeats: int = 3, use_envpool: bool = True, backend: str = "rollout") -> dict:
    from rich.progress import Progress

    configs = packaged_task_configs()
    if task_name not in configs:
        raise ConfigError(f"--task {task_name!r} is not a physai task; choose one of {sorted(configs)}")
    env_cfg = configs[task_name]
    spec = build_spec(**env_cfg["task"])
    peers = task_peers(task_name, env_cfg, use_envpool)
    threads = sorted(set(threads))
    points = []
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"bench sim {task_name}", total=len(envs) * len(threads))
        for n in envs:
            for t in threads:
                points.append(bench_point(task_name, spec, peers, n, t, seconds, rounds,
                                          include_single_threaded=(t == threads[0]), backend=backend))
                progress.advance(bar)
    _print_table(task_name, spec.frame_skip, points)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"sim_scaling_{task_name}{'_warp' if backend == 'warp' else ''}.png"
    _plot(points, plot, task_name, peers)
    result = {"task": task_name, "backend": backend, "frame_skip": spec.frame_skip, "peers": peers,
              "seconds_per_point": seconds,
              "rounds": rounds, "memory_per_env_bytes": memory_per_env(spec), "points": points, "plot": str(plot),
              "targets": target_checks(task_name, points, peers)}
    if peers["identical"]:
        result.update(single_env_rates(env_cfg["id"], peers["gymnasium"], seconds, rounds))
        ratio = result["single_env"]["ratio"]
        result["targets"].append({"target": "gym.make of physai's task steps at least as fast as gymnasium's own",
                                  "value": ratio, "threshold": 1.0, "met": ratio >= 1.0})
    if ppo_timesteps:
        result.update(ppo_training_rate(task_name, env_cfg, ppo_timesteps, ppo_repeats))
    return result


def _point(points: list[dict], num_envs: int, threads: int) -> Optional[dict]:
    return next((p for p in points if p["num_envs"] == num_envs and p["threads"] == threads), None)


def target_checks(task_name: str, points: list[dict], peers: dict) -> list[dict]:
    """The issue's targets for this task, each with the measured figure and whether it is met."""
    checks = []
    if peers.get("envpool") and peers["identical"]:
        for n in (64, 256):
            for t in (1, 2):
                p = _point(points, n, t)
                if p and "EnvPool" in p["contenders"]:
                    ratio = p["contenders"]["physai"]["median"] / p["contenders"]["EnvPool"]["median"]
                    checks.append({"target": f"physai >= EnvPool at {n} envs, {t} thread(s)", "value": ratio,
                                   "threshold": 1.0, "met": ratio >= 1.0})
    bare_targets = {"cartpole_balance": (256, 0.85)}
    n, threshold = bare_targets.get(task_name, (64, 0.95))
    for t in (1, 2):
        p = _point(points, n, t)
        if p:
            checks.append({"target": f"physai >= {threshold:.0%} of bare rollout at {n} envs, {t} thread(s)",
                           "value": p["fraction_of_bare_rollout"], "threshold": threshold,
                           "met": p["fraction_of_bare_rollout"] >= threshold})
    for n in sorted({p["num_envs"] for p in points}):
        one, two = _point(points, n, 1), _point(points, n, 2)
        if one and two and two["contenders"]["physai"]["threads"] == 2:
            ratio = two["contenders"]["physai"]["median"] / one["contenders"]["physai"]["median"]
            checks.append({"target": f"a second thread is never slower than one, {n} envs", "value": ratio,
                           "threshold": 1.0, "met": ratio >= 1.0})
    return checks


def _print_table(task_name: str, frame_skip: int, points: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = []
    for p in points:
        names += [name for name in p["contenders"] if name not in names]
    table = Table(title=f"{task_name}: env steps/s, median (min-max over rounds); physai frame_skip {frame_skip}")
    for column in ("envs", "threads", *names, "of bare"):
        table.add_column(column, justify="right")
    for p in points:
        cells = []
        for name in names:
            c = p["contenders"].get(name)
            cells.append("-" if c is None else f"{_k(c['median'])} ({_k(c['min'])}-{_k(c['max'])})")
        table.add_row(str(p["num_envs"]), str(p["threads"]), *cells, f"{p['fraction_of_bare_rollout']:.0%}")
    Console(stderr=True).print(table)


MARKDOWN_CONTENDERS = ("physai", "bare rollout", "EnvPool", "gymnasium Sync", "gymnasium Async")


def markdown_table(result: dict) -> str:
    """The README's table of a ``sim_<task>.json``: env steps/s, median (min-max over rounds) in thousands."""
    def cell(contender: Optional[dict]) -> str:
        if contender is None:
            return "–"
        return f"{_k(contender['median'])} ({contender['min'] / 1000:.0f}-{contender['max'] / 1000:.0f})"

    lines = ["| envs | threads given | physai | threads physai used | bare rollout | EnvPool | gymnasium Sync | "
             "gymnasium Async | physai of bare |", "|---|---|---|---|---|---|---|---|---|"]
    for point in result["points"]:
        figures = point["contenders"]
        cells = [cell(figures.get(name)) for name in MARKDOWN_CONTENDERS]
        lines.append(f"| {point['num_envs']} | {point['threads']} | {cells[0]} | {figures['physai']['threads']} | "
                     f"{' | '.join(cells[1:])} | {point['fraction_of_bare_rollout']:.0%} |")
    return "\n".join(lines)


def _k(rate: float) -> str:
    return f"{rate / 1000:.1f}k"


def _plot(points: list[dict], target: Path, task_name: str, peers: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    styles = {"physai": "o-", "physai warp": "P-", "bare rollout": "s--", "EnvPool": "D-.", "gymnasium Sync": "^:",
              "gymnasium Async": "v:"}
    unit = "physics_steps_per_s" if peers.get("envpool") and not peers["identical"] else "median"
    for ax, threads in zip(axes, sorted({p["threads"] for p in points})[:2]):
        rows = [p for p in points if p["threads"] == threads]
        for name, style in styles.items():
            have = [p for p in rows if name in p["contenders"]]
            if not have:
                continue
            ys = [p["contenders"][name][unit] for p in have]
            low = [p["contenders"][name]["min"] * (p["contenders"][name][unit] / p["contenders"][name]["median"])
                   for p in have]
            high = [p["contenders"][name]["max"] * (p["contenders"][name][unit] / p["contenders"][name]["median"])
                    for p in have]
            xs = [p["num_envs"] for p in have]
            ax.plot(xs, ys, style, label=name)
            ax.fill_between(xs, low, high, alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("parallel envs")
        ax.set_title(f"{threads} thread(s)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("physics steps / s" if unit != "median" else "env steps / s")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task_name}: simulation throughput (median, band = min..max over rounds)")
    fig.tight_layout()
    save_png(fig, target)
