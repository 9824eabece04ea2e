"""PPO from rsl-rl-lib (``algo=rsl_ppo``): the trainer Isaac Lab and mjlab train locomotion with, on physai's
batched engine, with actions, observations, rewards and the rollout storage as torch tensors.

SB3 converts every step's batch to numpy and back and stores it transition by transition; rsl-rl keeps the
rollout in preallocated tensors and updates on large minibatches, with an adaptive learning rate (a KL target)
and empirical observation normalization. What leaves training is an ordinary physai checkpoint: the actor and
critic copied into SB3's ``ActorCriticPolicy`` of the same layers (``algo._target_`` names it), the
normalization folded into the first layer of each, so evaluation, export, bundle, profile and gates treat the
policy like any other. rsl-rl-lib comes with the ``warp`` extra; it is imported only when this trainer runs.
The env adapter, the settings and one iteration live in physai.train.rsl_env, which the GPU host runs alone.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import Progress
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from physai.config.schema import RSL_PPO_KEYS
from physai.core.errors import ConfigError
from physai.envs.engine import BatchedEngine
from physai.train.checkpoints import (CHECKPOINT_DIR, CURVE_COPY, FINAL_NAME, CheckpointError, latest_checkpoint,
                                      read_trainer_state, step_name, verify_checkpoint)
from physai.train.guards import (NonFiniteError, StopSignals, TrainingInterrupted, check_parameters,
                                 nonfinite_message)
from physai.train.rsl_env import (EngineVecEnv, batch_device, build_ppo, rollout_and_update,
                                  rsl_rl_process_state)
from physai.train.sb3 import (TRAIN_PROGRESS_COLUMNS, build_model, interrupted_message, read_curve,
                              write_checkpoint, write_training_progress)

log = logging.getLogger(__name__)

TRAINER_NAME = "rsl_rl.PPO"  # in every checkpoint's trainer state: what can continue it
INSTALL_HINT = "pip install -e '.[warp]' (rsl-rl-lib comes with the warp extra)"


class RslPPO(SB3PPO):
    """SB3's PPO as the carrier of an rsl-rl-trained policy (``algo._target_``): checkpoints, prediction and
    export read its ``ActorCriticPolicy``, into which :func:`copy_into` copies rsl-rl's actor and critic. Training
    runs in :func:`train_rsl_ppo`, never through SB3's ``learn``."""

    trainer_settings = RSL_PPO_KEYS  # read by train_rsl_ppo, not by SB3's constructor
    RSL_STATE_FILE = "rsl_state.pt"
    rsl_state: Optional[dict[str, Any]] = None  # rsl-rl's own state (weights, optimizer, normalization)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rsl_state"]  # it has its own file, never pickled into model.zip

    def learn(self, *args, **kwargs):
        raise ConfigError("an algo=rsl_ppo policy trains with physai.train.rsl_ppo.train_rsl_ppo (train.py "
                          "algo=rsl_ppo), not SB3's learn()")

    def save_extras(self, directory, task_id: str) -> None:
        """Checkpoint hook: rsl-rl's state beside SB3's copy, tensors and numbers only (read back with
        ``torch.load(weights_only=True)``), so a run continues where it stopped."""
        if self.rsl_state is not None:
            torch.save(self.rsl_state, Path(directory) / self.RSL_STATE_FILE)



def check_rsl_ppo(cfg: DictConfig, task) -> None:
    """What algo=rsl_ppo cannot train, refused before anything runs."""
    if importlib.util.find_spec("rsl_rl") is None:
        raise ConfigError(f"algo=rsl_ppo needs rsl-rl-lib, which is not installed; {INSTALL_HINT}")
    if task.task is None:
        raise ConfigError(f"algo=rsl_ppo trains on physai's batched engine, and env {task.id} is a gymnasium id; "
                          f"choose a physai task (its batched twin where there is one, e.g. env=physai_half_cheetah)")
    if task.task_spec.pixels is not None:
        raise ConfigError(f"algo=rsl_ppo trains on flat state observations, and env {task.id} gives the policy "
                          f"camera images; train it with algo=ppo or algo=sac")
    if cfg.algo.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"algo.device=cuda: torch {torch.__version__} finds no CUDA device on this machine; set "
                          f"algo.device=cpu (the default)")
    if cfg.algo.normalize_reward:
        raise ConfigError("algo=rsl_ppo has no reward normalization; set algo.normalize_reward=false")
    if not len(cfg.algo.net_arch):
        raise ConfigError("algo.net_arch=[]: rsl-rl's networks need at least one hidden layer, e.g. "
                          "algo.net_arch=[128,128]")
    rollout = int(cfg.algo.n_steps) * int(cfg.algo.n_envs)
    if rollout % int(cfg.algo.batch_size):
        raise ConfigError(f"algo.batch_size={cfg.algo.batch_size} does not divide a rollout (algo.n_steps x "
                          f"algo.n_envs = {rollout}); rsl-rl splits a rollout into equal minibatches, so pick a "
                          f"divisor, e.g. algo.batch_size={rollout // max(1, rollout // int(cfg.algo.batch_size))}")
    if cfg.evaluate.interval_steps:
        raise ConfigError(f"evaluate.interval_steps={cfg.evaluate.interval_steps}: evaluations during training (and a "
                          f"sweep's pruning, which they feed) run with SB3's algorithms; set "
                          f"evaluate.interval_steps=null for algo=rsl_ppo")


def _linear_layers(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def _copy_mlp(rsl_model: nn.Module, hidden: nn.Module, head: nn.Linear) -> None:
    """Copy an rsl-rl MLPModel's layers into SB3's hidden layers and head, its observation normalization
    (``(x - mean) / (std + eps)``) folded into the first layer: ``W' = W / (std + eps)``, ``b' = b - W' mean``."""
    source = _linear_layers(rsl_model.mlp)
    target = [*_linear_layers(hidden), head]
    if [tuple(layer.weight.shape) for layer in source] != [tuple(layer.weight.shape) for layer in target]:
        raise ValueError(f"rsl-rl layers {[tuple(l.weight.shape) for l in source]} do not match SB3's "
                         f"{[tuple(l.weight.shape) for l in target]}")
    with torch.no_grad():
        for src, dst in zip(source, target):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        if getattr(rsl_model, "obs_normalization", False):
            normalizer = rsl_model.obs_normalizer
            scale = 1.0 / (normalizer.std.double() + normalizer.eps)
            weight = source[0].weight.double() * scale
            target[0].weight.copy_(weight)
            target[0].bias.copy_(source[0].bias.double() - weight @ normalizer.mean.double())


def sb3_carrier(algo: DictConfig, task, seed: int) -> RslPPO:
    """The SB3 PPO that carries the policy into checkpoints, built once before training: SB3's constructor
    reseeds torch, numpy and python, which must not happen between rsl-rl's draws. Close its env when done."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SB3's rollout-size advice for one env: it never rolls out
        return build_model(algo, DummyVecEnv([task.env_fn()]), seed)


def copy_into(carrier: RslPPO, alg, timesteps: int, iteration: int) -> RslPPO:
    """Put rsl-rl's actor and critic into the carrier's ``ActorCriticPolicy`` (the form every later stage
    reads), with rsl-rl's own state (and torch's generator, which draws its actions and minibatches) for
    resuming."""
    policy = carrier.policy
    _copy_mlp(alg.actor, policy.mlp_extractor.policy_net, policy.action_net)
    _copy_mlp(alg.critic, policy.mlp_extractor.value_net, policy.value_net)
    distribution = alg.actor.distribution
    with torch.no_grad():
        log_std = (distribution.log_std_param.clamp(*distribution.log_std_range) if distribution.std_type == "log"
                   else distribution.std_param.clamp(*distribution.std_range).log())
        policy.log_std.copy_(log_std)
    carrier.num_timesteps = int(timesteps)
    carrier.rsl_state = {**alg.save(), "iteration": int(iteration), "learning_rate": float(alg.learning_rate),
                         "torch_rng": torch.get_rng_state()}
    if next(alg.actor.parameters()).is_cuda:  # algo.device=cuda: actions and minibatches are drawn on the GPU
        carrier.rsl_state["cuda_rng"] = torch.cuda.get_rng_state()
    return carrier


def _named_parameters(alg):
    yield from (("actor." + name, p) for name, p in alg.actor.named_parameters())
    yield from (("critic." + name, p) for name, p in alg.critic.named_parameters())


def _resume_point(checkpoints: Path, run_dir: Path) -> tuple[Optional[Path], dict[str, Any]]:
    """The newest complete checkpoint to continue from and its trainer state (None and {} when there is none)."""
    checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is None:
        log.info("resume=true but %s holds no checkpoint: starting a fresh run", checkpoints)
        return None, {}
    verify_checkpoint(checkpoint, run_dir)
    state = read_trainer_state(checkpoint)
    if state.get("trainer") != TRAINER_NAME or not (checkpoint / RslPPO.RSL_STATE_FILE).is_file():
        raise CheckpointError(f"{checkpoint} was not written by algo=rsl_ppo; resume it with the algorithm it was "
                              f"trained with (its run's config.yaml)")
    return checkpoint, state


def train_rsl_ppo(task, algo: DictConfig, seed: int, run_dir: Path, tracker, resume: bool) -> dict[str, Any]:
    """Train until ``algo.total_timesteps`` (whole rollouts), checkpointing every ``algo.checkpoint_every_steps``
    and at the end in SB3's form plus rsl-rl's state. ``resume`` continues from the newest checkpoint: weights,
    optimizer, learning rate and normalization; the env batch starts fresh episodes. SIGINT/SIGTERM save a
    checkpoint at the next rollout boundary and raise ``TrainingInterrupted``."""
    with rsl_rl_process_state():
        return _train(task, algo, seed, run_dir, tracker, resume)


def _train(task, algo: DictConfig, seed: int, run_dir: Path, tracker, resume: bool) -> dict[str, Any]:
    torch.set_num_threads(algo.torch_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / CHECKPOINT_DIR
    checkpoint, state = _resume_point(checkpoints, run_dir) if resume else (None, {})
    curve = [row for row in read_curve(checkpoint / CURVE_COPY) if row["timesteps"] <= state["timesteps"]] \
        if checkpoint is not None else []
    timesteps = int(state.get("timesteps", 0))
    engine = BatchedEngine(task.train_spec, int(algo.n_envs), seed=seed + timesteps, nthread=task.nthread,
                           backend=task.backend,
                           array_device=batch_device(task.backend, str(algo.device), task.train_spec))
    env = EngineVecEnv(engine, timesteps, device=str(algo.device))
    carrier = sb3_carrier(algo, task, seed)
    torch.manual_seed(seed)
    alg = build_ppo(env, algo, str(algo.device))
    iteration = 0
    if checkpoint is not None:
        saved = torch.load(checkpoint / RslPPO.RSL_STATE_FILE, weights_only=True, map_location="cpu")
        try:
            alg.load(saved, None, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint} does not fit the configured rsl_ppo networks ({exc}); resume it "
                                  f"with the config it was trained with (its run's config.yaml)") from exc
        alg.learning_rate = float(saved["learning_rate"])
        for group in alg.optimizer.param_groups:
            group["lr"] = alg.learning_rate
        iteration = int(saved["iteration"])
        torch.set_rng_state(saved["torch_rng"])
        if "cuda_rng" in saved and str(algo.device) == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"])
        log.info("resuming rsl_ppo from %s at step %d", checkpoint, timesteps)
    per_iteration = int(algo.n_steps) * env.num_envs
    remaining = max(0, -(-(int(algo.total_timesteps) - timesteps) // per_iteration))
    every = int(algo.checkpoint_every_steps)
    next_checkpoint = (timesteps // every + 1) * every
    last_checkpoint = checkpoint

    def save(name: str) -> Path:
        return write_checkpoint(copy_into(carrier, alg, timesteps, iteration), run_dir, name, curve,
                                keep=algo.keep_checkpoints, task_id=task.id,
                                trainer_state={"trainer": TRAINER_NAME, "total_timesteps": int(algo.total_timesteps)})

    def progress_file(last: Optional[Path]) -> None:
        write_training_progress(run_dir, timesteps, algo.total_timesteps, last)

    obs = env.get_observations()
    alg.train_mode()
    try:
        with StopSignals() as stop, Progress(*TRAIN_PROGRESS_COLUMNS) as progress:
            bar = progress.add_task("train (rsl-rl PPO)", total=timesteps + remaining * per_iteration,
                                    completed=timesteps)
            for _ in range(remaining):
                obs, losses = rollout_and_update(alg, env, obs, int(algo.n_steps))
                timesteps, iteration = env.timesteps, iteration + 1
                problem = check_parameters(_named_parameters(alg), timesteps)
                if problem is None and not all(math.isfinite(float(v)) for v in losses.values() if v is not None):
                    problem = f"a non-finite loss in the update at step {timesteps}: {losses}"
                if problem is not None:
                    raise NonFiniteError(nonfinite_message(problem, last_checkpoint, run_dir))
                for row in env.finished:
                    tracker.log({f"train/{key}": value for key, value in row.items()})
                curve.extend(env.finished)
                env.finished.clear()
                tracker.log({f"train/{key}": float(value) for key, value in losses.items() if value is not None}
                            | {"train/learning_rate": alg.learning_rate})
                recent = [row["episode_return"] for row in curve[-20:]]
                progress.update(bar, completed=timesteps, description=(
                    f"train (rsl-rl PPO)  return {np.mean(recent):8.1f}" if recent else "train (rsl-rl PPO)"))
                if stop.requested is not None:
                    saved_at = save(step_name(timesteps))
                    progress_file(saved_at)
                    raise TrainingInterrupted(interrupted_message(stop.requested, saved_at, run_dir), stop.requested)
                if timesteps >= next_checkpoint and timesteps < algo.total_timesteps:
                    last_checkpoint = save(step_name(timesteps))
                    next_checkpoint = (timesteps // every + 1) * every
                progress_file(last_checkpoint)
            final = save(FINAL_NAME)
            progress_file(final)
    finally:
        env.close()
        carrier.get_env().close()
    return {"checkpoint": str(final.relative_to(run_dir)), "timesteps": timesteps,
            "resumed_from_step": int(state["timesteps"]) if checkpoint is not None else None,
            "episodes": len(curve), "model_based": None, "distillation": None}
