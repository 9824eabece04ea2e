"""Evaluate the trained policy under its scenario, staged in the real simulator, beside nominal conditions.

Requested with ``pipeline=synthetic_edge_case`` or by naming the stage in ``pipeline.stages``; it needs a
physai task and a scenario whose kicks the simulator can push, and refuses others before anything trains.

``evaluate.scenario_reference=RUN_DIR`` adds another run's final policy (say, the same task trained on
nominal data only) to the same episodes, so a run trained with prompted synthetic experience shows
whether the prompt paid off: this run minus the reference, under the scenario and under nominal physics.

The scenario's physics ranges and kicks become events of the task (``physai.synthetic.staging``), so an
edge case the world model was prompted with is measured on real physics. Both conditions run the same
evaluation seeds; the difference is paired episode by episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypedDict

from omegaconf import OmegaConf

from physai.config.compose import CONFIG_FILE
from physai.core.errors import ConfigError
from physai.core.stats import paired_ci95
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
    reference: Optional[dict[str, Any]]  # evaluate.scenario_reference's policy on the same episodes; None if unset


REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = ["summary:scenario_eval"]
SUMMARY = ScenarioEvalSummary


def check(cfg, task) -> None:
    """Before anything trains: the scenario must fit the task and the simulator must be able to stage it, and
    a reference run must hold a final policy for the same task."""
    stage_scenario(task, scenario_of_run(cfg.scenario, task, "scenario_eval"))
    _reference_run(cfg, task)


def _reference_run(cfg, task) -> Optional[tuple[Path, Any]]:
    """The reference run's directory and its saved algo config, checked; None when no reference is set."""
    text = cfg.evaluate.get("scenario_reference")
    if not text:
        return None
    run_dir = Path(str(text))
    key = f"evaluate.scenario_reference={text}"
    checkpoint = run_dir / "checkpoints" / "final"
    if not (run_dir / CONFIG_FILE).is_file() or not (checkpoint / "model.zip").is_file():
        raise ConfigError(f"{key}: not a finished physai run (it needs {CONFIG_FILE} and checkpoints/final/model.zip); "
                          f"point at the run directory of a completed `python train.py` run")
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    if saved.env.id != task.id:
        raise ConfigError(f"{key}: that run trained {saved.env.id}, this one {task.id}; compare policies of one task")
    return run_dir, saved.algo


def run(cfg, ctx) -> ScenarioEvalSummary:
    staged, record = stage_scenario(ctx.task, scenario_of_run(cfg.scenario, ctx.task, "scenario_eval"))
    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    threshold = ctx.task.solved_threshold
    nominal = episode_returns(ctx.task, trained.predict, seeds)
    under_scenario = episode_returns(staged, trained.predict, seeds)
    reference = _reference_run(cfg, ctx.task)
    compared = None
    if reference is not None:
        run_dir, algo = reference
        other = load_trained_policy(algo, run_dir / "checkpoints" / "final", ctx.task, run_dir=run_dir)
        other_nominal = episode_returns(ctx.task, other.predict, seeds)
        other_scenario = episode_returns(staged, other.predict, seeds)
        compared = {"run_dir": str(run_dir), "algo": str(algo.name),
                    "nominal": summarize_returns(other_nominal, seeds, threshold),
                    "under_scenario": summarize_returns(other_scenario, seeds, threshold),
                    "this_minus_reference_under_scenario": _paired(under_scenario, other_scenario),
                    "this_minus_reference_nominal": _paired(nominal, other_nominal)}
    figures = ScenarioEvalSummary(
        scenario=str(cfg.scenario.name), edge_case=bool(cfg.scenario.edge_case), staged=record,
        policy="checkpoints/final (stable-baselines3, deterministic)",
        nominal=summarize_returns(nominal, seeds, threshold),
        under_scenario=summarize_returns(under_scenario, seeds, threshold),
        difference=_paired(under_scenario, nominal), reference=compared)
    ctx.record("scenario_eval", figures)
    ctx.tracker.log({"scenario_eval/nominal_return": figures["nominal"]["mean_return"],
                     "scenario_eval/scenario_return": figures["under_scenario"]["mean_return"]})
    return figures


def _paired(first: list[float], second: list[float]) -> dict[str, float]:
    """first - second, paired episode by episode: mean, 95% CI and n."""
    stats = paired_ci95(first, second)
    return {key: stats[key] for key in ("mean", "ci95_low", "ci95_high", "n")}


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
    lines += ["", f"Scenario minus nominal, paired by seed: {_ci(difference)} (95% CI, n = {difference['n']}).", ""]
    reference = section.get("reference")
    if reference:
        lines += [f"### This run against the reference `{reference['run_dir']}` ({reference['algo']})", "",
                  "| policy | nominal | under the scenario |", "|---|---|---|"]
        for label, figures in (("this run", section), ("reference", reference)):
            lines.append(f"| {label} | {_ci_of(figures['nominal'])} | {_ci_of(figures['under_scenario'])} |")
        gain = reference["this_minus_reference_under_scenario"]
        lines += ["", f"This run minus the reference, paired by seed: {_ci(gain)} under the scenario, "
                      f"{_ci(reference['this_minus_reference_nominal'])} under nominal physics (95% CIs). "
                      + ("This run is ahead under the scenario (the CI lies above 0)." if gain["ci95_low"] > 0 else
                         "No gain under the scenario is established at 95%."), ""]
    return lines


def _ci(stats: dict[str, float]) -> str:
    return f"{fmt(stats['mean'])} [{fmt(stats['ci95_low'])}, {fmt(stats['ci95_high'])}]"


def _ci_of(figures: dict[str, Any]) -> str:
    return f"{fmt(figures['mean_return'])} [{fmt(figures['ci95_low'])}, {fmt(figures['ci95_high'])}]"
