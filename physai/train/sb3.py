"""Build, train, checkpoint and reload stable-baselines3 policies from the ``algo`` config.

Training is crash-safe: checkpoints (``physai.train.checkpoints``) are written at rollout
boundaries every ``algo.checkpoint_every_steps`` and hold everything needed to continue; a
SIGTERM/SIGINT writes one more and exits with 128 + the signal number; a NaN or infinity in an
observation, a reward, a loss or a parameter stops the run naming where and when it appeared, and
leaves the last good checkpoint as it was (``physai.train.guards``).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import re
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from physai.config.schema import ALGO_FRAMEWORK_KEYS, RSL_PPO_KEYS, SAC_CRITIC_KEYS, TEACHER_KEYS
from physai.core.errors import PhysaiError
from physai.core.io import write_text_atomic
from physai.synthetic.artifacts import REAL_DATASET, SYNTHETIC_DATASET
from physai.synthetic.dataset import read_dataset
from physai.synthetic.mbpo import training_figures
from physai.train.checkpoints import (CHECKPOINT_DIR, CURVE_COPY, FINAL_NAME, LATEST_POINTER, MODEL_FILE,
                                      REPLAY_FILE, CheckpointError, latest_checkpoint, load_replay_buffer,
                                      read_trainer_state, restore_rng, save_checkpoint, step_name,
                                      verify_checkpoint, write_progress)
from physai.train.critics import sac_policy
from physai.train.episodes import TERM_PREFIX, curve_row
from physai.train.guards import (FiniteCheckVecEnv, NonFiniteError, NonFiniteInEnv, StopSignals,
                                 TrainingInterrupted, check_losses, check_parameters, model_parameters,
                                 nonfinite_message, signal_name)
from physai.train.normalization import (NORMALIZATION_FILE, ObsNormalization, load_obs_normalization,
                                        restore_vecnormalize)
from physai.train.vec_env import batched_engine, make_training_vec_env

log = logging.getLogger(__name__)

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}
CURVE_FILE = "train_curve.csv"
PROGRESS_FILE = "train_progress.json"
CURVE_FIELDS = ("timesteps", "episode_return", "episode_length")
# A watcher's status file is rewritten at rollout ends, at most once per this many steps.
PROGRESS_MIN_STEPS = 64


def build_vec_env(task, algo: DictConfig, seed: int, check_finite: bool = True) -> Any:
    """The training batch: the task's VecEnv, its outputs checked for NaN/inf (unless ``check_finite`` is
    off: a benchmark's stock contender runs without physai's checks), then (optionally) VecNormalize."""
    venv = make_training_vec_env(task, algo.n_envs, seed)
    if check_finite:
        venv = FiniteCheckVecEnv(venv, names=_observation_names(venv))
    if algo.normalize_obs or algo.normalize_reward:
        venv = VecNormalize(venv, norm_obs=algo.normalize_obs, norm_reward=algo.normalize_reward,
                            clip_obs=algo.clip_obs, gamma=algo.gamma)
    return venv


def algorithm_kwargs(algo: DictConfig) -> dict[str, Any]:
    kwargs = {k: v for k, v in OmegaConf.to_container(algo, resolve=True).items()
              if k not in ALGO_FRAMEWORK_KEYS | SAC_CRITIC_KEYS | TEACHER_KEYS | RSL_PPO_KEYS}
    policy_kwargs: dict[str, Any] = {"net_arch": list(algo.net_arch),
                                     "activation_fn": ACTIVATIONS[algo.activation],
                                     "log_std_init": algo.log_std_init}
    if "ortho_init" in algo:
        policy_kwargs["ortho_init"] = algo.ortho_init
    policy, critic_kwargs = sac_policy(algo.get("critic_dropout", 0.0), algo.get("critic_layer_norm", False))
    kwargs["policy"] = policy
    kwargs["policy_kwargs"] = {**policy_kwargs, **critic_kwargs}
    return kwargs


def build_model(algo: DictConfig, venv, seed: int, world_model: Optional[DictConfig] = None) -> BaseAlgorithm:
    """The configured SB3 algorithm; a model-based one takes its ensemble settings from ``world_model``
    (``synthetic.world_model``, the same settings the world_model stage fits with)."""
    algorithm_class = get_class(algo._target_)
    kwargs = algorithm_kwargs(algo)
    if isinstance(venv.observation_space, gym.spaces.Dict) and kwargs["policy"] == "MlpPolicy":
        kwargs["policy"] = "MultiInputPolicy"  # a camera task: a CNN per image, an MLP for the kept state terms
    if world_model is not None and hasattr(algorithm_class, "world_model_keywords"):
        kwargs.update(algorithm_class.world_model_keywords(OmegaConf.to_container(world_model, resolve=True)))
    return log_to_memory(algorithm_class(env=venv, seed=seed, verbose=0, device="cpu", **kwargs))


def log_to_memory(model: BaseAlgorithm) -> BaseAlgorithm:
    """Figures are read from the logger's values, never from its files; left to itself SB3 makes an empty
    SB3-<time> folder in the system's temp dir at every learn() (thousands over a sweep)."""
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _observation_names(venv) -> Optional[list[str]]:
    """A physai task's observation column names (``velocities[1]``), for messages; None otherwise."""
    names = getattr(batched_engine(venv), "observation_names", None)
    return list(names) if names else None


class TrainingMonitor(BaseCallback):
    """Curve rows, progress bar, guards, checkpoints at rollout boundaries, and stop requests.

    Checkpoints are written at the start of a rollout (after the previous update, before the next env
    step), the first one at or after each multiple of ``algo.checkpoint_every_steps``: the moment an
    SB3 run's state is whole. Before each, the losses of the last update and every parameter are
    checked, so a checkpoint never holds a NaN.
    """

    def __init__(self, run_dir: Path, algo: DictConfig, tracker, curve: list[dict[str, float]],
                 progress: Progress, task_id: Any, *, env_task_id: Optional[str] = None,
                 resumed_from: Optional[Path] = None, resume_state: Optional[dict[str, Any]] = None,
                 stop: Optional[StopSignals] = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.algo = algo
        self.tracker = tracker
        self.curve = curve
        self.progress = progress
        self.task_id = task_id
        self.env_task_id = env_task_id
        self.resumed_from = resumed_from
        self.resume_state = resume_state or {}
        self.stop = stop
        self.last_checkpoint: Optional[Path] = resumed_from
        self.next_checkpoint = 0
        self.rollout_start_step = 0
        self.stopped_in_step = False
        self.restored_generators: list[str] = []
        self._progress_written_at = -PROGRESS_MIN_STEPS

    # ----- SB3 hooks -----------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        # learn() has reset the envs by now, so restored generators continue from the checkpoint's draws.
        if self.resumed_from is not None:
            self.restored_generators = restore_rng(self.model, self.resumed_from, self.resume_state)
        self.rollout_start_step = self.num_timesteps
        self.next_checkpoint = self._next_multiple(self.num_timesteps)

    def _on_rollout_start(self) -> None:
        step = self.num_timesteps = int(self.model.num_timesteps)
        self.rollout_start_step = step
        self._check_update(step)
        if step >= self.next_checkpoint:
            self.save(step_name(step))
            self.next_checkpoint = self._next_multiple(step)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode:
                row = curve_row(self.num_timesteps, episode["r"], episode["l"], episode.get("terms", {}))
                self.curve.append(row)
                # No explicit step: several envs can finish on the same timestep, and wandb merges equal steps.
                self.tracker.log({f"train/{key}": value for key, value in row.items()})
        recent = [row["episode_return"] for row in self.curve[-20:]]
        description = f"train  return {np.mean(recent):8.1f}" if recent else "train"
        self.progress.update(self.task_id, completed=self.num_timesteps, description=description)
        if self.stop is not None and self.stop.requested is not None:
            self.stopped_in_step = True
            return False  # SB3 leaves collect_rollouts before storing this step: no update on partial data
        return True

    def _on_rollout_end(self) -> None:
        self.num_timesteps = int(self.model.num_timesteps)
        if self.num_timesteps - self._progress_written_at >= PROGRESS_MIN_STEPS:
            self.write_progress()

    # ----- guards --------------------------------------------------------------------------------
    def _fail(self, problem: str) -> None:
        raise NonFiniteError(nonfinite_message(problem, self.last_checkpoint, self.run_dir))

    def _check_update(self, step: int) -> None:
        logged = getattr(getattr(self.model, "_logger", None), "name_to_value", {}) or {}
        problems = [check_losses({k: v for k, v in logged.items() if "loss" in k}, step),
                    check_parameters(model_parameters(self.model), step)]
        problems = [problem for problem in problems if problem is not None]
        if problems:
            self._fail("; ".join(problems))

    # ----- checkpoints -----------------------------------------------------------------------------
    def _next_multiple(self, step: int) -> int:
        every = int(self.algo.checkpoint_every_steps)
        return (step // every + 1) * every

    def save(self, name: str, keep: Optional[int] = None) -> Path:
        path = write_checkpoint(self.model, self.run_dir, name, self.curve,
                                keep=self.algo.keep_checkpoints if keep is None else keep, task_id=self.env_task_id,
                                trainer_state={"checkpoint_every_steps": int(self.algo.checkpoint_every_steps),
                                               "total_timesteps": int(self.algo.total_timesteps)})
        self.last_checkpoint = path
        self.write_progress()
        log.info("checkpoint %s/%s at step %d", CHECKPOINT_DIR, name, self.model.num_timesteps)
        return path

    def save_interrupted(self) -> Path:
        """The checkpoint a stop signal leaves: the state as of a whole rollout boundary."""
        self.rewind_unstored_step()
        self._check_update(self.model.num_timesteps)
        return self.save(step_name(self.model.num_timesteps))

    def rewind_unstored_step(self) -> None:
        """SB3 stopped inside a step, before storing it. On-policy: the policy has not changed since the
        rollout began and its partial data is discarded, so the step counter goes back to the rollout's
        start (those steps are redone after a resume). Off-policy: every earlier step of the rollout is in
        the replay buffer, so only the unstored last step is taken off the counter.
        """
        if isinstance(self.model, OnPolicyAlgorithm):
            self.model.num_timesteps = self.rollout_start_step
        else:
            self.model.num_timesteps -= self.model.get_env().num_envs

    def write_progress(self) -> None:
        self.num_timesteps = int(self.model.num_timesteps)
        self._progress_written_at = self.num_timesteps
        write_training_progress(self.run_dir, self.num_timesteps, self.algo.total_timesteps, self.last_checkpoint)


def write_checkpoint(model: BaseAlgorithm, run_dir: Path, name: str, curve: list[dict[str, float]], *, keep: int,
                     task_id: Optional[str], trainer_state: dict[str, Any]) -> Path:
    """Checkpoint ``name`` of the model (the curve up to its step inside; ``keep`` applies to step checkpoints,
    never to the final one), and the run's curve file rewritten to match."""
    step = int(model.num_timesteps)
    rows = [row for row in curve if row["timesteps"] <= step]
    text = curve_text(rows)
    path = save_checkpoint(model, run_dir / CHECKPOINT_DIR, name, keep=keep if name != FINAL_NAME else None,
                           task_id=task_id, trainer_state={"curve_rows": len(rows), **trainer_state}, curve_csv=text)
    write_text_atomic(run_dir / CURVE_FILE, text)
    return path


def write_training_progress(run_dir: Path, timesteps: int, total_timesteps: int, last_checkpoint: Optional[Path]) -> None:
    """The status file a watcher reads while a run trains."""
    last = None if last_checkpoint is None else str(last_checkpoint.relative_to(run_dir))
    write_progress(run_dir / PROGRESS_FILE, {"timesteps": int(timesteps), "total_timesteps": int(total_timesteps),
                                             "last_checkpoint": last, "updated_unix": round(time.time(), 3)})


# The training progress bar of every trainer.
TRAIN_PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                          TimeElapsedColumn(), TimeRemainingColumn())


def curve_text(rows: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    terms = sorted({key for row in rows for key in row if key.startswith(TERM_PREFIX)})
    writer = csv.DictWriter(buffer, fieldnames=[*CURVE_FIELDS, *terms])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{"timesteps": int(r["timesteps"]), "episode_return": float(r["episode_return"]),
                 "episode_length": int(r["episode_length"]),
                 **{k: float(v) for k, v in r.items() if k.startswith(TERM_PREFIX) and v not in ("", None)}}
                for r in csv.DictReader(handle)]


def train_policy(task, algo: DictConfig, seed: int, run_dir: Path, tracker, resume: bool,
                 world_model: Optional[DictConfig] = None, prompt=None, teacher=None,
                 callbacks: Sequence[BaseCallback] = ()) -> dict[str, Any]:
    """Train (or continue) a policy until ``algo.total_timesteps``; return what the run figures need.

    ``prompt``: the scenario a model-based learner starts ``algo.prompt_share`` of its branches from.
    ``teacher``: the policy a distilling learner imitates (``physai.train.distill``).
    ``callbacks``: more SB3 callbacks (``physai.train.periodic_eval``); one that sets ``stopped_training``
    ends training early, and the final checkpoint then holds the policy as of that rollout's start."""
    torch.set_num_threads(algo.torch_threads)
    _remove_stale_temp_files(run_dir)
    venv = build_vec_env(task, algo, seed)
    checkpoint = latest_checkpoint(run_dir / CHECKPOINT_DIR) if resume else None
    state: dict[str, Any] = {}
    if checkpoint is not None:
        model = load_checkpoint(algo, checkpoint, venv, run_dir=run_dir, task_id=task.id, world_model=world_model)
        state = read_trainer_state(checkpoint)
        curve = [row for row in read_curve(checkpoint / CURVE_COPY) if row["timesteps"] <= model.num_timesteps]
        log.info("resuming from %s at step %d", checkpoint, model.num_timesteps)
    else:
        if resume:
            log.info("resume=true but %s holds no checkpoint: starting a fresh run", run_dir / CHECKPOINT_DIR)
        model = build_model(algo, venv, seed, world_model)
        if hasattr(model, "warm_start"):
            _warm_start_from_run(model, task, run_dir)
        curve = []
    if prompt is not None:
        model.set_prompt(prompt)
    if teacher is not None:
        model.set_teacher(teacher)
    resumed_from = model.num_timesteps
    remaining = max(0, algo.total_timesteps - model.num_timesteps)
    try:
        with StopSignals() as stop, Progress(*TRAIN_PROGRESS_COLUMNS) as progress:
            task_id = progress.add_task("train", total=algo.total_timesteps, completed=model.num_timesteps)
            monitor = TrainingMonitor(run_dir, algo, tracker, curve, progress, task_id, env_task_id=task.id,
                                      resumed_from=checkpoint, resume_state=state, stop=stop)
            if remaining:
                _learn(model, remaining, monitor, reset=checkpoint is None, callbacks=callbacks)
            else:
                monitor.init_callback(model)
            if monitor.stopped_in_step:  # a stop signal ended learn() early
                saved = monitor.save_interrupted()
                raise TrainingInterrupted(interrupted_message(stop.requested, saved, run_dir), stop.requested)
            if any(getattr(callback, "stopped_training", False) for callback in callbacks):
                monitor.rewind_unstored_step()  # e.g. a sweep's pruner: SB3 left inside a step, before storing it
            monitor._check_update(model.num_timesteps)  # the last update happened after the last rollout start
            final = monitor.save(FINAL_NAME)
            if stop.requested is not None:
                raise TrainingInterrupted(
                    f"{signal_name(stop.requested)} arrived as training finished: {final} holds the trained policy; "
                    f"the stages after train did not run. Run them with `physai run {run_dir} resume=true`",
                    stop.requested)
    finally:
        venv.close()
    figures = {"checkpoint": str(final.relative_to(run_dir)), "timesteps": int(model.num_timesteps),
               "resumed_from_step": int(resumed_from) if checkpoint is not None else None,
               "episodes": len(curve),
               # model-based: refits, synthetic rows, warm start from the run's datasets
               "model_based": training_figures(model) if hasattr(model, "mbpo_stats") else None,
               "distillation": model.distillation_figures() if hasattr(model, "distillation_figures") else None}
    return figures


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temporary files a killed run left mid-write (the finished files they were for are intact)."""
    for folder, names in ((run_dir, (CURVE_FILE, PROGRESS_FILE)), (run_dir / CHECKPOINT_DIR, (LATEST_POINTER,))):
        for name in names:
            for stale in folder.glob(f".{name}.*.tmp*"):
                stale.unlink(missing_ok=True)


def _learn(model: BaseAlgorithm, steps: int, monitor: TrainingMonitor, reset: bool,
           callbacks: Sequence[BaseCallback] = ()) -> None:
    """``model.learn``, with a failure caused by NaN weights (e.g. torch refusing a NaN mean) named as such."""
    try:
        model.learn(total_timesteps=steps, callback=CallbackList([monitor, *callbacks]) if callbacks else monitor,
                    reset_num_timesteps=reset)
    except NonFiniteInEnv as exc:  # raised below VecNormalize, where the step is not known
        step = model.num_timesteps + (0 if exc.during_reset else model.get_env().num_envs)
        raise NonFiniteError(nonfinite_message(f"{exc.problem} at step {step}", monitor.last_checkpoint,
                                               monitor.run_dir)) from None
    except PhysaiError:
        raise
    except (ValueError, RuntimeError) as exc:
        problem = check_parameters(model_parameters(model), model.num_timesteps)
        if problem is None and "invalid values" not in str(exc) and not re.search(r"\bnan\b", str(exc).lower()):
            raise
        detail = problem or (f"invalid policy output (a NaN, or a standard deviation that under- or overflowed) "
                             f"in the update at step {model.num_timesteps}")
        raise NonFiniteError(nonfinite_message(f"{detail} ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                                               monitor.last_checkpoint, monitor.run_dir)) from exc


def interrupted_message(signum: int, checkpoint: Path, run_dir: Path) -> str:
    return (f"training stopped by {signal_name(signum)}: checkpoint {checkpoint} holds everything needed to continue. "
            f"Resume with `physai run {run_dir} resume=true` (the run's saved config), or with "
            f"`python train.py resume=true hydra.run.dir={run_dir}` plus the overrides the run was started with")


def _warm_start_from_run(model, task, run_dir: Path) -> None:
    """Give a model-based learner the run's collected (real) and generated (synthetic) datasets."""
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

    def normalize(self, obs: Any) -> Any:
        return obs if self.normalizer is None else self.normalizer.normalize_obs(obs)

    def predict(self, obs: Any) -> np.ndarray:
        """SB3's deterministic action for raw observations (an array, or a camera task's dict), exactly as
        at training time."""
        obs = self.normalize(obs)
        if not isinstance(obs, dict):
            obs = np.asarray(obs, dtype=np.float32)
        action, _ = self.model.predict(obs, deterministic=True)
        return action


def load_trained_policy(algo: DictConfig, checkpoint: Path, task, run_dir: Optional[Path] = None) -> TrainedPolicy:
    """The policy of ``<run_dir>/checkpoints/<name>`` (checksums verified), ready to predict."""
    model = load_checkpoint(algo, checkpoint, run_dir=run_dir, task=task)
    stats = checkpoint / NORMALIZATION_FILE
    obs_norm = load_obs_normalization(stats)
    normalizer = None
    if obs_norm is not None:
        normalizer = VecNormalize(DummyVecEnv([task.env_fn()]), training=False, norm_obs=True, norm_reward=False)
        restore_vecnormalize(normalizer, stats)
    return TrainedPolicy(model, obs_norm, normalizer)


# SB3 archive entries that are not restored on load: runtime state rebuilt by learn(), or settings the
# config decides (every constructor argument comes from the config, never from the file).
_RUNTIME_KEYS = frozenset({"start_time", "_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
                           "ep_success_buffer", "n_envs", "_stats_window_size", "batch_norm_stats",
                           "batch_norm_stats_target", "optimize_memory_usage", "replay_buffer_kwargs",
                           "rollout_buffer_kwargs", "n_steps", "policy_kwargs", "device", "env",
                           "_vec_normalize_env", "_logger", "_custom_logger"})


def load_checkpoint(algo: DictConfig, checkpoint: Path, venv=None, *, run_dir: Optional[Path] = None,
                    task=None, task_id: Optional[str] = None,
                    world_model: Optional[DictConfig] = None) -> BaseAlgorithm:
    """Rebuild the algorithm from the config and put a checkpoint's state into it, without unpickling.

    Every file is checked against the checkpoint's sha256 manifest first, and the checkpoint must sit in
    ``<run_dir>/checkpoints/``. Weights and optimizer states are read by SB3's ``set_parameters``
    (``torch.load(weights_only=True)``); counters come from the archive's plain-JSON entries (its
    cloudpickled entries are never decoded). With ``venv`` (resuming) the normalization statistics, the
    replay buffer and the algorithm's extras are restored too; without it ``task`` supplies the spaces.
    """
    checkpoint = Path(checkpoint)
    verify_checkpoint(checkpoint, run_dir)
    archive = checkpoint / MODEL_FILE
    data = _plain_archive_data(archive)
    env = venv
    if env is None:
        if task is None:
            raise CheckpointError("load_checkpoint needs the task (for its spaces) or the training VecEnv")
        env = DummyVecEnv([task.env_fn()])
    with warnings.catch_warnings():
        if venv is None:  # a prediction-only model: rollout-size advice for one env is noise
            warnings.simplefilter("ignore", UserWarning)
        model = build_model(algo, env, int(data.get("seed") or 0), world_model)
    if venv is None:
        env.close()
    try:
        model.set_parameters(str(archive), exact_match=True, device="cpu")
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{archive} does not fit the configured algorithm ({exc}); resume or evaluate it "
                              f"with the config it was trained with (its run's config.yaml)") from exc
    _restore_torch_variables(model, archive)
    constructor = set(inspect.signature(type(model).__init__).parameters)
    for key, value in data.items():
        if key in _RUNTIME_KEYS or key in constructor or not hasattr(model, key):
            continue
        current = getattr(model, key)
        if current is None or isinstance(current, (bool, int, float, str, list, dict)):
            setattr(model, key, value)
    if venv is not None:
        if hasattr(venv, "obs_rms") and (checkpoint / NORMALIZATION_FILE).exists():
            restore_vecnormalize(venv, checkpoint / NORMALIZATION_FILE)
        if getattr(model, "replay_buffer", None) is not None and (checkpoint / REPLAY_FILE).exists():
            load_replay_buffer(model.replay_buffer, checkpoint / REPLAY_FILE)
            if getattr(model, "optimize_memory_usage", False) and model.replay_buffer.pos > 0:
                # Observations are shared between rows: the env restarts, so end the stored trajectory.
                model.replay_buffer.dones[model.replay_buffer.pos - 1] = True
            if hasattr(model, "_link_buffers"):
                model._link_buffers()
        if hasattr(model, "load_extras"):
            model.load_extras(checkpoint, task_id=task_id)
    return model


def _plain_archive_data(archive: Path) -> dict[str, Any]:
    """The JSON entries of an SB3 archive that need no unpickling (counters, figures, settings)."""
    try:
        with zipfile.ZipFile(archive) as handle:
            raw = json.loads(handle.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CheckpointError(f"{archive} is not a stable-baselines3 archive ({exc})") from exc
    return {key: value for key, value in raw.items()
            if not (isinstance(value, dict) and ":serialized:" in value)}


def _restore_torch_variables(model: BaseAlgorithm, archive: Path) -> None:
    """Tensors SB3 keeps outside state dicts (SAC's ``log_ent_coef``), read with ``weights_only=True``."""
    from stable_baselines3.common.save_util import recursive_setattr

    with zipfile.ZipFile(archive) as handle:
        if "pytorch_variables.pth" not in handle.namelist():
            return
        variables = torch.load(io.BytesIO(handle.read("pytorch_variables.pth")), map_location="cpu",
                               weights_only=True)
    for name, value in (variables or {}).items():
        if value is not None:
            recursive_setattr(model, f"{name}.data", value.data)
