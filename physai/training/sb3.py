"""Build, train, checkpoint and reload stable-baselines3 policies from the ``algo`` config."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from physai.config.schema import ALGO_FRAMEWORK_KEYS
from physai.io import write_text_atomic
from physai.training.checkpoints import (FINAL_NAME, MODEL_FILE, REPLAY_FILE, latest_checkpoint, save_checkpoint,
                                         step_name)
from physai.training.normalization import (NORMALIZATION_FILE, ObsNormalization, load_obs_normalization,
                                           restore_vecnormalize)

log = logging.getLogger(__name__)

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}
CURVE_FILE = "train_curve.csv"
CURVE_FIELDS = ("timesteps", "episode_return", "episode_length")
TERM_PREFIX = "reward_term/"


def build_vec_env(task, algo: DictConfig, seed: int) -> Any:
    venv = task.make_sb3_vec_env(algo.n_envs, seed)
    if algo.normalize_obs or algo.normalize_reward:
        venv = VecNormalize(venv, norm_obs=algo.normalize_obs, norm_reward=algo.normalize_reward,
                            clip_obs=algo.clip_obs, gamma=algo.gamma)
    return venv


def algorithm_kwargs(algo: DictConfig) -> dict[str, Any]:
    kwargs = {k: v for k, v in OmegaConf.to_container(algo, resolve=True).items() if k not in ALGO_FRAMEWORK_KEYS}
    policy_kwargs: dict[str, Any] = {"net_arch": list(algo.net_arch),
                                     "activation_fn": ACTIVATIONS[algo.activation],
                                     "log_std_init": algo.log_std_init}
    if "ortho_init" in algo:
        policy_kwargs["ortho_init"] = algo.ortho_init
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def build_model(algo: DictConfig, venv, seed: int) -> BaseAlgorithm:
    algorithm_class = get_class(algo._target_)
    return algorithm_class("MlpPolicy", venv, seed=seed, verbose=0, device="cpu", **algorithm_kwargs(algo))


class TrainingMonitor(BaseCallback):
    """Records episode returns, shows a rich progress bar, writes checkpoints at an interval."""

    def __init__(self, run_dir: Path, algo: DictConfig, tracker, curve: list[dict[str, float]],
                 progress: Progress, task_id: Any) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.algo = algo
        self.tracker = tracker
        self.curve = curve
        self.progress = progress
        self.task_id = task_id
        self.next_checkpoint = 0

    def _on_training_start(self) -> None:
        every = self.algo.checkpoint_every_steps
        self.next_checkpoint = (self.num_timesteps // every + 1) * every

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode:
                row = {"timesteps": self.num_timesteps, "episode_return": float(episode["r"]),
                       "episode_length": int(episode["l"])}
                # physai tasks report each reward term's episode sum: the curves users tune rewards from.
                row.update({f"{TERM_PREFIX}{name}": value for name, value in episode.get("terms", {}).items()})
                self.curve.append(row)
                # No explicit step: several envs can finish on the same timestep, and wandb merges equal steps.
                self.tracker.log({f"train/{key}": value for key, value in row.items()})
        recent = [row["episode_return"] for row in self.curve[-20:]]
        description = f"train  return {np.mean(recent):8.1f}" if recent else "train"
        self.progress.update(self.task_id, completed=self.num_timesteps, description=description)
        if self.num_timesteps >= self.next_checkpoint:
            self.save(step_name(self.num_timesteps))
            self.next_checkpoint += self.algo.checkpoint_every_steps
        return True

    def save(self, name: str, keep: Optional[int] = None) -> Path:
        keep = self.algo.keep_checkpoints if keep is None else keep
        path = save_checkpoint(self.model, self.run_dir / "checkpoints", name,
                               keep=keep if name != FINAL_NAME else None,
                               with_replay_buffer=hasattr(self.model, "replay_buffer"))
        write_curve(self.run_dir / CURVE_FILE, self.curve)
        return path


def write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    terms = sorted({key for row in rows for key in row if key.startswith(TERM_PREFIX)})
    writer = csv.DictWriter(buffer, fieldnames=[*CURVE_FIELDS, *terms])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{"timesteps": int(r["timesteps"]), "episode_return": float(r["episode_return"]),
                 "episode_length": int(r["episode_length"]),
                 **{k: float(v) for k, v in r.items() if k.startswith(TERM_PREFIX) and v not in ("", None)}}
                for r in csv.DictReader(handle)]


def train_policy(task, algo: DictConfig, seed: int, run_dir: Path, tracker, resume: bool) -> dict[str, Any]:
    """Train (or continue) a policy until ``algo.total_timesteps``; return what the run figures need."""
    torch.set_num_threads(algo.torch_threads)
    venv = build_vec_env(task, algo, seed)
    checkpoint = latest_checkpoint(run_dir / "checkpoints") if resume else None
    if checkpoint is not None:
        model = load_checkpoint(algo, checkpoint, venv)
        curve = [row for row in read_curve(run_dir / CURVE_FILE) if row["timesteps"] <= model.num_timesteps]
        log.info("resuming from %s at step %d", checkpoint, model.num_timesteps)
    else:
        if resume:
            log.info("resume=true but %s holds no checkpoint: starting a fresh run", run_dir / "checkpoints")
        model = build_model(algo, venv, seed)
        if hasattr(model, "warm_start"):
            _warm_start_from_run(model, task, run_dir)
        curve = []
    resumed_from = model.num_timesteps
    remaining = max(0, algo.total_timesteps - model.num_timesteps)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task_id = progress.add_task("train", total=algo.total_timesteps, completed=model.num_timesteps)
        monitor = TrainingMonitor(run_dir, algo, tracker, curve, progress, task_id)
        if remaining:
            model.learn(total_timesteps=remaining, callback=monitor, reset_num_timesteps=checkpoint is None)
        else:
            monitor.init_callback(model)
        final = monitor.save(FINAL_NAME)
    venv.close()
    figures = {"checkpoint": str(final.relative_to(run_dir)), "timesteps": int(model.num_timesteps),
               "resumed_from_step": int(resumed_from) if checkpoint is not None else None,
               "episodes": len(curve)}
    if hasattr(model, "mbpo_stats"):  # model-based: refits, synthetic rows, warm start from the run's datasets
        from physai.synthetic.mbpo import training_figures

        figures["model_based"] = training_figures(model)
    return figures


def _warm_start_from_run(model, task, run_dir: Path) -> None:
    """Give a model-based learner the run's collected (real) and generated (synthetic) datasets."""
    from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET
    from physai.synthetic.dataset import read_dataset

    env = task.make()
    loaded = {}
    for name, artifact in (("real", REAL_DATASET), ("synthetic", SYNTHETIC_DATASET)):
        path = run_dir / artifact
        loaded[name] = (read_dataset(path, expected_task_id=task.id, observation_space=env.observation_space,
                                     action_space=env.action_space) if path.exists() else None)
    env.close()
    if any(loaded.values()):
        model.warm_start(**loaded)
        log.info("warm start from the run's datasets: %s", getattr(model, "warm_start_counts", loaded.keys()))


@dataclass
class TrainedPolicy:
    """A checkpoint ready to act: the SB3 model plus SB3's own observation normalizer."""

    model: BaseAlgorithm
    obs_norm: Optional[ObsNormalization]  # the statistics, as folded into the exported graph
    normalizer: Optional[VecNormalize]    # SB3's VecNormalize with those statistics: the reference

    @property
    def timesteps(self) -> int:
        return int(self.model.num_timesteps)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.normalizer is None else self.normalizer.normalize_obs(obs)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """SB3's deterministic action for raw observations, exactly as at training time."""
        action, _ = self.model.predict(np.asarray(self.normalize(obs), dtype=np.float32), deterministic=True)
        return action


def load_trained_policy(algo: DictConfig, checkpoint: Path, task) -> TrainedPolicy:
    model = load_checkpoint(algo, checkpoint)
    stats = checkpoint / NORMALIZATION_FILE
    obs_norm = load_obs_normalization(stats)
    normalizer = None
    if obs_norm is not None:
        normalizer = VecNormalize(DummyVecEnv([task.env_fn()]), training=False, norm_obs=True, norm_reward=False)
        restore_vecnormalize(normalizer, stats)
    return TrainedPolicy(model, obs_norm, normalizer)


def load_checkpoint(algo: DictConfig, checkpoint: Path, venv=None) -> BaseAlgorithm:
    algorithm_class = get_class(algo._target_)
    model = algorithm_class.load(checkpoint / MODEL_FILE, env=venv, device="cpu")
    if venv is not None and hasattr(venv, "obs_rms") and (checkpoint / NORMALIZATION_FILE).exists():
        restore_vecnormalize(venv, checkpoint / NORMALIZATION_FILE)
    if venv is not None and (checkpoint / REPLAY_FILE).exists() and hasattr(model, "load_replay_buffer"):
        model.load_replay_buffer(checkpoint / REPLAY_FILE)
    return model
