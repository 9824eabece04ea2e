"""Evaluate the trained policy: n deterministic episodes on fresh seeds, mean return with a 95% CI."""

from __future__ import annotations

from physai.evaluation import episode_returns, evaluation_seeds, summarize_returns

REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = ["summary:eval"]


def run(cfg, ctx) -> dict:
    from physai.training.sb3 import load_trained_policy

    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    figures = summarize_returns(episode_returns(ctx.task, trained.predict, seeds), seeds, ctx.task.solved_threshold)
    figures["policy"] = "checkpoints/final (stable-baselines3, deterministic)"
    figures["checkpoint_timesteps"] = trained.timesteps
    if cfg.evaluate.video:
        from physai.video import record_episode

        video = record_episode(ctx.task, trained.predict, seeds[0], ctx.path("report", "eval_episode.mp4"),
                               max_frames=cfg.evaluate.video_max_frames)
        figures["video"] = None if video is None else "report/eval_episode.mp4"
    ctx.record("eval", figures)
    return figures
