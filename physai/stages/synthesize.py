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
from physai.report.format import video_lines
from physai.report.video import try_video
from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET, WORLD_MODEL_FILE, dataset_id
from physai.synthetic.collect import make_action_fn
from physai.synthetic.dataset import Episode, ProvenanceTables, read_dataset, write_dataset
from physai.synthetic.imagine import branch_episodes, imagine
from physai.synthetic.scenario import resolve_scenario, sample_starts
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


REQUIRES = [WORLD_MODEL_FILE, REAL_DATASET]
PRODUCES = [SYNTHETIC_DATASET, "summary:synthesize"]
SUMMARY = SynthesizeSummary
DREAM_VIDEO = "report/dream_vs_real.mp4"


def check(cfg, task) -> None:
    """Before anything trains: the scenario's columns and ranges must fit the task."""
    resolved_scenario(cfg, task)


def resolved_scenario(cfg, task):
    """The run's scenario checked against its task (names, ranges); refused before any work."""
    if cfg.scenario is None:
        raise ConfigError("pipeline.stages runs 'synthesize' but no scenario is chosen; pick one with "
                          "scenario=<task>/<name> (the library is configs/scenario/)")
    observation_names, context_names = task.signal_names()
    return resolve_scenario(cfg.scenario, cfg.env.id, observation_names, context_names)


def run(cfg, ctx) -> SynthesizeSummary:
    torch.set_num_threads(cfg.algo.torch_threads)  # small nets: one thread each beats contention on a busy box
    settings = cfg.synthetic.synthesize
    scenario = resolved_scenario(cfg, ctx.task)
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
    figures["dream_video"], figures["dream_video_missing"] = try_video(
        lambda: record_dream_vs_real(ctx.task, model, real, ctx.path(DREAM_VIDEO), steps=settings.dream_steps),
        DREAM_VIDEO, "dream video", "synthetic.synthesize.dream_video", settings.dream_video)
    ctx.record("synthesize", figures)
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """The dream-vs-real video, or why there is none."""
    return video_lines("The world model's dream beside the simulator", summary.get("synthesize"), "dream_video")
