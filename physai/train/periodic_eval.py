"""Evaluations during training: what a sweep's pruner judges a trial by.

Every ``evaluate.interval_steps`` env steps the deterministic policy plays the first
``evaluate.interval_episodes`` of the run's evaluation seeds, with the evaluate stage's own code
(``physai.train.evaluation``). It runs at the first rollout start at or after each multiple of the
interval, right after an update, and is reported at that multiple, so trials of a sweep are compared
at the same steps. Whoever listens (``on_evaluation``) may stop training there: SB3 then leaves at the
next env step, before storing it, and the train stage ends the run as pruned (``physai.train.study.TrialPruned``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, TypedDict

from stable_baselines3.common.callbacks import BaseCallback

from physai.train.evaluation import ReturnFigures, episode_returns, summarize_returns
from physai.train.sb3 import TrainedPolicy


class Evaluation(TypedDict):
    """One evaluation during training, as the train stage's summary lists it."""

    step: int                 # the multiple of evaluate.interval_steps it stands for
    timesteps: int            # env steps trained when it ran (the rollout start at or after ``step``)
    mean_return: float
    ci95_low: float
    ci95_high: float
    n_episodes: int


class PeriodicEvaluation(BaseCallback):
    """``on_evaluation(step, figures) -> bool``: False stops training (``stopped_training`` is then set)."""

    def __init__(self, task: Any, every_steps: int, seeds: Sequence[int],
                 on_evaluation: Callable[[int, ReturnFigures], bool]) -> None:
        super().__init__()
        self.task, self.every_steps, self.seeds = task, int(every_steps), list(seeds)
        self.on_evaluation = on_evaluation
        self.evaluations: list[Evaluation] = []
        self.stopped_training = False
        self.next_step = self.every_steps

    def _init_callback(self) -> None:
        # A resumed run evaluates from the next multiple on.
        self.next_step = (int(self.model.num_timesteps) // self.every_steps + 1) * self.every_steps

    def _on_rollout_start(self) -> None:
        steps = int(self.model.num_timesteps)
        if self.stopped_training or steps < self.next_step:
            return
        step = (steps // self.every_steps) * self.every_steps
        self.next_step = step + self.every_steps
        policy = TrainedPolicy(self.model, None, self.model.get_vec_normalize_env())  # acts as the evaluate stage's
        figures = summarize_returns(episode_returns(self.task, policy.predict, self.seeds), self.seeds,
                                    self.task.solved_threshold)
        self.evaluations.append(Evaluation(step=step, timesteps=steps, mean_return=figures["mean_return"],
                                           ci95_low=figures["ci95_low"], ci95_high=figures["ci95_high"],
                                           n_episodes=figures["n_episodes"]))
        if not self.on_evaluation(step, figures):
            self.stopped_training = True

    def _on_step(self) -> bool:
        return not self.stopped_training

    @property
    def last(self) -> Optional[Evaluation]:
        return self.evaluations[-1] if self.evaluations else None
