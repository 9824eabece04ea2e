"""Train a policy with the configured SB3 algorithm (or rsl-rl's PPO), checkpointing as it goes."""

from __future__ import annotations

from typing import Any, Optional, TypedDict

from physai.report.curves import plot_learning_curve, plot_reward_terms
from physai.core.errors import ConfigError
from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET
from physai.synthetic.scenario import Scenario, scenario_of_run
from physai.train.distill import check_teacher_source, prepare_teacher
from physai.train.evaluation import ReturnFigures, evaluation_seeds
from physai.train.periodic_eval import Evaluation, PeriodicEvaluation
from physai.train.rsl_ppo import check_rsl_ppo, train_rsl_ppo
from physai.train.sb3 import CURVE_FILE, read_curve, train_policy
from physai.train.study import StudyTrial, TrialPruned, running_trial


class TrainSummary(TypedDict):
    """What was trained: the final checkpoint, its step count and where training resumed."""

    checkpoint: str
    timesteps: int
    resumed_from_step: Optional[int]
    episodes: int
    algo: str
    env_id: str
    total_timesteps: int
    n_envs: int
    model_based: Optional[dict[str, Any]]  # MBPO's model fits, rollouts and synthetic share; None model-free
    teacher: Optional[dict[str, Any]]      # distillation: where the teacher came from; None otherwise
    distillation: Optional[dict[str, int]]  # DAgger rounds, frames seen and labelled; None otherwise
    evaluations: Optional[list[Evaluation]]  # during training (evaluate.interval_steps); None when off
    pruned_at_step: Optional[int]          # a sweep's pruner stopped training there; None otherwise


REQUIRES: list[str] = []
PRODUCES = ["checkpoints/final/model.zip", CURVE_FILE, "summary:train"]
OPTIONAL = [REAL_DATASET, SYNTHETIC_DATASET]  # a model-based learner warm-starts from them
SUMMARY = TrainSummary


def _prompt(cfg, task) -> Optional[Scenario]:
    """The scenario MBPO's prompted branches start from, when ``algo.prompt_share`` asks for them."""
    share = float(cfg.algo.get("prompt_share", 0.0))
    if share <= 0:
        return None
    scenario = scenario_of_run(cfg.get("scenario"), task, f"train with algo.prompt_share={share}")
    if scenario.context_ranges and not cfg.synthetic.world_model.use_context:
        names = [scenario.context_names[i] for i in scenario.context_ranges]
        raise ConfigError(f"algo.prompt_share={share}: scenario {scenario.name!r} imagines physics context {names}, "
                          f"but synthetic.world_model.use_context=false; set it true so the world model can be "
                          f"prompted with that physics")
    return scenario


def check(cfg, task) -> None:
    """Before anything trains: a prompted learner needs a scenario its world model can imagine, and a distilling
    one a camera task and a teacher that fits it."""
    _prompt(cfg, task)
    spec = getattr(task, "task_spec", None)
    if spec is not None and spec.pixels is not None and cfg.algo.normalize_obs:
        raise ConfigError(f"env {task.id} gives the policy camera images, and algo.normalize_obs=true normalizes "
                          f"flat observations only; set algo.normalize_obs=false (images are scaled inside the "
                          f"network)")
    if cfg.algo.name == "distill":
        check_teacher_source(cfg.algo, task)
    if cfg.algo.name == "rsl_ppo":
        check_rsl_ppo(cfg, task)


def _periodic_evaluation(cfg, ctx, trial: Optional[StudyTrial]) -> Optional[PeriodicEvaluation]:
    """Evaluations during training when evaluate.interval_steps asks for them, reported to the run's optuna
    ``trial`` (and judged by its pruner) when there is one."""
    if not cfg.evaluate.interval_steps:
        return None

    def on_evaluation(step: int, figures: ReturnFigures) -> bool:
        ctx.tracker.log({"train/eval_mean_return": figures["mean_return"], "train/eval_step": step})
        return trial is None or not trial.report(step, figures["mean_return"])

    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.interval_episodes)
    return PeriodicEvaluation(ctx.task, cfg.evaluate.interval_steps, seeds, on_evaluation)


def run(cfg, ctx) -> TrainSummary:
    teacher, teacher_figures = None, None
    if cfg.algo.name == "distill":
        teacher, teacher_figures = prepare_teacher(cfg.algo, ctx.task, cfg.seed, ctx.run_dir, ctx.tracker, cfg.resume)
    if cfg.algo.name == "rsl_ppo":
        figures = train_rsl_ppo(ctx.task, cfg.algo, cfg.seed, ctx.run_dir, ctx.tracker, resume=cfg.resume)
        figures.update({"algo": cfg.algo.name, "env_id": cfg.env.id, "total_timesteps": cfg.algo.total_timesteps,
                        "n_envs": cfg.algo.n_envs, "teacher": None, "evaluations": None, "pruned_at_step": None})
        ctx.record("train", figures)
        return figures
    reporting = cfg.evaluate.interval_steps and cfg.sweep.trial is not None
    trial = running_trial(cfg.sweep, cfg.seed) if reporting else None
    try:
        evaluator = _periodic_evaluation(cfg, ctx, trial)
        figures = train_policy(ctx.task, cfg.algo, cfg.seed, ctx.run_dir, ctx.tracker, resume=cfg.resume,
                               world_model=cfg.synthetic.world_model, prompt=_prompt(cfg, ctx.task), teacher=teacher,
                               callbacks=[evaluator] if evaluator else [])
    finally:
        if trial is not None:
            trial.close()
    pruned_at = evaluator.last["step"] if evaluator and evaluator.stopped_training else None
    figures.update({"algo": cfg.algo.name, "env_id": cfg.env.id, "total_timesteps": cfg.algo.total_timesteps,
                    "n_envs": cfg.algo.n_envs, "teacher": teacher_figures,
                    "evaluations": evaluator.evaluations if evaluator else None, "pruned_at_step": pruned_at})
    ctx.record("train", figures)
    if pruned_at is not None:  # the checkpoint and this summary stand; the stages after train do not run
        raise TrialPruned(pruned_at, evaluator.last)
    return figures


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """Steps trained, the learning curve and the reward terms' curves."""
    train = summary.get("train")
    lines = [f"Trained {train['timesteps']} steps with {train['n_envs']} env(s).", ""] if train else []
    rows = read_curve(ctx.path(CURVE_FILE))
    curve_png, terms_png = ctx.path("report", "learning_curve.png"), ctx.path("report", "reward_terms.png")
    if plot_learning_curve(rows, curve_png, (summary.get("eval") or {}).get("solved_threshold")):
        lines += ["![learning curve](learning_curve.png)", ""]
        ctx.tracker.log_image("report/learning_curve", curve_png)
    if plot_reward_terms(rows, terms_png):
        lines += ["Reward terms (episode sums):", "", "![reward terms](reward_terms.png)", ""]
        ctx.tracker.log_image("report/reward_terms", terms_png)
    return lines
