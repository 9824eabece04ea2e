"""How far a world model can be trusted for one scenario, measured before its dreams train anything.

Two questions, answered from real data:

* **Does the model hold under the scenario's physics?** The scenario is staged in the real simulator
  (``physai.synthetic.staging``), a few episodes are collected there with the synthesize stage's
  policy, and the model's one-step error, open-loop error and variance calibration on them are set
  beside the same figures on the nominal held-out data (the world_model stage's report).
* **Does the scenario ask for physics the real data never covered?** Each context range of the
  scenario is compared with the range the real dataset's draws spanned; a range reaching beyond it is
  flagged as extrapolation, with how far, in units of the real span.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from physai.synthetic.collect import ActionFn, collect_episodes
from physai.synthetic.dataset import Episode, TransitionBatch
from physai.synthetic.model_report import model_report, transition_split
from physai.synthetic.scenario import Scenario
from physai.synthetic.world_model import EnsembleDynamicsModel


def context_extrapolation(scenario: Scenario, real_context: Optional[np.ndarray],
                          real_context_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per context name the scenario asks for: its range, the real data's range, and how far beyond it lies."""
    figures = {}
    for index, (low, high) in scenario.context_ranges.items():
        name = scenario.context_names[index]
        if real_context is None or name not in real_context_names:
            figures[name] = {"scenario": [low, high], "real": None, "outside_by": None, "outside_spans": None,
                             "extrapolation": True, "why": "the real data never recorded this draw"}
            continue
        column = np.asarray(real_context[:, list(real_context_names).index(name)], dtype=np.float64)
        real_low, real_high = float(column.min()), float(column.max())
        outside = max(0.0, real_low - low, high - real_high)
        span = real_high - real_low
        figures[name] = {"scenario": [low, high], "real": [real_low, real_high], "outside_by": outside,
                         "outside_spans": outside / span if span > 0 else (0.0 if outside == 0 else None),
                         "extrapolation": outside > 0}
    return figures


def staged_model_report(model: EnsembleDynamicsModel, real: TransitionBatch, staged_task: Any, act: ActionFn,
                        steps: int, seed: int, horizons: Sequence[int]) -> dict[str, Any]:
    """The world model's report on real episodes collected under the staged scenario."""
    episodes: list[Episode] = collect_episodes(staged_task, steps, act, seed, progress=False)
    with_context = model.context_dim > 0
    staged = TransitionBatch.concatenate([e.transitions() for e in episodes])
    report = model_report(model, transition_split(real, with_context), transition_split(staged, with_context),
                          [{"obs": e.observations, "act": e.actions, "context": e.context if with_context else None}
                           for e in episodes], horizons=tuple(horizons))
    return {"episodes": len(episodes), "transitions": len(staged), "report": report}


def trust_rows(nominal: Optional[Mapping[str, Any]], staged: Optional[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """Table cells for the report: one-step MSE (model, linear, identity), NLL, open loop, 90% coverage."""
    rows = []
    for label, report in (("held-out real data, nominal", nominal), ("real data under the scenario", staged)):
        if not report:
            continue
        one_step, open_loop, calibration = report["one_step"], report["open_loop"], report.get("calibration")
        horizons = open_loop["horizons"]
        at = {h: e for h, e in zip(horizons, open_loop["state_error"]["model"])}
        rows.append((label, str(one_step["model"]["n"]), one_step["model"]["next_obs_mse"],
                     one_step["linear"]["next_obs_mse"], one_step["identity"]["next_obs_mse"],
                     one_step["model"]["nll_normalized_per_dim"], at.get(1), at.get(10),
                     None if calibration is None else calibration["coverage"]["0.9"]))
    return rows
