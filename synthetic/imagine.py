"""Synthetic rollouts: a policy acting in the world model, many branches in one batch.

Every branch steps until its horizon, a predicted termination, or the ensemble's disagreement
passes the scenario's limit (the step that crossed it is not kept: past that point the model is
guessing). A non-finite prediction stops its branch and is counted, never kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from physai.synthetic.scenario import Scenario, Starts, kick_schedule

PolicyFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Imagined:
    """Flat synthetic transitions, one row per kept model step, with the branch each came from."""

    obs: np.ndarray
    act: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    uncertainty: np.ndarray
    branch: np.ndarray            # branch index (row of the starts)
    depth: np.ndarray             # 1-based model steps from the branch start
    context: Optional[np.ndarray]
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.reward)


def imagine(model, policy: PolicyFn, starts: Starts, horizon: int, max_disagreement: float,
            rng: np.random.Generator, scenario: Optional[Scenario] = None) -> Imagined:
    """Roll ``policy`` through ``model`` from ``starts`` for up to ``horizon`` steps per branch."""
    branches = len(starts.obs)
    schedule = kick_schedule(scenario, rng, branches) if scenario is not None else []
    obs = np.array(starts.obs, dtype=np.float32)
    alive = np.ones(branches, dtype=bool)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "next_obs", "reward", "terminated",
                                                         "uncertainty", "branch", "depth", "context")}
    counts = {"stopped_uncertain": 0, "stopped_nonfinite": 0, "terminated": 0}
    generator = np.random.default_rng(rng.integers(2**63))
    start = time.perf_counter()
    _apply_kicks(schedule, np.arange(branches), obs, step=1)
    for depth in range(1, horizon + 1):
        ids = np.flatnonzero(alive)
        if ids.size == 0:
            break
        current = obs[ids]
        context = None if starts.context is None else starts.context[ids]
        action = _act(policy, current)
        next_obs, reward, terminated, disagreement = model.sample_step(current, action, context, generator)
        # A kick due at the next step lands between steps, as a shove does in the simulator: the
        # observation after this step already shows it.
        _apply_kicks(schedule, ids, next_obs, step=depth + 1)
        finite = (np.isfinite(next_obs).all(axis=1) & np.isfinite(reward) & np.isfinite(disagreement))
        certain = finite & (disagreement <= max_disagreement)
        counts["stopped_nonfinite"] += int((~finite).sum())
        counts["stopped_uncertain"] += int((finite & ~certain).sum())
        keep = ids[certain]
        for name, value in (("obs", current[certain]), ("act", action[certain]), ("next_obs", next_obs[certain]),
                            ("reward", reward[certain]), ("terminated", terminated[certain]),
                            ("uncertainty", disagreement[certain]), ("branch", keep),
                            ("depth", np.full(keep.size, depth, dtype=np.int32))):
            rows[name].append(value)
        if starts.context is not None:
            rows["context"].append(starts.context[keep])
        obs[keep] = next_obs[certain]
        counts["terminated"] += int(terminated[certain].sum())
        alive[ids[~certain]] = False
        alive[keep[terminated[certain]]] = False
    seconds = time.perf_counter() - start
    obs_dim, act_dim = starts.obs.shape[1], _action_width(rows)
    flat = {name: (np.concatenate(values) if values else None) for name, values in rows.items()}
    empty = {"obs": (0, obs_dim), "act": (0, act_dim), "next_obs": (0, obs_dim)}
    for name, shape in empty.items():
        if flat[name] is None:
            flat[name] = np.zeros(shape, dtype=np.float32)
    for name, dtype in (("reward", np.float32), ("terminated", bool), ("uncertainty", np.float32),
                        ("branch", np.int64), ("depth", np.int32)):
        if flat[name] is None:
            flat[name] = np.zeros(0, dtype=dtype)
    kept = len(flat["reward"])
    stats = {"branches": branches, "transitions": kept, "seconds": seconds,
             "transitions_per_s": kept / seconds if seconds > 0 else None,
             "mean_depth": float(flat["depth"].mean()) if kept else 0.0, **counts}
    return Imagined(context=flat.pop("context"), stats=stats, **flat)


def _act(policy: PolicyFn, obs: np.ndarray, block: int = 4096) -> np.ndarray:
    """The policy's actions for every row, computed a block of rows at a time (cache-sized, 2x faster)."""
    actions = [np.asarray(policy(obs[start: start + block]), dtype=np.float32) for start in range(0, len(obs), block)]
    return np.concatenate(actions).reshape(len(obs), -1)


def _apply_kicks(schedule, ids: np.ndarray, obs: np.ndarray, step: int) -> None:
    """Add the deltas of kicks due at ``step`` to the rows of ``obs`` (one row per branch in ``ids``)."""
    for kick, steps, deltas in schedule:
        hit = steps[ids] == step
        if hit.any():
            obs[np.ix_(hit, kick.columns)] += deltas[ids[hit]]


def _action_width(rows: dict[str, list[np.ndarray]]) -> int:
    return rows["act"][0].shape[1] if rows["act"] else 0


def branch_episodes(imagined: Imagined) -> list[dict[str, np.ndarray]]:
    """Group kept rows into one episode per branch (in depth order), for writing a dataset."""
    if len(imagined) == 0:
        return []
    order = np.lexsort((imagined.depth, imagined.branch))
    branch = imagined.branch[order]
    bounds = np.flatnonzero(np.diff(branch)) + 1
    episodes = []
    for rows in np.split(order, bounds):
        episodes.append({
            "branch": int(imagined.branch[rows[0]]),
            "observations": np.concatenate([imagined.obs[rows[:1]], imagined.next_obs[rows]]),
            "actions": imagined.act[rows], "rewards": imagined.reward[rows].astype(np.float64),
            "terminations": imagined.terminated[rows],
            # A branch that ends without a termination was cut (horizon or uncertainty): a truncation.
            "truncations": np.r_[np.zeros(rows.size - 1, bool), not bool(imagined.terminated[rows[-1]])],
            "uncertainty": imagined.uncertainty[rows], "branch_depth": imagined.depth[rows],
            "context": None if imagined.context is None else imagined.context[rows]})
    return episodes
