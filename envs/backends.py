"""Physics backends: what advances the batch's state by ``frame_skip`` physics steps.

The engine owns terms, resets and bookkeeping; a backend only steps physics, so a GPU
backend (mujoco-warp or MJX on a machine that has one) can replace the CPU one behind the
same call. Select one with ``env.backend=<dotted.path.Class>``.
"""

from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np
from mujoco import rollout


class RolloutBackend:
    """MuJoCo's C ``rollout`` over all envs on a persistent thread pool (threads made once).

    The constraint solver's warm start (``qacc_warmstart``) is not part of the full-physics state
    that rollout takes and returns: rollout accepts one (``initial_warmstart``) but hands none back,
    and each per-thread ``MjData`` keeps only the last env it stepped. With one env that ``MjData``
    is the env's own, so its warm start is carried from step to step and zeroed at reset (as
    ``mj_resetData`` does): one env then follows ``mj_step`` on a single ``MjData`` (gymnasium's
    envs) bit for bit. In a batch every step starts the solver cold, so contact-rich trajectories
    drift from gymnasium's after some tens of steps (same dynamics, different solver start).
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, nthread: int) -> None:
        self.nthread = nthread
        self._datas = [mujoco.MjData(model) for _ in range(nthread)]
        self._pool = rollout.Rollout(nthread=nthread if nthread > 1 else 0)  # 0: run inline
        self.warmstart = np.zeros((1, model.nv)) if num_envs == 1 else None

    def step(self, models: Sequence[mujoco.MjModel], state: np.ndarray, control: np.ndarray,
             state_out: np.ndarray, sensor_out: np.ndarray) -> None:
        """Advance every row of ``state`` by ``control.shape[1]`` physics steps; fill the outputs."""
        self._pool.rollout(models, self._datas, state, control, nstep=control.shape[1], state=state_out,
                           sensordata=sensor_out, skip_checks=True, initial_warmstart=self.warmstart)
        if self.warmstart is not None:  # one env, stepped inline on _datas[0]: its warm start is there
            self.warmstart[0] = self._datas[0].qacc_warmstart

    def reset_envs(self, env_ids: np.ndarray) -> None:
        """Start these envs' solver cold, as ``mj_resetData`` does."""
        if self.warmstart is not None:
            self.warmstart[env_ids] = 0.0

    def scratch_bytes(self) -> int:
        return int(sum(d.nbuffer + d.narena for d in self._datas))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
