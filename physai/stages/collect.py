"""Collect real transitions from the simulator into a Minari-compatible dataset (datasets/real)."""

from __future__ import annotations

from typing import Optional, TypedDict

import numpy as np

from physai.synthetic.artifacts import REAL_DATASET, dataset_id
from physai.synthetic.collect import collect_episodes, make_action_fn
from physai.synthetic.dataset import ProvenanceTables, write_dataset


class CollectSummary(TypedDict):
    """The real dataset: its size, who acted and the physics-context columns it records."""

    dataset: str
    transitions: int
    episodes: int
    policy: str
    mean_episode_return: Optional[float]  # over complete episodes only
    context_names: list[str]


REQUIRES: list[str] = []
PRODUCES = [REAL_DATASET, "summary:collect"]
SUMMARY = CollectSummary


def run(cfg, ctx) -> CollectSummary:
    settings = cfg.synthetic.collect
    task = ctx.task
    env = task.make()
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    rng = np.random.default_rng(cfg.seed)
    act, policy_description = make_action_fn(settings.policy, action_space, rng, bundle=settings.bundle,
                                             noise=settings.action_noise)
    episodes = collect_episodes(task, settings.steps, act, seed=cfg.seed * 100_000)
    observation_names, context_names = task.signal_names()
    target = ctx.path(REAL_DATASET)
    write_dataset(target, episodes, dataset_id=dataset_id(cfg.env.id, "real"), kind="real", task_id=cfg.env.id,
                  observation_space=observation_space, action_space=action_space,
                  provenance_tables=ProvenanceTables(context_names=tuple(context_names)),
                  generator_info={"policy": policy_description, "seed": cfg.seed,
                                  "observation_names": observation_names})
    # The step budget may cut the last episode short; its partial return would drag the mean down.
    complete = episodes if episodes[-1].terminations[-1] or len(episodes) == 1 else episodes[:-1]
    returns = [float(e.rewards.sum()) for e in complete]
    figures = CollectSummary(dataset=REAL_DATASET, transitions=int(sum(len(e) for e in episodes)),
                             episodes=len(episodes), policy=policy_description,
                             mean_episode_return=float(np.mean(returns)) if returns else None,
                             context_names=list(context_names))
    ctx.record("collect", figures)
    return figures
