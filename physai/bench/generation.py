"""Synthetic transitions per second against the fastest simulator path, stepping the same policy.

The trained ensemble and policy generate many branches in one ``imagine`` call; the simulator paths are
the single env and the task's batched path (physai's engine, or gymnasium's vector env and EnvPool for a
gymnasium id), each with a batched policy. All are timed interleaved, round by round, in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch as th

from physai.bench.timing import timed_rounds
from physai.synthetic.imagine import imagine
from physai.synthetic.mbpo import MBPO
from physai.synthetic.scenario import Starts
from physai.train.vec_env import make_training_vec_env

POLICY_WEIGHTS = "policy.pt"  # the trained MBPO policy kept for this measurement (weights only)


@dataclass
class Rate:
    """One timed contender: ``step()`` does a unit of work and returns how many transitions it produced."""

    name: str
    step: Callable[[], int]
    close: Callable[[], None] = lambda: None


def interleaved_rates(contenders: list[Rate], seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    """Transitions/s of each contender, timed round-robin: median, min and max over ``rounds``."""
    samples = timed_rounds({c.name: (lambda i, step=c.step: step()) for c in contenders}, seconds, rounds)
    return {name: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)),
                   "rounds": len(v)} for name, v in samples.items()}


def _generation_contender(model, real: dict[str, np.ndarray], branches: int, horizon: int) -> Rate:
    rng = np.random.default_rng(0)
    policy = model.policy_fn()
    model.policy.set_training_mode(False)

    def step() -> int:
        pick = rng.integers(0, real["obs"].shape[0], size=branches)
        starts = Starts(obs=real["obs"][pick], context=None, parent_state_id=np.full(branches, -1, np.int64))
        return len(imagine(model.dynamics_model, policy, starts, horizon, model.max_disagreement, rng))

    return Rate("synthetic", step)


def simulator_contenders(task, model, batch_sizes: Sequence[int]) -> list[Rate]:
    """Simulator paths stepping the same stochastic policy: single env, then batched paths of the task."""
    policy = model.policy_fn()
    unscale = model.policy.unscale_action
    contenders = []
    env = task.make()
    single_obs = {"obs": env.reset(seed=0)[0]}

    def single() -> int:
        action = unscale(policy(np.asarray(single_obs["obs"], np.float32)[None])[0])
        obs, _, terminated, truncated, _ = env.step(action)
        single_obs["obs"] = env.reset()[0] if terminated or truncated else obs
        return 1

    contenders.append(Rate("single env", single, env.close))

    def batched(name: str, venv, reset_obs, n: int) -> Rate:
        box = {"obs": reset_obs}

        def step() -> int:
            box["obs"] = venv.step(unscale(policy(np.asarray(box["obs"], np.float32))))[0]  # auto-resets
            return n

        return Rate(name, step, venv.close)

    for n in batch_sizes:
        venv = task.make_vector_env(n, seed=0)  # physai: the batched engine; else gymnasium's SyncVectorEnv
        label = "batched engine" if task.batched else "gymnasium sync vector"
        contenders.append(batched(f"{label} {n}", venv, venv.reset(seed=0)[0], n))
        if not task.batched:
            pool = _envpool(task.id, n)
            if pool is not None:
                contenders.append(batched(f"EnvPool {n}", pool, pool.reset()[0], n))
    return contenders


def _envpool(env_id: str, n: int):
    """EnvPool's batched env for a gymnasium id, when the bench extra is installed and EnvPool has the id."""
    try:
        import envpool
    except ImportError:
        return None
    if env_id not in envpool.list_all_envs():
        return None
    return envpool.make(env_id, env_type="gymnasium", num_envs=n, batch_size=n, num_threads=1, seed=0)


def generation_figures(task, mbpo_settings: dict[str, Any], model_dir: Path, branches: int, horizon: int,
                       seconds: float, rounds: int, batch_sizes: Sequence[int]) -> dict[str, Any]:
    """Synthetic transitions/s against every simulator path, interleaved; the ratio to the fastest."""
    venv = make_training_vec_env(task, 1, 0)
    # The trained MBPO, rebuilt from its settings: weights only, nothing unpickled.
    model = MBPO("MlpPolicy", venv, seed=0, device="cpu", verbose=0, **mbpo_settings)
    model.policy.load_state_dict(th.load(model_dir / POLICY_WEIGHTS, weights_only=True))
    model.load_extras(model_dir, task_id=task.id)
    with np.load(model_dir / "real.npz") as data:
        real = {k: data[k] for k in data.files}
    contenders = [_generation_contender(model, real, branches, horizon),
                  *simulator_contenders(task, model, batch_sizes)]
    try:
        rates = interleaved_rates(contenders, seconds, rounds)
    finally:
        for contender in contenders:
            contender.close()
        venv.close()
    synthetic = rates.pop("synthetic")["median"]
    fastest = max(rates, key=lambda k: rates[k]["median"])
    return {"synthetic_per_s": synthetic, "simulator": rates, "fastest_simulator_path": fastest,
            "fastest_simulator_steps_per_s": rates[fastest]["median"],
            "generation_ratio": synthetic / rates[fastest]["median"],
            "generation_ratio_vs_single_env": synthetic / rates["single env"]["median"],
            "branches": branches, "horizon": horizon, "seconds_per_round": seconds, "rounds": rounds,
            "model": f"{model.model_members} members ({model.model_elites} elites), "
                     f"{model.model_layers}x{model.model_hidden} hidden"}
