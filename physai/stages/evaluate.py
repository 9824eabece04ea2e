"""Evaluate the trained policy: n deterministic episodes on fresh seeds, mean return with a 95% CI."""

from __future__ import annotations

import numpy as np

from physai.evaluation import episode_returns, evaluation_seeds, summarize_returns

REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = ["summary:eval"]


def run(cfg, ctx) -> dict:
    from physai.training.normalization import NORMALIZATION_FILE, load_obs_normalization
    from physai.training.sb3 import load_checkpoint

    checkpoint = ctx.path("checkpoints", "final")
    model = load_checkpoint(cfg.algo, checkpoint)
    obs_norm = load_obs_normalization(checkpoint / NORMALIZATION_FILE)

    def act(obs: np.ndarray) -> np.ndarray:
        x = obs if obs_norm is None else obs_norm.apply(obs)
        action, _ = model.predict(x.astype(np.float32), deterministic=True)
        return action

    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    figures = summarize_returns(episode_returns(ctx.task, act, seeds), seeds, ctx.task.solved_threshold)
    figures["policy"] = "checkpoints/final (stable-baselines3, deterministic)"
    ctx.record("eval", figures)
    return figures
