"""Guards that stop a training run cleanly: non-finite numbers, and SIGTERM/SIGINT.

* **Non-finite values.** The training callback checks the raw observations and rewards of every
  step, the losses SB3 logged at every update, and every parameter of the policy before each
  checkpoint. The first NaN or infinity stops the run with a :class:`NonFiniteError` that names
  where it appeared (the observation column, the reward, the loss or the parameter tensor), the
  step, and the last good checkpoint, which is left exactly as it was.
* **Stop signals.** :class:`StopSignals` turns SIGTERM (a scheduler's preemption) and SIGINT
  (Ctrl-C) into a request: the callback stops at the next step, a checkpoint is written, and the
  run exits with :class:`TrainingInterrupted`'s code, 128 + the signal number (143 for SIGTERM).
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from physai.core.errors import PhysaiError


class NonFiniteError(PhysaiError):
    """Training produced (or was fed) a NaN or an infinity; nothing after the last good checkpoint is kept."""


class TrainingInterrupted(PhysaiError):
    """A stop signal ended training after a checkpoint was written; resuming continues from it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _where(mask: np.ndarray, names: Optional[Sequence[str]], limit: int = 4) -> str:
    """``env 0 column velocities[1]`` for the first few non-finite entries of a (n_envs, dim) batch."""
    parts = []
    for env, column in zip(*np.nonzero(mask)):
        label = names[column] if names is not None and column < len(names) else f"obs[{column}]"
        parts.append(f"env {env} column {label}")
        if len(parts) == limit:
            break
    more = int(mask.sum()) - len(parts)
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def check_observations(obs: Any, names: Optional[Sequence[str]], source: str = "observation") -> Optional[str]:
    """A description of the first non-finite entries of a batch of observations, or None when all are finite."""
    array = np.asarray(obs)
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return None
    flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    mask = ~np.isfinite(flat)
    return f"non-finite {source} ({flat[mask][0]}) in {_where(mask, names)}"


def check_rewards(rewards: Any) -> Optional[str]:
    array = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if np.isfinite(array).all():
        return None
    bad = np.flatnonzero(~np.isfinite(array))
    return f"non-finite reward ({array[bad[0]]}) in env(s) {bad[:8].tolist()}{' and more' if bad.size > 8 else ''}"


class NonFiniteInEnv(Exception):
    """Raised by :class:`FiniteCheckVecEnv`; the trainer turns it into a :class:`NonFiniteError` with the step."""

    def __init__(self, problem: str, during_reset: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.during_reset = during_reset


class FiniteCheckVecEnv(VecEnvWrapper):
    """Checks what the envs return, raw (below any VecNormalize, whose clipping would hide an infinity):
    observations, rewards and the terminal observations of finished episodes."""

    def __init__(self, venv: VecEnv, names: Optional[Sequence[str]] = None) -> None:
        super().__init__(venv)
        self.names = list(names) if names else None

    def reset(self):
        obs = self.venv.reset()
        if not isinstance(obs, dict):
            problem = check_observations(obs, self.names, "observation after a reset")
            if problem is not None:
                raise NonFiniteInEnv(problem, during_reset=True)
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        problem = None if isinstance(obs, dict) else check_observations(obs, self.names)
        if problem is None:
            problem = check_rewards(rewards)
        if problem is None:
            for env in np.flatnonzero(dones):
                terminal = infos[env].get("terminal_observation")
                if terminal is not None and not isinstance(terminal, dict):
                    problem = check_observations(np.asarray(terminal)[None], self.names,
                                                 f"terminal observation of env {env}")
                    if problem is not None:
                        problem = problem.replace("in env 0 column", "in column")
                        break
        if problem is not None:
            raise NonFiniteInEnv(problem)
        return obs, rewards, dones, infos


def check_losses(values: dict[str, Any], step: int) -> Optional[str]:
    """SB3's logged update figures (``train/loss``, ``train/actor_loss``, ...): the first non-finite one."""
    for key, value in values.items():
        if not key.startswith("train/"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            return f"non-finite loss {key}={number} after the update before step {step}"
    return None


def check_parameters(named_parameters: Iterable[tuple[str, Any]], step: int) -> Optional[str]:
    """The first parameter tensor (by name) holding a NaN or infinity."""
    import torch

    for name, tensor in named_parameters:
        data = tensor.detach()
        if not bool(torch.isfinite(data).all()):
            count = int((~torch.isfinite(data)).sum())
            return f"non-finite parameter {name} ({count} of {data.numel()} entries) at step {step}"
    return None


def model_parameters(model) -> Iterable[tuple[str, Any]]:
    """Every trainable tensor of an SB3 algorithm: its policy, plus SAC's entropy coefficient."""
    yield from (("policy." + name, p) for name, p in model.policy.named_parameters())
    log_ent_coef = getattr(model, "log_ent_coef", None)
    if log_ent_coef is not None:
        yield "log_ent_coef", log_ent_coef


def nonfinite_message(problem: str, last_good: Optional[Path], run_dir: Path) -> str:
    if last_good is not None:
        keep = (f"the last good checkpoint, {last_good}, was left as it was; `physai run {run_dir} resume=true` "
                f"continues from it once the cause is fixed")
    else:
        keep = "no checkpoint had been written yet"
    return (f"training stopped: {problem}; {keep}. Common causes: a learning rate too large for the task "
            f"(algo.learning_rate), a reward or observation term that divides by zero or overflows, or an env that "
            f"returns NaN")


class StopSignals:
    """While active, SIGTERM and SIGINT set ``requested`` instead of killing the process.

    A second signal of the same kind while a stop is pending falls back to the previous handler,
    so a stuck run can still be killed with a repeated Ctrl-C.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested is not None:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
                return
            if previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)
            return
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
