"""Generate synthetic experience from a scenario prompt through the world model (datasets/synthetic).

Branches start from real states (MBPO) or from the scenario's ranges, under the physics the
scenario asks for; each kept transition carries its provenance (model hash, scenario, seed,
branch depth, uncertainty, parent real state).
"""

from __future__ import annotations

from typing import Any, Optional, TypedDict

import numpy as np
import torch

from physai.core.errors import ConfigError
from physai.report.dream_video import record_dream_vs_real
from physai.report.format import fmt, video_lines
from physai.report.video import try_video
from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET, WORLD_MODEL_FILE, dataset_id
from physai.synthetic.collect import make_action_fn
from physai.synthetic.dataset import Episode, ProvenanceTables, read_dataset, write_dataset
from physai.synthetic.imagine import branch_episodes, imagine
from physai.synthetic.scenario import ScenarioError, sample_starts, scenario_of_run
from physai.synthetic.staging import stage_scenario
from physai.synthetic.trust import context_extrapolation, staged_model_report, trust_rows
from physai.synthetic.world_model import EnsembleDynamicsModel


class SynthesizeSummary(TypedDict):
    """The synthetic dataset: the scenario that prompted it, the model, and why branches stopped."""

    scenario: dict[str, Any]
    model_id: str
    model_hash: str
    policy: str
    branches: int
    transitions: int
    seconds: float
    transitions_per_s: float
    mean_depth: float
    stopped_uncertain: int
    stopped_nonfinite: int
    terminated: int
    dataset: str
    dream_video: Optional[str]
    dream_video_missing: Optional[str]
    # How far the model holds for this scenario: extrapolation beyond the real data's physics, branches
    # cut by disagreement, and the model's report on real episodes of the staged scenario (or why none).
    trust: dict[str, Any]


REQUIRES = [WORLD_MODEL_FILE, REAL_DATASET]
PRODUCES = [SYNTHETIC_DATASET, "summary:synthesize"]
SUMMARY = SynthesizeSummary
DREAM_VIDEO = "report/dream_vs_real.mp4"
# The trust episodes' seeds: the upper half of this run's collect block (collect uses seed x 100,000 onward),
# apart from every evaluation seed (1,000,000 + seed x 10,000 onward).
TRUST_SEED_OFFSET = 50_000


def check(cfg, task) -> None:
    """Before anything trains: the scenario's columns and ranges must fit the task."""
    scenario_of_run(cfg.scenario, task, "synthesize")


def run(cfg, ctx) -> SynthesizeSummary:
    torch.set_num_threads(cfg.algo.torch_threads)  # small nets: one thread each beats contention on a busy box
    settings = cfg.synthetic.synthesize
    scenario = scenario_of_run(cfg.scenario, ctx.task, "synthesize")
    env = ctx.task.make()
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    model = EnsembleDynamicsModel.load(ctx.path(WORLD_MODEL_FILE), expected_task_id=cfg.env.id,
                                       expected_obs_dim=int(np.prod(observation_space.shape)),
                                       expected_act_dim=int(np.prod(action_space.shape)))
    real = read_dataset(ctx.path(REAL_DATASET), expected_task_id=cfg.env.id, observation_space=observation_space,
                        action_space=action_space)
    uses_context = model.context_dim > 0
    rng = np.random.default_rng([cfg.seed, 7])
    starts = sample_starts(scenario, rng, real.transitions.obs,
                           real.transitions.context if uses_context else None, real.transitions.state_id)
    policy, policy_description = make_action_fn(settings.policy, action_space, rng, bundle=settings.bundle)
    imagined = imagine(model, policy, starts, scenario.horizon, scenario.max_disagreement, rng, scenario)
    episodes = [Episode.synthetic(e["observations"], e["actions"], e["rewards"], e["terminations"],
                                  e["truncations"], seed=cfg.seed, parent_state_id=int(starts.parent_state_id[e["branch"]]),
                                  model_index=0, scenario=0, uncertainty=e["uncertainty"],
                                  branch_depth=e["branch_depth"], context=e["context"])
                for e in branch_episodes(imagined)]
    figures: SynthesizeSummary = {
        "scenario": scenario.describe(), "model_id": model.model_id, "model_hash": model.model_hash,
        "policy": policy_description, **imagined.stats}
    if not episodes:
        raise ConfigError(f"scenario {scenario.name!r}: every branch stopped at its first step (uncertainty above "
                          f"max_disagreement={scenario.max_disagreement}, or non-finite predictions: "
                          f"{imagined.stats}); raise scenario.max_disagreement or collect more real data")
    write_dataset(ctx.path(SYNTHETIC_DATASET), episodes, dataset_id=dataset_id(cfg.env.id, "synthetic"),
                  kind="synthetic", task_id=cfg.env.id, observation_space=observation_space,
                  action_space=action_space,
                  provenance_tables=ProvenanceTables(model_hashes=(model.model_hash,),
                                                     scenario_names=(scenario.name,),
                                                     context_names=tuple(model.config.context_names),
                                                     parent_dataset_id=real.dataset_id),
                  generator_info={"scenario": scenario.describe(), "model_id": model.model_id,
                                  "policy": policy_description, "seed": cfg.seed})
    figures["dataset"] = SYNTHETIC_DATASET
    figures["trust"] = _trust(cfg, ctx.task, scenario, model, real, policy, imagined.stats)
    figures["dream_video"], figures["dream_video_missing"] = try_video(
        lambda: record_dream_vs_real(ctx.task, model, real, ctx.path(DREAM_VIDEO), steps=settings.dream_steps),
        DREAM_VIDEO, "dream video", "synthetic.synthesize.dream_video", settings.dream_video)
    ctx.record("synthesize", figures)
    return figures


def _trust(cfg, task, scenario, model, real, policy, stats: dict[str, Any]) -> dict[str, Any]:
    trust: dict[str, Any] = {
        "extrapolation": context_extrapolation(scenario, real.transitions.context,
                                               real.provenance_tables.context_names),
        "cut_by_disagreement": stats["stopped_uncertain"] / max(1, stats["branches"]),
        "staged": None, "not_staged": None, "episodes": 0, "transitions": 0, "report": None}
    steps = cfg.synthetic.synthesize.trust_steps
    if not steps:
        trust["not_staged"] = "switched off (synthetic.synthesize.trust_steps=0)"
        return trust
    try:  # the physics only: a dream applies the kicks itself, so no model is asked to predict one
        staged, trust["staged"] = stage_scenario(task, scenario, kicks=False)
    except ScenarioError as exc:
        trust["not_staged"] = str(exc)
        return trust
    trust.update(staged_model_report(model, real.transitions, staged, policy, steps,
                                     seed=cfg.seed * 100_000 + TRUST_SEED_OFFSET,
                                     horizons=cfg.synthetic.world_model.open_loop_horizons))
    return trust


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """How far the model can be trusted for the scenario, and the dream-vs-real video."""
    section = summary.get("synthesize")
    lines = video_lines("The world model's dream beside the simulator", section, "dream_video")
    if not section or not section.get("trust"):
        return lines
    trust, name = section["trust"], section["scenario"]["name"]
    lines += [f"## How far the world model can be trusted for `{name}`", "",
              f"Branches cut by ensemble disagreement: {fmt(100 * trust['cut_by_disagreement'])}% of "
              f"{section['branches']}.", ""]
    for context, figures in trust["extrapolation"].items():
        real = ("never recorded" if figures["real"] is None
                else f"[{fmt(figures['real'][0])}, {fmt(figures['real'][1])}]")
        verdict = ("within the real data" if not figures["extrapolation"] else
                   f"**extrapolation**: {fmt(figures['outside_by'])} beyond the real data "
                   f"({fmt(figures['outside_spans'])} of its span)")
        lines.append(f"- `{context}`: scenario [{fmt(figures['scenario'][0])}, {fmt(figures['scenario'][1])}], "
                     f"real data {real}: {verdict}")
    if trust["report"] is None:
        lines += ["", f"Not measured on real physics: {trust['not_staged']}", ""]
        return lines
    nominal = (summary.get("world_model") or {}).get("report")
    lines += ["", f"The model on {trust['transitions']} real transitions ({trust['episodes']} episodes) collected "
                  f"under the scenario staged in the simulator, beside the nominal held-out data:", "",
              "| data | n | one-step MSE: model / linear / identity | NLL per dim | open loop h = 1 / 10 | "
              "90% coverage |", "|---|---|---|---|---|---|"]
    for label, n, mse, linear, identity, nll, h1, h10, coverage in trust_rows(nominal, trust["report"]):
        lines.append(f"| {label} | {n} | {fmt(mse)} / {fmt(linear)} / {fmt(identity)} | {fmt(nll)} | "
                     f"{fmt(h1)} / {fmt(h10)} | {fmt(coverage)} |")
    return lines + [""]
