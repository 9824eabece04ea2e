"""Teacher-student distillation (DAgger): a state policy teaches a camera policy.

Pixel RL from scratch costs millions of frames; robotics practice is to train a state policy fast in
simulation and let it label what a camera policy sees. Each round, the student drives the batch (the
teacher drives a share ``beta_decay ** round`` of the steps, all of them in round 0), the teacher labels
every visited state with its action, the labelled frames join one growing dataset, and the student is
fitted to the labels by regression on its action mean. The student is an SB3 actor-critic policy (a CNN
for images, an MLP for the kept state terms), so it checkpoints, evaluates and exports like any policy;
its value head is unused.

The teacher acts on the full state observation of the same task, which the batched engine computes
every step anyway (``PhysaiSB3VecEnv.state_obs``): the student never sees it.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

from physai.config.compose import CONFIG_FILE, build_task
from physai.config.schema import PPOConfig, algo_schema_for
from physai.core.errors import ConfigError
from physai.train.sb3 import load_trained_policy, train_policy

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"  # where a teacher trained in the same run lives, inside the run directory


class DAggerDistill(BaseAlgorithm):
    """DAgger over a batched physai task: rounds of ``n_steps`` per env, then ``n_epochs`` of regression."""

    policy_aliases = {"MlpPolicy": ActorCriticPolicy, "CnnPolicy": ActorCriticCnnPolicy,
                      "MultiInputPolicy": MultiInputActorCriticPolicy}

    def __init__(self, policy: Any, env: Any, learning_rate: float = 3e-4, n_steps: int = 256, n_epochs: int = 4,
                 batch_size: int = 256, beta_decay: float = 0.5, max_dataset: int = 100_000, gamma: float = 0.99,
                 max_grad_norm: float = 1.0, image_shift: int = 0, policy_kwargs: Optional[dict] = None, seed: Optional[int] = None,
                 verbose: int = 0, device: str = "cpu", _init_setup_model: bool = True) -> None:
        super().__init__(policy, env, learning_rate, policy_kwargs=policy_kwargs, verbose=verbose, device=device,
                         seed=seed, support_multi_env=True, supported_action_spaces=(spaces.Box,))
        self.n_steps = n_steps
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.beta_decay = beta_decay
        self.max_dataset = max_dataset
        self.gamma = gamma  # the shared schema's; regression on labels discounts nothing
        self.max_grad_norm = max_grad_norm
        self.image_shift = image_shift
        self.rounds = 0
        self.teacher = None
        self._observations: Optional[dict[str, np.ndarray]] = None
        self._labels: Optional[np.ndarray] = None
        self._stored = 0  # rows written so far; the dataset keeps the last max_dataset
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule,
                                        **self.policy_kwargs).to(self.device)
        self._rng = np.random.default_rng(self.seed)

    def _excluded_save_params(self) -> list[str]:
        # The teacher and the labelled frames stay out of checkpoints: a resumed run starts a fresh dataset (and
        # its row count with it, so no unwritten row is ever read).
        return [*super()._excluded_save_params(), "teacher", "_observations", "_labels", "_stored", "_rng"]

    def set_teacher(self, teacher: Any) -> None:
        """The policy that labels: anything with ``predict(state_obs) -> actions`` (a ``TrainedPolicy``)."""
        self.teacher = teacher

    @property
    def dataset_size(self) -> int:
        return min(self._stored, self.max_dataset)

    def distillation_figures(self) -> dict[str, int]:
        """What the run's summary records: rounds, env steps the student saw and labelled frames kept."""
        return {"rounds": int(self.rounds), "frames": int(self.num_timesteps), "labelled_frames": self.dataset_size}

    # ----- collection ----------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 1, tb_log_name: str = "distill",
              reset_num_timesteps: bool = True, progress_bar: bool = False) -> "DAggerDistill":
        if self.teacher is None:
            raise ConfigError("algo=distill has no teacher: set algo.teacher_run to a state policy's run directory, "
                              "or algo.teacher_preset to train one first")
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        source = state_source(self.env)
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            callback.on_rollout_start()
            beta = self.beta_decay ** self.rounds
            for _ in range(self.n_steps):
                labels = np.asarray(self.teacher.predict(source.state_obs), dtype=np.float32)
                student, _ = self.policy.predict(self._last_obs, deterministic=True)
                teacher_drives = self._rng.random(self.env.num_envs) < beta
                actions = np.where(teacher_drives[:, None], labels, student)
                self._store(self._last_obs, labels)
                new_obs, rewards, dones, infos = self.env.step(actions)
                self.num_timesteps += self.env.num_envs
                callback.update_locals(locals())
                if not callback.on_step():
                    return self
                self._last_obs = new_obs
                if self.num_timesteps >= total_timesteps:
                    break
            callback.on_rollout_end()
            self.rounds += 1
            self.train()
        callback.on_training_end()
        return self

    def _store(self, observation: Any, labels: np.ndarray) -> None:
        batch = observation if isinstance(observation, dict) else {"obs": observation}
        if self._observations is None:
            self._observations = {key: np.empty((self.max_dataset, *value.shape[1:]), dtype=value.dtype)
                                  for key, value in batch.items()}
            self._labels = np.empty((self.max_dataset, labels.shape[1]), dtype=np.float32)
        rows = (self._stored + np.arange(labels.shape[0])) % self.max_dataset
        for key, value in batch.items():
            self._observations[key][rows] = value
        self._labels[rows] = labels
        self._stored += labels.shape[0]

    # ----- regression ----------------------------------------------------------------------------
    def train(self) -> None:
        """``n_epochs`` passes over the whole aggregated dataset: the student's action mean onto the labels."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        size, losses = self.dataset_size, []
        for _ in range(self.n_epochs):
            order = self._rng.permutation(size)
            for start in range(0, size, self.batch_size):
                rows = order[start:start + self.batch_size]
                obs = {key: self._augmented(key, torch.as_tensor(value[rows], device=self.device))
                       for key, value in self._observations.items()}
                target = torch.as_tensor(self._labels[rows], device=self.device)
                mean = self.policy.get_distribution(obs if "obs" not in obs else obs["obs"]).distribution.mean
                loss = torch.nn.functional.mse_loss(mean, target)
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                losses.append(float(loss.detach()))
        self.policy.set_training_mode(False)
        self.logger.record("train/bc_loss", float(np.mean(losses)) if losses else 0.0)
        self.logger.record("train/dagger_round", self.rounds)
        self.logger.record("train/dataset_size", size)
        log.info("DAgger round %d: %d labelled frames, regression loss %.4g", self.rounds, size,
                 float(np.mean(losses)) if losses else float("nan"))


    def _augmented(self, key: str, batch: torch.Tensor) -> torch.Tensor:
        """DrQ's random shift of image batches (``image_shift`` pixels, edges repeated); other keys as they are."""
        if self.image_shift <= 0 or batch.dim() != 4:
            return batch
        return random_shift(batch, self.image_shift, self._rng)


def random_shift(images: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch moved by up to ``pad`` pixels each way, edges repeated (DrQ): a
    camera policy should not care where exactly its camera was mounted. Values keep their range and dtype."""
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    height, width = images.shape[-2:]
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, images.shape[0]))
    shifted = torch.stack([padded[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(zip(dy, dx))])
    return shifted.to(images.dtype)


def state_source(venv: Any) -> Any:
    """The physai batch under SB3's wrappers, which keeps every state term of the last step for the teacher."""
    inner = venv
    while inner is not None and not hasattr(inner, "state_obs"):
        inner = getattr(inner, "venv", None)
    if inner is None:
        raise ConfigError("algo=distill needs a physai task (env=<task>_pixels): the teacher acts on the task's "
                          "state terms, which only physai's batched engine hands over")
    return inner


# ----- teachers ----------------------------------------------------------------------------------
def teacher_task(task: Any) -> Any:
    """The state twin of a camera task: the same physics, terms and events, without the camera."""
    if task.task is None or task.task_spec.pixels is None:
        raise ConfigError(f"algo=distill needs a physai task with a camera (env=<task>_pixels, or a task with a "
                          f"pixels: section); {task.id} has none")
    return task.with_task_changes(pixels=None)


def teacher_algo(preset: str, timesteps: Optional[int]) -> DictConfig:
    """The algo section of a packaged preset (``configs/preset/<preset>.yaml``) over its algorithm's schema."""
    folder = files("physai.configs") / "preset"
    source = folder / f"{preset}.yaml"
    if not source.is_file():
        known = sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"algo.teacher_preset={preset!r} is not a preset; use one of {known}")
    algo = OmegaConf.load(str(source)).get("algo") or {}
    target = algo.get("_target_", PPOConfig._target_)
    schema = OmegaConf.structured(algo_schema_for(target))
    merged = OmegaConf.merge(schema, algo)
    if timesteps:
        merged.total_timesteps = int(timesteps)
    return merged


def check_teacher_matches(teacher_names: list[str], student_task: Any, where: str) -> None:
    """A teacher labels the student's states only if it reads the same state terms, in the same order."""
    expected, _ = teacher_task(student_task).signal_names()
    if list(teacher_names) != list(expected):
        raise ConfigError(f"{where}: the teacher's observation terms {teacher_names} differ from the student task's "
                          f"state terms {expected}; train the teacher on the state twin of env "
                          f"{student_task.id} (the same task without pixels)")


def load_teacher_run(run_dir: Path, student_task: Any) -> tuple[Any, dict[str, Any]]:
    """A state policy from another run's directory (its saved config and final checkpoint), checked against
    the student's task."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / "checkpoints" / "final").is_dir():
        raise ConfigError(f"algo.teacher_run={run_dir} is not a finished physai run (it needs {CONFIG_FILE} and "
                          f"checkpoints/final); point it at the run directory of a trained state policy, or set "
                          f"algo.teacher_preset to train one first")
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    try:
        algo = OmegaConf.merge(OmegaConf.structured(algo_schema_for(saved.algo._target_)), saved.algo)
    except KeyError:
        raise ConfigError(f"algo.teacher_run={run_dir} was trained with {saved.algo._target_}, which this physai "
                          f"cannot load") from None
    task = build_task(saved.env)
    names, _ = task.signal_names()
    check_teacher_matches(names, student_task, f"algo.teacher_run={run_dir}")
    policy = load_trained_policy(algo, run_dir / "checkpoints" / "final", task, run_dir=run_dir)
    return policy, {"source": str(run_dir), "algo": str(algo.name), "env_id": str(saved.env.id),
                    "timesteps": policy.timesteps}


def check_teacher_source(algo: DictConfig, student_task: Any) -> None:
    """Before anything trains: the task has a camera, and the teacher is named and fits it."""
    teacher_task(student_task)
    if algo.get("teacher_run"):
        load_teacher_run(Path(algo.teacher_run), student_task)
    elif algo.get("teacher_preset"):
        teacher_algo(algo.teacher_preset, algo.get("teacher_timesteps"))
    else:
        raise ConfigError("algo.teacher_run and algo.teacher_preset are both unset: distillation needs a teacher; "
                          "set algo.teacher_run=<run dir of a state policy> or algo.teacher_preset=<preset> "
                          "(e.g. ppo_cartpole_balance) to train one first")


def prepare_teacher(algo: DictConfig, student_task: Any, seed: int, run_dir: Path, tracker: Any,
                    resume: bool) -> tuple[Any, dict[str, Any]]:
    """The teacher ``algo`` names: another run's policy (``teacher_run``), or one trained now on the state twin
    of the task with a preset's settings (``teacher_preset``), into ``<run_dir>/teacher/``."""
    if algo.get("teacher_run"):
        return load_teacher_run(Path(algo.teacher_run), student_task)
    if not algo.get("teacher_preset"):
        raise ConfigError("algo=distill needs a teacher: set algo.teacher_run=<run dir of a state policy> or "
                          "algo.teacher_preset=<preset> (e.g. ppo_cartpole_balance) to train one first")
    settings = teacher_algo(algo.teacher_preset, algo.get("teacher_timesteps"))
    task = teacher_task(student_task)
    folder = Path(run_dir) / TEACHER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / "checkpoints" / "final"
    if not (resume and final.is_dir()):
        train_policy(task, settings, seed, folder, tracker, resume=resume)
    policy = load_trained_policy(settings, final, task, run_dir=folder)
    return policy, {"source": f"{TEACHER_DIR}/ (trained in this run)", "algo": str(settings.name),
                    "preset": str(algo.teacher_preset), "env_id": f"{task.id} without its camera (state twin)",
                    "timesteps": policy.timesteps}
