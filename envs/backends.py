"""Physics backends: what advances the batch's state by ``frame_skip`` physics steps.

The engine owns terms, resets and bookkeeping; a backend only steps physics, so a GPU
backend (mujoco-warp or MJX on a machine that has one) can replace the CPU one behind the
same call. The engine reads only the state and sensors the last physics step of a control step
leaves (``state_out[:, -1]``, ``sensor_out[:, -1]``); a backend need not fill the earlier rows
(the Warp backend keeps them on its device). Select one with ``env.backend=NAME``
(``physai.envs.spec.BACKENDS``) or a dotted class path.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

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

    # Calls spent timing one thread against all of them before settling on the faster: blocks of
    # CALIBRATION_BLOCK calls, one thread and the pool in turn, the first CALIBRATION_WARMUP calls of each
    # block not counted (the pool's threads wake from sleep there: timed call by call in alternation, every
    # pool call paid that wake-up, and the pool was declined where it is the faster).
    CALIBRATION_CALLS = 96
    CALIBRATION_BLOCK = 16
    CALIBRATION_WARMUP = 4
    # How much faster one thread must be before the given threads are declined.
    DECLINE_MARGIN = 0.05

    def __init__(self, model: mujoco.MjModel, num_envs: int, nthread: int) -> None:
        self.nthread = nthread
        self._datas = [mujoco.MjData(model) for _ in range(nthread)]
        self._pool = rollout.Rollout(nthread=nthread if nthread > 1 else 0)  # 0: run inline
        # A few chunks per thread: fewer hand-offs than rollout's default, still balanced across threads.
        self._chunk_size = max(1, -(-num_envs // (2 * nthread))) if nthread > 1 else None
        self.warmstart = np.zeros((1, model.nv)) if num_envs == 1 else None
        # Looked up once: the inline call's one MjData, and a view of its warm start (MjData arrays never move).
        self._inline_datas = self._datas[:1]
        self._last_warmstart = self._datas[0].qacc_warmstart
        # On a small model a thread hand-off can cost more than the physics it moves: the first calls time
        # one thread against all given ones (results do not depend on it); see _settle.
        self._inline = rollout.Rollout(nthread=0) if nthread > 1 else None
        self._timings: dict[bool, list[float]] = {True: [], False: []}
        self._calls = 0
        self._last_call: Optional[tuple[bool, float]] = None  # (inline?, its start) of the call being timed

    def step(self, models: Sequence[mujoco.MjModel], state: np.ndarray, control: np.ndarray,
             state_out: np.ndarray, sensor_out: np.ndarray) -> None:
        """Advance every row of ``state`` by ``control.shape[1]`` physics steps; fill the outputs."""
        if self._inline is not None:
            # A call is timed from its start to the next call's start: the physics and the engine's own work
            # until it steps again, which the pool's threads slow down where they keep cores busy after a call.
            now = time.perf_counter()
            if self._last_call is not None:
                self._timings[self._last_call[0]].append(now - self._last_call[1])
            if self._calls == self.CALIBRATION_CALLS:
                self._settle()
        if self._inline is None:
            self._run(self._pool, self._chunk_size, models, state, control, state_out, sensor_out)
            return
        block, position = divmod(self._calls, self.CALIBRATION_BLOCK)
        inline = block % 2 == 0
        self._last_call = (inline, now) if position >= self.CALIBRATION_WARMUP else None
        self._calls += 1
        if inline:
            self._run(self._inline, None, models, state, control, state_out, sensor_out)
        else:
            self._run(self._pool, self._chunk_size, models, state, control, state_out, sensor_out)

    def _run(self, pool, chunk_size, models, state, control, state_out, sensor_out) -> None:
        datas = self._datas if chunk_size is not None else self._inline_datas  # inline: one MjData
        pool.rollout(models, datas, state, control, nstep=control.shape[1], state=state_out,
                     sensordata=sensor_out, skip_checks=True, initial_warmstart=self.warmstart, chunk_size=chunk_size)
        if self.warmstart is not None:  # one env, stepped inline on _datas[0]: its warm start is there
            self.warmstart[0] = self._last_warmstart

    def _settle(self) -> None:
        """Decline the given threads only when one thread is clearly faster: by ``DECLINE_MARGIN`` in the
        median of the timed calls, so noise on the other core does not talk a batch out of threads that pay
        for themselves. A call's time runs to the next call, so the pool is judged by the whole step: its
        physics and the engine's work between steps, which its threads slow where they keep a core busy."""
        inline, pool = np.median(self._timings[True]), np.median(self._timings[False])
        if inline * (1 + self.DECLINE_MARGIN) < pool:
            self._pool.close()
            self._pool, self._chunk_size, self.nthread = self._inline, None, 1
        else:
            self._inline.close()
        self._inline = None

    def reset_envs(self, env_ids: np.ndarray) -> None:
        """Start these envs' solver cold, as ``mj_resetData`` does."""
        if self.warmstart is not None:
            self.warmstart[env_ids] = 0.0

    def scratch_bytes(self) -> int:
        return int(sum(d.nbuffer + d.narena for d in self._datas))

    def close(self) -> None:
        for pool in (self._pool, self._inline):
            if pool is not None:
                pool.close()
        self._pool = self._inline = None
