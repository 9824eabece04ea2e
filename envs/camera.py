"""Camera observations: every env of a batch rendered through one off-screen GL context.

A task with a ``pixels:`` section gives its policy camera frames (uint8 RGB, optionally depth in
metres), stacked over the last ``frame_stack`` control steps. Rendering a 64x64 frame costs far
more than the physics step, and most of that cost is fixed per draw and per read-back, so the
batch is drawn as tiles of one large framebuffer and read back once: the rasterizer (mesa's
llvmpipe on a CPU machine) then works on many tiles at once, with its own threads.

Each env is drawn with its own ``MjModel``: events that edit a model's colours, lights, materials
or camera pose (``physai.envs.mdp``'s visual randomization) show up in that env's frames.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Optional

import mujoco
import numpy as np

from physai.envs.rendering import unavailable_reason
from physai.envs.spec import CameraSpec, TaskError

# The largest framebuffer one draw of the batch uses; bigger batches are drawn in several passes.
MAX_FRAMEBUFFER = 2048
# Render flags switched off for training cameras: each costs tens of ms per frame on a CPU rasterizer.
SLOW_FLAGS = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX,
              mujoco.mjtRndFlag.mjRND_FOG, mujoco.mjtRndFlag.mjRND_HAZE)


@dataclass(frozen=True)
class Tiling:
    """Where env ``i`` of a pass is drawn: column ``i % cols``, row ``i // cols`` of a rows x cols grid."""

    cols: int
    rows: int

    @property
    def per_pass(self) -> int:
        return self.cols * self.rows


def tiling(num_envs: int, height: int, width: int) -> Tiling:
    cols = max(1, min(num_envs, MAX_FRAMEBUFFER // width))
    rows = max(1, min(-(-num_envs // cols), MAX_FRAMEBUFFER // height))
    return Tiling(cols, rows)


class BatchCamera:
    """Renders the engine's envs from one MJCF camera and keeps each env's stack of recent frames."""

    def __init__(self, engine: Any, spec: CameraSpec) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise TaskError(f"task {engine.spec.name}: pixels.camera={spec.camera!r} needs off-screen rendering, "
                            f"which is unavailable: {reason}")
        self.spec = spec
        self.engine = engine
        self.camera_id = engine.id_of("camera", spec.camera, "pixels.camera")
        self._check_size(engine)
        self.tiling = tiling(engine.num_envs, spec.height, spec.width)
        width, height = spec.width * self.tiling.cols, spec.height * self.tiling.rows
        # The GL context is sized from a model's offscreen buffer: a copy, so the task's model stays as written.
        context_model = copy.deepcopy(engine.model)
        context_model.vis.global_.offwidth, context_model.vis.global_.offheight = width, height
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(context_model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(engine.model, maxgeom=max(100, 2 * engine.model.ngeom))
        if spec.quality == "fast":
            for flag in SLOW_FLAGS:
                self._scene.flags[flag] = False
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = self.camera_id
        self._data = mujoco.MjData(engine.model)
        extent = engine.model.stat.extent
        self.near = engine.model.vis.map.znear * extent
        self.far = engine.model.vis.map.zfar * extent
        n, h, w, k = engine.num_envs, spec.height, spec.width, spec.frame_stack
        self.pixels = np.zeros((n, h, w, 3 * k), dtype=np.uint8)  # oldest frame first, RGB within a frame
        self.depth = np.zeros((n, h, w, k), dtype=np.float32) if spec.depth else None

    def _check_size(self, engine: Any) -> None:
        spec = self.spec
        limit = MAX_FRAMEBUFFER
        if spec.height > limit or spec.width > limit:
            raise TaskError(f"task {engine.spec.name}: pixels.height={spec.height}, pixels.width={spec.width} is "
                            f"larger than the {limit}x{limit} a camera observation can render; a policy's camera is "
                            f"usually 64-128 pixels a side")

    def check_render_rate(self) -> None:
        """Refuse a frame this machine cannot draw within the task's control period: a camera that cannot keep
        up with the control loop it observes (timed on one env, best of two draws after the first frames)."""
        one = np.arange(1)
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            self.render(one)
            seconds.append(time.perf_counter() - start)
        frame_ms, period_ms = 1e3 * min(seconds), 1e3 * self.engine.dt
        if frame_ms > period_ms:
            spec = self.spec
            raise TaskError(f"task {self.engine.spec.name}: pixels.height={spec.height}, pixels.width={spec.width} takes "
                            f"{frame_ms:.1f} ms per frame to render here, longer than the task's control period "
                            f"({period_ms:.1f} ms): the camera cannot keep up with the loop it observes. Lower "
                            f"pixels.height/width (policies see 64-128 pixels a side){'' if spec.quality == 'fast' else ' or use pixels.quality=fast'}")

    # ----- rendering -------------------------------------------------------------------------
    def render(self, env_ids: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Fresh frames of these envs: (len, H, W, 3) uint8 RGB and (len, H, W) depth in metres (or None)."""
        h, w = self.spec.height, self.spec.width
        rgb = np.empty((env_ids.size, h, w, 3), dtype=np.uint8)
        depth = np.empty((env_ids.size, h, w), dtype=np.float32) if self.spec.depth else None
        self._gl.make_current()
        per_pass = self.tiling.per_pass
        for start in range(0, env_ids.size, per_pass):
            batch = env_ids[start:start + per_pass]
            self._draw(batch)
            self._read(batch.size, rgb[start:start + batch.size],
                       None if depth is None else depth[start:start + batch.size])
        return rgb, depth

    def _draw(self, env_ids: np.ndarray) -> None:
        engine, data, cols = self.engine, self._data, self.tiling.cols
        h, w = self.spec.height, self.spec.width
        rows_used = -(-env_ids.size // cols)
        for slot, env_id in enumerate(env_ids.tolist()):
            model = engine.models[env_id]
            mujoco.mj_setState(model, data, engine.state[env_id], mujoco.mjtState.mjSTATE_FULLPHYSICS)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            mujoco.mjv_updateScene(model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL,
                                   self._scene)
            self._add_markers(env_id)
            row, col = divmod(slot, cols)
            # GL counts rows from the bottom: tile row 0 goes on top of the used area.
            viewport = mujoco.MjrRect(col * w, (rows_used - 1 - row) * h, w, h)
            mujoco.mjr_render(viewport, self._scene, self._context)

    def _add_markers(self, env_id: int) -> None:
        """Draw each marked command of this env as a sphere at its position (the scene's spare geoms)."""
        scene = self._scene
        for name, radius, rgba in self.spec.markers:
            if scene.ngeom >= scene.maxgeom:
                return
            position = np.zeros(3)
            value = self.engine.commands[name][env_id]
            position[:min(3, value.size)] = value[:3]
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], int(mujoco.mjtGeom.mjGEOM_SPHERE), np.array([radius, 0, 0]),
                                position, np.eye(3).reshape(-1), np.asarray(rgba, dtype=np.float32))
            scene.ngeom += 1

    def _read(self, count: int, rgb_out: np.ndarray, depth_out: Optional[np.ndarray]) -> None:
        cols = self.tiling.cols
        h, w = self.spec.height, self.spec.width
        rows_used = -(-count // cols)
        width = w * (cols if rows_used > 1 else count)
        rect = mujoco.MjrRect(0, 0, width, h * rows_used)
        rgb_buffer = np.empty((h * rows_used, width, 3), dtype=np.uint8)
        depth_buffer = None if depth_out is None else np.empty((h * rows_used, width), dtype=np.float32)
        mujoco.mjr_readPixels(rgb_buffer, depth_buffer, rect, self._context)
        # Back to image order (top row first), then cut into tiles.
        rgb = rgb_buffer[::-1].reshape(rows_used, h, -1, w, 3).swapaxes(1, 2).reshape(-1, h, w, 3)
        rgb_out[:] = rgb[:count]
        if depth_out is not None:
            z = depth_buffer[::-1].reshape(rows_used, h, -1, w).swapaxes(1, 2).reshape(-1, h, w)[:count]
            # The depth buffer is non-linear in [0, 1]: metres from the camera via the projection's near/far.
            np.minimum(self.near / (1.0 - z * (1.0 - self.near / self.far)), np.float32(self.far), out=depth_out)

    # ----- frame stacks ----------------------------------------------------------------------
    def capture(self, env_ids: Optional[np.ndarray] = None) -> None:
        """Render these envs (all by default) and push the frames onto their stacks."""
        env_ids = np.arange(self.engine.num_envs) if env_ids is None else env_ids
        if env_ids.size == 0:
            return
        rgb, depth = self.render(env_ids)
        if self.spec.frame_stack > 1:
            self.pixels[env_ids, :, :, :-3] = self.pixels[env_ids, :, :, 3:]
            if depth is not None:
                self.depth[env_ids, :, :, :-1] = self.depth[env_ids, :, :, 1:]
        self.pixels[env_ids, :, :, -3:] = rgb
        if depth is not None:
            self.depth[env_ids, :, :, -1] = depth

    def restart(self, env_ids: np.ndarray) -> None:
        """A new episode: every slot of these envs' stacks holds the first frame."""
        if env_ids.size == 0:
            return
        rgb, depth = self.render(env_ids)
        self.pixels[env_ids] = np.tile(rgb, (1, 1, 1, self.spec.frame_stack))
        if depth is not None:
            self.depth[env_ids] = depth[..., None]

    def observation(self, env_ids: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """The image part of the policy's observation (copies: the stacks change on the next step)."""
        index = slice(None) if env_ids is None else env_ids
        images = {"pixels": self.pixels[index].copy()}
        if self.depth is not None:
            images["depth"] = self.depth[index].copy()
        return images

    def close(self) -> None:
        if self._gl is not None:
            self._context.free()
            self._gl.free()
            self._gl = None
