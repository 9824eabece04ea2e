"""rsl-rl's PPO on the batched engine, with nothing else of the training stack: the env adapter rsl-rl reads,
its settings from physai's PPO keys, and one rollout-and-update iteration.

``algo=rsl_ppo`` (physai.train.rsl_ppo) trains through these with checkpoints, tracking and SB3's policy form
around them; the GPU host's training benchmark (physai.bench.device_train), which has no SB3, Hydra or wandb,
trains through them alone. rsl-rl-lib is imported only when an algorithm is built.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from physai.envs.engine import BatchedEngine, host_only_reason
from physai.envs.spec import TaskSpec, backend_class
from physai.train.episodes import curve_row

log = logging.getLogger(__name__)


class EngineVecEnv:
    """What rsl-rl's PPO reads of its ``VecEnv`` over the batched engine (duck-typed: the batch's size and
    action width, observations as a TensorDict on ``device``, ``step``). Finished episodes are kept for the
    learning curve as the engine reports them."""

    def __init__(self, engine: BatchedEngine, timesteps: int = 0, device: str = "cpu") -> None:
        from tensordict import TensorDict

        self._tensordict = TensorDict
        self.engine = engine
        self.num_envs = engine.num_envs
        self.num_actions = engine.num_actions
        self.device = device
        self.finished: list[dict[str, float]] = []  # curve rows of the episodes ended since the caller took them
        self.timesteps = timesteps  # env steps of the run so far, resumed ones included
        engine.reset_envs(np.arange(self.num_envs))
        self._obs = self._observation(engine.observe())

    def _tensor(self, array: Any) -> torch.Tensor:
        """A batch array of the engine as a tensor on ``device``: numpy's from the host engine, or the
        device-resident engine's own tensor (no copy where it already lives there)."""
        tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
        return tensor.to(self.device)

    def _observation(self, obs: Any):
        return self._tensordict({"policy": self._tensor(obs)}, batch_size=[self.num_envs])

    def get_observations(self):
        return self._obs

    def step(self, actions: torch.Tensor):
        actions = actions.detach()
        if self.engine.array_device is None:
            out = self.engine.step(actions.to("cpu", torch.float64).numpy())
        else:  # the batch lives on a device: the actions go there, nothing comes back to the host
            out = self.engine.step(actions.to(self.engine.xp.device, torch.float64))
        self.timesteps += self.num_envs
        raw = out["info"]
        if "done_ids" in raw:
            # Python numbers: one copy from a device for all the finished envs (numpy and torch alike)
            returns, lengths = raw["episode_return"].tolist(), raw["episode_length"].tolist()
            terms = {name: sums.tolist() for name, sums in raw["episode_terms"].items()}
            for row in range(len(returns)):
                self.finished.append(curve_row(self.timesteps, returns[row], lengths[row],
                                               {name: sums[row] for name, sums in terms.items()}))
        self._obs = self._observation(out["obs"])
        terminated, truncated = self._tensor(out["terminated"]), self._tensor(out["truncated"])
        # Time limits and blow-ups are truncations: rsl-rl bootstraps them with the value estimate.
        extras = {"time_outs": truncated & ~terminated}
        return self._obs, self._tensor(out["reward"]).to(torch.float32), terminated | truncated, extras

    def close(self) -> None:
        self.engine.close()


def batch_device(backend: str, policy_device: str, spec: TaskSpec) -> Optional[str]:
    """Where the engine keeps its batch for rsl-rl: beside the networks where the physics runs on that device too
    (a backend that steps torch tensors, env.backend=warp), so a training step moves no batch across; else on the
    host, in numpy (the C engine, a task only the host engine runs, or networks on another device)."""
    physics = backend_class(backend)
    if not getattr(physics, "steps_tensors", False) or host_only_reason(spec) is not None:
        return None
    if torch.device(policy_device).type != physics.torch_device_type():
        return None
    return str(policy_device)


def runner_config(algo: Mapping[str, Any]) -> dict[str, Any]:
    """rsl-rl's PPO and model settings from physai's PPO keys (one meaning per key across trainers); ``algo`` is
    the run's ``algo`` config or a plain mapping of the same keys."""
    rollout = int(algo["n_steps"]) * int(algo["n_envs"])
    # The schema's activation choices (tanh, relu, elu) are rsl-rl's names too.
    model = {"class_name": "MLPModel", "hidden_dims": list(algo["net_arch"]), "activation": str(algo["activation"]),
             "obs_normalization": bool(algo["normalize_obs"])}
    return {
        "num_steps_per_env": int(algo["n_steps"]),
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "multi_gpu": None,
        "actor": {**model, "distribution_cfg": {"class_name": "GaussianDistribution",
                                                "init_std": math.exp(float(algo["log_std_init"]))}},
        "critic": dict(model),
        "algorithm": {"class_name": "PPO", "num_learning_epochs": int(algo["n_epochs"]),
                      "num_mini_batches": rollout // int(algo["batch_size"]), "clip_param": float(algo["clip_range"]),
                      "gamma": float(algo["gamma"]), "lam": float(algo["gae_lambda"]),
                      "value_loss_coef": float(algo["vf_coef"]), "entropy_coef": float(algo["ent_coef"]),
                      "learning_rate": float(algo["learning_rate"]), "max_grad_norm": float(algo["max_grad_norm"]),
                      "schedule": str(algo["schedule"]), "desired_kl": float(algo["desired_kl"])},
    }


def import_rsl_rl():
    """rsl-rl's PPO class (importing rsl-rl brings in tensordict and tensorboard: a second or more, once)."""
    from rsl_rl.algorithms import PPO

    return PPO


def build_ppo(env: EngineVecEnv, algo: Mapping[str, Any], device: str):
    """rsl-rl's PPO for ``env`` from physai's PPO keys, its networks on ``device``."""
    PPO = import_rsl_rl()
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # rsl-rl prints its models; keep them in the log
        alg = PPO.construct_algorithm(env.get_observations(), env, runner_config(algo), device)
    log.debug("rsl-rl models:\n%s", printed.getvalue())
    return alg


def rollout_and_update(alg, env: EngineVecEnv, obs, n_steps: int) -> tuple[Any, dict[str, float]]:
    """One PPO iteration: ``n_steps`` steps of every env with the current policy, then rsl-rl's update.
    Returns the latest observations (the next rollout starts from them) and the update's losses."""
    with torch.inference_mode():
        for _ in range(n_steps):
            actions = alg.act(obs)
            obs, rewards, dones, extras = env.step(actions)
            alg.process_env_step(obs, rewards, dones, extras)
        alg.compute_returns(obs)
    return obs, alg.update()


@contextlib.contextmanager
def rsl_rl_process_state() -> Iterator[None]:
    """rsl-rl's distributions switch off torch.distributions' argument checks for the whole process (a speed-up
    for its own); SB3 relies on them to report a NaN policy output, so they are put back on leaving."""
    before = torch.distributions.Distribution._validate_args
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)
