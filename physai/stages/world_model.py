"""Train the world model on the collected real transitions, report it against naive baselines, save it."""

from __future__ import annotations

from typing import Any, Optional, TypedDict

import numpy as np
import torch

from physai.report.format import save_png
from physai.synthetic.artifacts import REAL_DATASET, WORLD_MODEL_FILE
from physai.synthetic.dataset import read_dataset
from physai.synthetic.model_report import model_report, open_loop_figure, transition_split
from physai.synthetic.world_model import EnsembleDynamicsModel


class WorldModelSummary(TypedDict):
    """The fitted ensemble: identity, data split, fit history and the held-out report."""

    model_id: str
    model_hash: str
    file: str
    members: int
    elites: int
    context_names: list[str]
    train_transitions: int
    report_transitions: int
    report_episodes: int
    training: dict[str, Any]
    report: Optional[dict[str, Any]]
    open_loop_plot: Optional[str]


REQUIRES = [REAL_DATASET]
PRODUCES = [WORLD_MODEL_FILE, "summary:world_model"]
SUMMARY = WorldModelSummary
OPEN_LOOP_PLOT = "report/world_model_open_loop.png"


def split_episodes(num_episodes: int, heldout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Whole episodes go to the report's held-out set, so open-loop error is measured on unseen runs."""
    order = rng.permutation(num_episodes)
    heldout = max(1, int(round(heldout_fraction * num_episodes))) if num_episodes > 1 else 0
    return np.sort(order[heldout:]), np.sort(order[:heldout])


def run(cfg, ctx) -> WorldModelSummary:
    torch.set_num_threads(cfg.algo.torch_threads)  # small nets: one thread each beats contention on a busy box
    settings = cfg.synthetic.world_model
    env = ctx.task.make()
    data = read_dataset(ctx.path(REAL_DATASET), expected_task_id=cfg.env.id,
                        observation_space=env.observation_space, action_space=env.action_space)
    env.close()
    rows = data.transitions
    context_names = list(data.provenance_tables.context_names) if settings.use_context else []
    rng = np.random.default_rng(cfg.seed)
    train_episodes, report_episodes = split_episodes(data.num_episodes, settings.report_episode_fraction, rng)
    in_train = np.isin(rows.episode_index, train_episodes) if report_episodes.size else np.ones(len(rows), bool)

    train, heldout = (transition_split(rows.select(mask), bool(context_names)) for mask in (in_train, ~in_train))
    model = EnsembleDynamicsModel(rows.obs.shape[1], rows.act.reshape(len(rows), -1).shape[1],
                                  context_dim=len(context_names), members=settings.members, elites=settings.elites,
                                  hidden=settings.hidden, layers=settings.layers, seed=cfg.seed,
                                  context_names=context_names, learning_rate=settings.learning_rate,
                                  obs_names=ctx.task.signal_names()[0])
    training = model.fit(train["obs"], train["act"], train["next_obs"], train["reward"], train["terminated"],
                         train["context"], holdout_fraction=settings.holdout_fraction, batch_size=settings.batch_size,
                         max_epochs=settings.max_epochs, max_seconds=settings.max_seconds,
                         patience=settings.patience, rng_seed=cfg.seed)
    episodes = []
    for index in report_episodes:
        episode = data.episode(int(index))
        episodes.append({"obs": episode.observations, "act": episode.actions,
                         "context": episode.context if context_names else None})
    report = (model_report(model, train, heldout, episodes, horizons=tuple(settings.open_loop_horizons))
              if len(heldout["obs"]) else None)
    model_hash = model.save(ctx.path(WORLD_MODEL_FILE), task_id=cfg.env.id, obs_space_shape=rows.obs.shape[1:],
                            act_space_shape=rows.act.shape[1:],
                            extra_metadata={"dataset_id": data.dataset_id, "dataset_sha256":
                                            data.metadata["files"]["main_data.hdf5"]["sha256"]})
    figures = WorldModelSummary(
        model_id=model.model_id, model_hash=model_hash, file=WORLD_MODEL_FILE, members=settings.members,
        elites=settings.elites, context_names=context_names, train_transitions=int(in_train.sum()),
        report_transitions=int((~in_train).sum()), report_episodes=int(report_episodes.size), training=training,
        report=report, open_loop_plot=None)
    if report is not None and "open_loop" in report:
        figure = open_loop_figure(report["open_loop"])
        figure.suptitle(f"{cfg.env.id}: world model vs baselines, open loop")
        save_png(figure, ctx.path(OPEN_LOOP_PLOT), dpi=110)
        figures["open_loop_plot"] = OPEN_LOOP_PLOT
    ctx.record("world_model", figures)
    return figures
