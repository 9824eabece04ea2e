"""Evaluate the trained policy under its scenario, staged in the real simulator, beside nominal conditions.

Requested with ``pipeline=synthetic_edge_case`` or by naming the stage in ``pipeline.stages``; it needs a
physai task and a scenario whose kicks the simulator can push, and refuses others before anything trains.

The scenario's physics ranges and kicks become events of the task (``physai.synthetic.staging``), so an
edge case the world model was prompted with is measured on real physics. Both conditions run the same
evaluation seeds; the difference is paired episode by episode.
"""

from __future__ import annotations

from typing import Any, TypedDict

from physai.core.stats import mean_ci95
from physai.report.format import fmt
from physai.synthetic.scenario import scenario_of_run
from physai.synthetic.staging import stage_scenario, staged_description
from physai.train.evaluation import ReturnFigures, episode_returns, evaluation_seeds, summarize_returns
from physai.train.sb3 import load_trained_policy


class ScenarioEvalSummary(TypedDict):
    """Returns under nominal physics and under the staged scenario, on the same seeds, and their difference."""

    scenario: str
    edge_case: bool
    staged: dict[str, Any]       # the physics ranges and push events the simulator applied
    policy: str
    nominal: ReturnFigures
    under_scenario: ReturnFigures
    difference: dict[str, float]  # scenario - nominal, paired by seed: mean, ci95_low, ci95_high, n


REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = ["summary:scenario_eval"]
SUMMARY = ScenarioEvalSummary


def check(cfg, task) -> None:
    """Before anything trains: the scenario must fit the task and the simulator must be able to stage it."""
    stage_scenario(task, scenario_of_run(cfg.scenario, task, "scenario_eval"))


def run(cfg, ctx) -> ScenarioEvalSummary:
    staged, record = stage_scenario(ctx.task, scenario_of_run(cfg.scenario, ctx.task, "scenario_eval"))
    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    threshold = ctx.task.solved_threshold
    nominal = episode_returns(ctx.task, trained.predict, seeds)
    under_scenario = episode_returns(staged, trained.predict, seeds)
    paired = mean_ci95([s - n for s, n in zip(under_scenario, nominal)])
    figures = ScenarioEvalSummary(
        scenario=str(cfg.scenario.name), edge_case=bool(cfg.scenario.edge_case), staged=record,
        policy="checkpoints/final (stable-baselines3, deterministic)",
        nominal=summarize_returns(nominal, seeds, threshold),
        under_scenario=summarize_returns(under_scenario, seeds, threshold),
        difference={key: paired[key] for key in ("mean", "ci95_low", "ci95_high", "n")})
    ctx.record("scenario_eval", figures)
    ctx.tracker.log({"scenario_eval/nominal_return": figures["nominal"]["mean_return"],
                     "scenario_eval/scenario_return": figures["under_scenario"]["mean_return"]})
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """The policy's return under the staged scenario beside nominal physics, with the paired difference."""
    section = summary.get("scenario_eval")
    if not section:
        return []
    difference = section["difference"]
    lines = [f"## Scenario `{section['scenario']}` staged in the simulator", "",
             f"Staged as {staged_description(section['staged']) or 'nominal physics (nothing to stage)'}.", "",
             "| condition | mean return | 95% CI | n | solved |", "|---|---|---|---|---|"]
    for label, figures in (("nominal", section["nominal"]), (section["scenario"], section["under_scenario"])):
        lines.append(f"| {label} | {fmt(figures['mean_return'])} | [{fmt(figures['ci95_low'])}, "
                     f"{fmt(figures['ci95_high'])}] | {figures['n_episodes']} | {fmt(figures['solved'])} |")
    lines += ["", f"Scenario minus nominal, paired by seed: {fmt(difference['mean'])} "
                  f"[{fmt(difference['ci95_low'])}, {fmt(difference['ci95_high'])}] (95% CI, n = {difference['n']}).",
              ""]
    return lines
