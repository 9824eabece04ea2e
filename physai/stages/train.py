"""Train a policy with the configured SB3 algorithm, checkpointing as it goes."""

from __future__ import annotations

from physai.training.sb3 import CURVE_FILE

REQUIRES: list[str] = []
PRODUCES = ["checkpoints/final/model.zip", CURVE_FILE, "summary:train"]


def run(cfg, ctx) -> dict:
    from physai.training.sb3 import train_policy

    figures = train_policy(ctx.task, cfg.algo, cfg.seed, ctx.run_dir, ctx.tracker, resume=cfg.resume)
    figures.update({"algo": cfg.algo.name, "env_id": cfg.env.id, "total_timesteps": cfg.algo.total_timesteps,
                    "n_envs": cfg.algo.n_envs})
    ctx.record("train", figures)
    return figures
