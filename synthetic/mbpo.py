"""Model-based policy optimization (MBPO, Janner et al. 2019) on stable-baselines3's SAC.

MBPO trains SAC on a mix of real transitions and short synthetic rollouts branched from real
states through a learned ensemble. Here it is SB3's ``SAC`` with three additions and nothing of
SAC's own update changed:

* **Two buffers, never mixed up.** The real replay buffer is SB3's own ``ReplayBuffer`` (filled by
  SAC's ``collect_rollouts``, saved by ``save_replay_buffer``), subclassed as ``MixedReplayBuffer``
  only so that its ``sample`` returns ``real_ratio`` of each batch from its own rows and the rest
  from a separate ``ModelBuffer`` of synthetic rows (``physai.synthetic.replay_buffers``).
* **Model rounds.** Every ``model_train_every`` real steps (checked where SAC trains, so only after
  ``learning_starts``), the ensemble (``physai.synthetic.world_model``) is refit on all real data
  (``synthetic.world_model``'s epoch bound and early stopping), then ``rollout_batch`` branches start
  from random real states and the current stochastic policy acts in the model
  (``physai.synthetic.imagine``) for ``rollout_length`` steps, a linear schedule
  ``[start_step, end_step, min_len, max_len]`` over real steps (MBPO's). A branch stops at a predicted termination or when ensemble disagreement passes
  ``max_disagreement``. The model buffer keeps the last ``model_retain_rounds`` rounds.
* **Update-to-data ratio.** SB3's ``gradient_steps`` (per ``train_freq`` steps of the VecEnv, so per
  ``n_envs`` real transitions) is MBPO's gradient updates per real step (MBPO uses 20; SAC 1).

Prompted branches: with a scenario prompt set (``set_prompt``, the run's ``scenario``) and
``prompt_share`` > 0, that share of every round's branches start where the prompt says, under its
physics context and kicks (``physai.synthetic.scenario``), for the prompt's horizon: the policy trains
on edge cases the real data never staged. The rest branch from real states as above.

Physics context: when the env is a physai task (its engine has ``context_matrix()``) and
``use_context`` is set, every real transition records its env's domain-randomization draws and the
ensemble is conditioned on them; branches keep the context of the real state they start from.

Saving: the ensemble and the model buffer are torch objects / large arrays, so they are excluded from
``model.zip`` and from the pickled replay buffer. physai's checkpoints store them beside it through
``save_extras``/``load_extras`` (the ensemble's own checksummed file, the synthetic rows as ``.npz``),
so a resumed run continues with the same ensemble and rows. A bare ``MBPO.load`` has an untrained
ensemble and an empty model buffer; it refits on the (reloaded) real buffer and regenerates rollouts
at its first training step, and samples only real rows until then.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC

from physai.core.errors import ConfigError
from physai.core.io import finite_or_null
from physai.synthetic.artifacts import CHECKPOINT_WORLD_MODEL
from physai.synthetic.imagine import imagine
from physai.synthetic.replay_buffers import MixedReplayBuffer, ModelBuffer
from physai.synthetic.scenario import Scenario, Starts, sample_starts
from physai.synthetic.world_model import EnsembleDynamicsModel

log = logging.getLogger(__name__)

SOURCE_REAL = 0
SOURCE_SYNTHETIC = 1
# Fewer real transitions than this and the ensemble is not (re)fit: too few to hold some out.
MIN_FIT_ROWS = 32


def rollout_length_at(schedule: Sequence[float], step: int) -> int:
    """MBPO's linear schedule: ``min_len`` until ``start_step``, ``max_len`` from ``end_step``, linear between."""
    start, end, low, high = (float(v) for v in schedule)
    if step <= start or end <= start:
        value = low if step <= start else high
    else:
        value = low + (min(step, end) - start) / (end - start) * (high - low)
    return max(1, int(value))


class MBPO(SAC):
    """SAC trained on real plus model-generated transitions (MBPO). See the module docstring.

    MBPO-specific settings (the rest are SAC's):

    :param real_ratio: share of every gradient batch drawn from real transitions (MBPO: 0.05).
    :param model_train_every: real env steps between model rounds (refit + rollouts; MBPO: 250).
    :param rollout_batch: branches started from real states per round (MBPO: 100k).
    :param rollout_length: ``[start_step, end_step, min_len, max_len]``: branch length, linear in real steps.
    :param max_disagreement: a branch stops where ensemble disagreement (normalized units) passes this.
    :param model_retain_rounds: rounds of synthetic rows the model buffer keeps.
    :param model_members, model_elites, model_hidden, model_layers, model_learning_rate: the ensemble.
    :param model_batch_size, model_holdout_fraction, model_max_epochs, model_patience: its fitting.
    :param model_train_seconds: wall-clock cap of one (re)fit.
    :param use_context: condition the ensemble on a physai task's physics context when it has one.
    :param prompt_share: share of every round's branches started from the scenario prompt (``set_prompt``).
    """

    # synthetic.world_model's keys -> this class's keywords: one world-model config for the stage and MBPO.
    WORLD_MODEL_KEYWORDS = {"members": "model_members", "elites": "model_elites", "hidden": "model_hidden",
                            "layers": "model_layers", "learning_rate": "model_learning_rate",
                            "batch_size": "model_batch_size", "holdout_fraction": "model_holdout_fraction",
                            "max_epochs": "model_max_epochs", "patience": "model_patience",
                            "max_seconds": "model_train_seconds", "use_context": "use_context"}

    @classmethod
    def world_model_keywords(cls, world_model: Any) -> dict[str, Any]:
        """The ensemble keywords from a ``synthetic.world_model`` config."""
        return {keyword: world_model[key] for key, keyword in cls.WORLD_MODEL_KEYWORDS.items() if key in world_model}

    def __init__(
        self,
        policy,
        env,
        learning_rate=3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq=1,
        gradient_steps: int = 20,
        action_noise=None,
        ent_coef="auto",
        target_update_interval: int = 1,
        target_entropy="auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device="auto",
        real_ratio: float = 0.05,
        model_train_every: int = 250,
        rollout_batch: int = 20_000,
        rollout_length: Sequence[float] = (1_000, 10_000, 1, 5),
        max_disagreement: float = 1.0,
        model_retain_rounds: int = 4,
        model_members: int = 7,
        model_elites: int = 5,
        model_hidden: int = 200,
        model_layers: int = 4,
        model_learning_rate: float = 1e-3,
        model_batch_size: int = 256,
        model_holdout_fraction: float = 0.2,
        model_max_epochs: int = 200,
        model_patience: int = 5,
        model_train_seconds: Optional[float] = 20.0,
        use_context: bool = True,
        prompt_share: float = 0.0,
        _init_setup_model: bool = True,
    ) -> None:
        self.real_ratio = float(real_ratio)
        self.model_train_every = int(model_train_every)
        self.rollout_batch = int(rollout_batch)
        self.rollout_length = [float(v) for v in rollout_length]
        self.max_disagreement = float(max_disagreement)
        self.model_retain_rounds = int(model_retain_rounds)
        self.model_members, self.model_elites = int(model_members), int(model_elites)
        self.model_hidden, self.model_layers = int(model_hidden), int(model_layers)
        self.model_learning_rate = float(model_learning_rate)
        self.model_batch_size = int(model_batch_size)
        self.model_holdout_fraction = float(model_holdout_fraction)
        self.model_max_epochs = int(model_max_epochs)
        self.model_patience = int(model_patience)
        self.model_train_seconds = None if model_train_seconds is None else float(model_train_seconds)
        self.use_context = bool(use_context)
        self.prompt_share = float(prompt_share)
        self.prompt: Optional[Scenario] = None
        self._check_settings()
        # Figures a run records (plain numbers: pickled into model.zip with the rest of the state).
        self.mbpo_stats: dict[str, Any] = {"model_refits": 0, "last_val_mse": None, "synthetic_generated": 0,
                                           "generation_seconds": 0.0, "generation_rate": None,
                                           "model_fit_seconds": 0.0, "rollout_length": None,
                                           "model_buffer_rows": 0, "real_steps": 0, "model_rounds": 0,
                                           "synthetic_prompted": 0}
        self.warm_start_counts: dict[str, int] = {"real": 0, "synthetic": 0, "dropped": 0}
        self.context_names: list[str] = []
        self._next_model_round = 0
        self.dynamics_model = None
        self.model_buffer: Optional[ModelBuffer] = None
        self._context_source = None
        self._episode_context: Optional[np.ndarray] = None
        super().__init__(
            policy, env, learning_rate=learning_rate, buffer_size=buffer_size, learning_starts=learning_starts,
            batch_size=batch_size, tau=tau, gamma=gamma, train_freq=train_freq, gradient_steps=gradient_steps,
            action_noise=action_noise, replay_buffer_class=MixedReplayBuffer, replay_buffer_kwargs={},
            ent_coef=ent_coef, target_update_interval=target_update_interval, target_entropy=target_entropy,
            use_sde=use_sde, sde_sample_freq=sde_sample_freq, use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
            verbose=verbose, seed=seed, device=device, _init_setup_model=False)
        if _init_setup_model:
            self._setup_model()

    def _check_settings(self) -> None:
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ConfigError(f"algo.real_ratio={self.real_ratio} must lie in [0, 1] (MBPO uses 0.05)")
        if len(self.rollout_length) != 4:
            raise ConfigError(f"algo.rollout_length={self.rollout_length} must be [start_step, end_step, "
                              f"min_len, max_len], e.g. [20000, 100000, 1, 15]")
        start, end, low, high = self.rollout_length
        if low < 1 or high < 1 or end < start:
            raise ConfigError(f"algo.rollout_length={self.rollout_length}: lengths must be >= 1 and "
                              f"end_step >= start_step, e.g. [20000, 100000, 1, 15]")
        for name in ("model_train_every", "rollout_batch", "model_retain_rounds", "model_members", "model_elites"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.prompt_share <= 1.0:
            raise ConfigError(f"algo.prompt_share={self.prompt_share} must lie in [0, 1]: the share of each model "
                              f"round's branches started from the scenario prompt")
        if self.model_elites > self.model_members:
            raise ConfigError(f"algo.model_elites={self.model_elites} exceeds algo.model_members="
                              f"{self.model_members}; elites are chosen among the members")

    # ------------------------------------------------------------------ setup

    def _setup_model(self) -> None:
        source = _context_source(self.env) if self.env is not None and self.use_context else None
        if source is not None:
            self.context_names = list(source.names)
        self._context_source = source if source is not None and source.names else None
        if not self.use_context:
            self.context_names = []
        self.replay_buffer_class = MixedReplayBuffer
        self.replay_buffer_kwargs = {"real_ratio": self.real_ratio, "context_dim": len(self.context_names)}
        super()._setup_model()
        self._setup_world_model()

    def _setup_world_model(self) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        self.dynamics_model = EnsembleDynamicsModel(
            obs_dim, act_dim, members=self.model_members, elites=self.model_elites, hidden=self.model_hidden,
            layers=self.model_layers, seed=int(self.seed or 0), context_names=self.context_names or None,
            learning_rate=self.model_learning_rate).to(self.device)
        self.model_buffer = ModelBuffer(obs_dim, act_dim, self.model_retain_rounds, self.device)
        self._link_buffers()

    def _link_buffers(self) -> None:
        if isinstance(self.replay_buffer, MixedReplayBuffer):
            self.replay_buffer.model_buffer = self.model_buffer
            self.replay_buffer.real_ratio = self.real_ratio

    def load_replay_buffer(self, path, truncate_last_traj: bool = True) -> None:
        super().load_replay_buffer(path, truncate_last_traj)
        if not isinstance(self.replay_buffer, MixedReplayBuffer):
            raise ConfigError(f"{path} holds a {type(self.replay_buffer).__name__}, not MBPO's replay buffer; "
                              f"resume MBPO only from an MBPO checkpoint")
        if self.replay_buffer.context_dim != len(self.context_names):
            raise ConfigError(f"{path} stores a {self.replay_buffer.context_dim}-dim physics context but this "
                              f"run's env has {len(self.context_names)} ({self.context_names}); resume on the "
                              f"same task and algo.use_context setting")
        self._link_buffers()

    def _excluded_save_params(self) -> list[str]:
        # The ensemble and the synthetic rows go to checkpoints through save_extras (see the module docstring).
        # The prompt is the run's configuration: the train stage sets it again on a resumed model.
        return super()._excluded_save_params() + ["dynamics_model", "model_buffer", "_context_source",
                                                  "_episode_context", "prompt"]

    EXTRA_WORLD_MODEL = CHECKPOINT_WORLD_MODEL  # the ensemble's checksummed file (+ its .json sidecar)
    EXTRA_MODEL_BUFFER = "model_buffer.npz"  # the synthetic rows, round by round, as plain arrays

    def save_extras(self, directory, task_id: str) -> None:
        """Checkpoint hook (physai.train.checkpoints): write what ``model.zip`` leaves out into ``directory``."""
        directory = Path(directory)
        if self.dynamics_model is not None and bool(self.dynamics_model.is_fitted):
            self.dynamics_model.save(directory / self.EXTRA_WORLD_MODEL, task_id=task_id)
        if self.model_buffer is not None:
            rounds = list(self.model_buffer.rounds)
            arrays = {f"round{i}/{name}": block[name] for i, block in enumerate(rounds) for name in ModelBuffer.FIELDS}
            with open(directory / self.EXTRA_MODEL_BUFFER, "wb") as handle:
                np.savez(handle, rounds=np.int64(len(rounds)), **arrays)

    def load_extras(self, directory, task_id: Optional[str] = None) -> None:
        """Checkpoint hook: restore the fitted ensemble (checksum, task and dims verified) and the model buffer."""
        directory = Path(directory)
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        if (directory / self.EXTRA_WORLD_MODEL).is_file():
            self.dynamics_model = EnsembleDynamicsModel.load(
                directory / self.EXTRA_WORLD_MODEL, expected_task_id=task_id, expected_obs_dim=obs_dim,
                expected_act_dim=act_dim, map_location=self.device)
        if (directory / self.EXTRA_MODEL_BUFFER).is_file():
            buffer = ModelBuffer(obs_dim, act_dim, self.model_retain_rounds, self.device)
            with np.load(directory / self.EXTRA_MODEL_BUFFER, allow_pickle=False) as data:
                for i in range(int(data["rounds"])):
                    buffer.add_round(*(data[f"round{i}/{name}"] for name in ModelBuffer.FIELDS))
            self.model_buffer = buffer
            self.mbpo_stats["model_buffer_rows"] = len(buffer)
        self._link_buffers()

    # ------------------------------------------------------------------ real data

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run",
                     progress_bar=False):
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self._episode_context = self._context_source.matrix() if self._context_source is not None else None
        return result

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:
        # The context a transition happened under is the one before this step: a finished env has
        # already been reset (and may have drawn new physics) by the time it is stored.
        if self._context_source is not None and isinstance(replay_buffer, MixedReplayBuffer):
            replay_buffer.pending_context = self._episode_context
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        if self._context_source is not None:
            self._episode_context = self._context_source.matrix()

    def warm_start(self, real=None, synthetic=None) -> dict[str, int]:
        """Seed the buffers from datasets (``physai.synthetic.dataset.LoadedDataset``) before learning.

        Rows are routed by their ``source`` column, whichever dataset they come in: real rows go into the
        real replay buffer (and so into every model refit), synthetic rows into the model buffer as one
        round, which ages out like any round. ``num_timesteps`` still counts only env steps this run
        takes; the rows added are in ``warm_start_counts``.
        """
        counts = {"real": 0, "synthetic": 0, "dropped": 0}
        for dataset in (real, synthetic):
            if dataset is None:
                continue
            batch = dataset.transitions
            if len(batch) == 0:
                continue
            source = np.asarray(batch.source).reshape(-1)
            act = self._scale_actions(np.asarray(batch.act, dtype=np.float32).reshape(len(batch), -1))
            obs = np.asarray(batch.obs, np.float32).reshape(len(batch), -1)
            next_obs = np.asarray(batch.next_obs, np.float32).reshape(len(batch), -1)
            for rows, kind in ((source == SOURCE_REAL, "real"), (source != SOURCE_REAL, "synthetic")):
                if not rows.any():
                    continue
                if kind == "real":
                    context = self._dataset_context(dataset, batch, rows)
                    added = self.replay_buffer.add_rows(obs[rows], act[rows], next_obs[rows], batch.reward[rows],
                                                        batch.terminated[rows], batch.truncated[rows], context)
                    counts["dropped"] += int(rows.sum()) - added
                else:
                    added = self.model_buffer.add_round(obs[rows], act[rows], next_obs[rows], batch.reward[rows],
                                                        batch.terminated[rows])
                counts[kind] += added
        self.warm_start_counts = counts
        self.mbpo_stats["model_buffer_rows"] = len(self.model_buffer)
        log.info("MBPO warm start: %d real rows into the replay buffer, %d synthetic rows into the model buffer",
                 counts["real"], counts["synthetic"])
        return counts

    def _scale_actions(self, act: np.ndarray) -> np.ndarray:
        """Env actions -> the [-1, 1] actions SAC stores (and the ensemble is trained on)."""
        if isinstance(self.action_space, spaces.Box):
            return self.policy.scale_action(act).astype(np.float32)
        return act

    def _dataset_context(self, dataset, batch, rows: np.ndarray) -> Optional[np.ndarray]:
        if not self.context_names:
            return None
        context = batch.context
        tables = getattr(dataset, "provenance_tables", None)
        names = list(getattr(tables, "context_names", ()) or ())
        if context is None or context.shape[1] != len(self.context_names) or names != self.context_names:
            raise ConfigError(f"warm start: the dataset at {getattr(dataset, 'directory', '?')} does not carry the "
                              f"physics context {self.context_names} the world model is conditioned on; recollect "
                              f"it on this task, or set algo.use_context=false")
        return np.asarray(context, np.float32)[rows]

    # ------------------------------------------------------------------ model rounds

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        if self.num_timesteps >= self._next_model_round or not bool(self.dynamics_model.is_fitted):
            self._model_round()
        super().train(gradient_steps=gradient_steps, batch_size=batch_size)

    def current_rollout_length(self) -> int:
        return rollout_length_at(self.rollout_length, self.num_timesteps)

    def _model_round(self) -> None:
        """Refit the ensemble on all real data, then branch rollouts (from real states, and from the prompt
        when one is set) into the model buffer."""
        self._next_model_round = self.num_timesteps + self.model_train_every
        data = self.replay_buffer.real_transitions()
        rows = int(data["reward"].shape[0])
        if rows < MIN_FIT_ROWS:
            return
        stats = self.mbpo_stats
        figures = self.dynamics_model.fit(
            data["obs"], data["act"], data["next_obs"], data["reward"], data["terminated"], data["context"],
            holdout_fraction=self.model_holdout_fraction, batch_size=self.model_batch_size,
            max_epochs=self.model_max_epochs, max_seconds=self.model_train_seconds, patience=self.model_patience,
            progress=False, rng_seed=int(self.seed or 0) * 100_003 + stats["model_refits"])
        stats["model_refits"] += 1
        stats["last_val_mse"] = float(figures["elite_val_mse"])
        stats["model_fit_seconds"] += float(figures["train_seconds"])

        prompted = int(round(self.prompt_share * self.rollout_batch)) if self.prompt is not None else 0
        nominal = self.rollout_batch - prompted
        parts = ([self.generate(data, nominal, self.current_rollout_length())] if nominal else []) + \
                ([self.generate_prompted(data, prompted)] if prompted else [])
        self.model_buffer.add_round(*(np.concatenate([getattr(part, name) for part in parts])
                                      for name in ("obs", "act", "next_obs", "reward", "terminated")))
        seconds = sum(float(part.stats["seconds"]) for part in parts)
        stats["synthetic_generated"] += sum(len(part) for part in parts)
        stats["synthetic_prompted"] = stats.get("synthetic_prompted", 0) + (len(parts[-1]) if prompted else 0)
        stats["generation_seconds"] += seconds
        stats["generation_rate"] = (stats["synthetic_generated"] / stats["generation_seconds"]
                                    if stats["generation_seconds"] > 0 else None)
        stats["rollout_length"] = self.current_rollout_length()
        stats["model_buffer_rows"] = len(self.model_buffer)
        stats["real_steps"] = int(self.num_timesteps)
        stats["model_rounds"] += 1
        stats["last_round"] = {"fit_epochs": int(figures["epochs"]), "fit_seconds": float(figures["train_seconds"]),
                               "fit_stopped_by": figures["stopped_by"],
                               "transitions": sum(len(part) for part in parts),
                               "prompted_transitions": len(parts[-1]) if prompted else 0,
                               "mean_depth": float(np.mean([part.stats["mean_depth"] for part in parts])),
                               "stopped_uncertain": sum(int(part.stats["stopped_uncertain"]) for part in parts),
                               "terminated": sum(int(part.stats["terminated"]) for part in parts)}
        if hasattr(self, "_logger"):  # set up by learn(); a round run by hand has no logger
            for key in ("model_refits", "last_val_mse", "synthetic_generated", "generation_rate", "rollout_length",
                        "model_buffer_rows", "real_steps"):
                if stats[key] is not None:
                    self.logger.record(f"mbpo/{key}", stats[key])
        made = stats["last_round"]["transitions"]
        log.debug("MBPO round at step %d: val mse %.4g, %d synthetic rows (%.0f/s)", self.num_timesteps,
                  stats["last_val_mse"], made, made / max(seconds, 1e-9))

    def policy_fn(self, deterministic: bool = False):
        """Raw observations -> the [-1, 1] actions the current actor takes (what the model is fed)."""
        normalizer = self._vec_normalize_env

        def act(obs: np.ndarray) -> np.ndarray:
            if normalizer is not None:
                obs = normalizer.normalize_obs(obs)
            with th.no_grad():
                tensor = th.as_tensor(np.asarray(obs, np.float32), device=self.device)
                return self.actor(tensor, deterministic=deterministic).cpu().numpy()

        return act

    def set_prompt(self, scenario: Optional[Scenario]) -> None:
        """Start ``prompt_share`` of every round's branches from ``scenario`` (None: every branch from real states)."""
        if scenario is not None and scenario.context_ranges and not self.context_names:
            names = [scenario.context_names[i] for i in scenario.context_ranges]
            raise ConfigError(f"scenario {scenario.name!r} imagines physics context {names}, but this MBPO's world "
                              f"model is not conditioned on physics context (synthetic.world_model.use_context=false,"
                              f" or the task randomizes none); set synthetic.world_model.use_context=true")
        self.prompt = scenario

    def generate_prompted(self, data: dict[str, Optional[np.ndarray]], branches: int, rng=None):
        """``branches`` rollouts started, pushed and horizoned as the prompt says (``set_prompt``)."""
        rng = rng if rng is not None else np.random.default_rng(np.random.randint(2**31))
        prompt = replace(self.prompt, branches=branches)
        starts = sample_starts(prompt, rng, data["obs"], data["context"], np.arange(len(data["obs"])))
        self.policy.set_training_mode(False)
        return imagine(self.dynamics_model, self.policy_fn(), starts, prompt.horizon, prompt.max_disagreement, rng,
                       scenario=prompt)

    def generate(self, data: dict[str, Optional[np.ndarray]], branches: int, horizon: int, rng=None):
        """Branch ``branches`` rollouts of ``horizon`` steps from random rows of ``data`` (real transitions)."""
        rng = rng if rng is not None else np.random.default_rng(np.random.randint(2**31))
        pick = rng.integers(0, data["obs"].shape[0], size=branches)
        context = None if data["context"] is None else data["context"][pick]
        starts = Starts(obs=data["obs"][pick], context=context, parent_state_id=np.full(branches, -1, np.int64))
        self.policy.set_training_mode(False)
        return imagine(self.dynamics_model, self.policy_fn(), starts, horizon, self.max_disagreement, rng)


class _ContextSource:
    """Reads a physai engine's physics context (``context_matrix()``) for every env of a VecEnv."""

    def __init__(self, engines: list, rows: list[int]) -> None:
        self.engines, self.rows = engines, rows
        self.names = list(engines[0].context_names) if engines else []

    def matrix(self) -> np.ndarray:
        return np.concatenate([engine.context_matrix()[row: row + 1] if len(self.engines) > 1
                               else engine.context_matrix() for engine, row in zip(self.engines, self.rows)],
                              axis=0).astype(np.float32)


def _context_source(venv) -> Optional[_ContextSource]:
    """The physics context of a physai task's VecEnv (its batched engine, or single envs in a DummyVecEnv)."""
    inner = venv
    while inner is not None:
        engine = getattr(inner, "engine", None)
        if engine is not None and hasattr(engine, "context_matrix"):
            return _ContextSource([engine], [0])
        envs = getattr(inner, "envs", None)
        if envs:
            engines = [getattr(e.unwrapped, "engine", None) for e in envs]
            if all(e is not None and hasattr(e, "context_matrix") for e in engines):
                return _ContextSource(engines, [0] * len(engines))
            return None
        inner = getattr(inner, "venv", None)
    return None


def training_figures(model: MBPO) -> dict[str, Any]:
    """The figures a run records for MBPO: refits, last validation MSE, synthetic rows and their rate."""
    stats = model.mbpo_stats
    return finite_or_null({
        "model_refits": int(stats["model_refits"]), "last_val_mse": stats["last_val_mse"],
        "synthetic_generated": int(stats["synthetic_generated"]), "generation_rate_per_s": stats["generation_rate"],
        "real_steps": int(model.num_timesteps), "model_fit_seconds": float(stats["model_fit_seconds"]),
        "model_buffer_rows": int(stats["model_buffer_rows"]), "warm_start": dict(model.warm_start_counts),
        "synthetic_prompted": int(stats.get("synthetic_prompted", 0)),
        "prompt": model.prompt.name if model.prompt is not None else None})
