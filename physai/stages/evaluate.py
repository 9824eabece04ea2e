"""Evaluate the trained policy: n deterministic episodes on fresh seeds, mean return with a 95% CI."""

from __future__ import annotations

from typing import Optional

from physai.report.format import fmt, video_lines
from physai.report.video import record_episode, try_video
from physai.train.evaluation import ReturnFigures, episode_returns, evaluation_seeds, summarize_returns
from physai.train.sb3 import load_trained_policy


class EvalSummary(ReturnFigures):
    """The trained checkpoint's deterministic returns on fresh seeds, and its evaluation video."""

    policy: str
    checkpoint_timesteps: int
    video: Optional[str]          # report/eval_episode.mp4, or None with the reason in video_missing
    video_missing: Optional[str]


REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = ["summary:eval"]
SUMMARY = EvalSummary
VIDEO = "report/eval_episode.mp4"


def run(cfg, ctx) -> EvalSummary:
    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    returns = summarize_returns(episode_returns(ctx.task, trained.predict, seeds), seeds, ctx.task.solved_threshold)
    video, video_missing = try_video(
        lambda: record_episode(ctx.task, trained.predict, seeds[0], ctx.path(VIDEO),
                               max_frames=cfg.evaluate.video_max_frames),
        VIDEO, "evaluation video", "evaluate.video", cfg.evaluate.video)
    figures = EvalSummary(**returns, policy="checkpoints/final (stable-baselines3, deterministic)",
                          checkpoint_timesteps=trained.timesteps, video=video, video_missing=video_missing)
    ctx.record("eval", figures)
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """The evaluation video (or why there is none) and the returns of the trained policy and its bundle."""
    evaluation = summary.get("eval")
    lines = video_lines("An evaluation episode", evaluation, "video")
    if not evaluation:
        return lines
    lines += ["## Evaluation (deterministic, fresh seeds)", "",
              "| policy | mean return | 95% CI | n | solved threshold | solved |", "|---|---|---|---|---|---|"]
    rows = [("trained (SB3)", evaluation), ("bundle (ONNX)", (summary.get("bundle") or {}).get("eval"))]
    for label, figures in rows:
        if figures:
            lines.append(f"| {label} | {fmt(figures['mean_return'])} | [{fmt(figures['ci95_low'])}, "
                         f"{fmt(figures['ci95_high'])}] | {figures['n_episodes']} | "
                         f"{fmt(figures['solved_threshold'])} | {fmt(figures['solved'])} |")
    return lines + [""]
