"""Off-screen rendering is optional equipment: choose MuJoCo's GL backend once per process, safely.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is first imported, and a backend that fails
can leave the process unable to render at all, or abort it on the next attempt (GLFW without a
display does). So the choice is made before MuJoCo is imported, by rendering one tiny frame in a
child process for each candidate: the user's ``MUJOCO_GL`` if set, else EGL, then OSMesa (then GLFW
where a display exists). The winner is exported as ``MUJOCO_GL``; when none works, rendering is
switched off (``MUJOCO_GL=disable``) and the reason is kept, so a run goes on without video and its
report says why. The decision travels to child processes in ``PHYSAI_GL_DECISION``, so a training
subprocess does not probe again.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from typing import Optional

log = logging.getLogger(__name__)
# PyOpenGL announces at INFO that its optional C accelerator is missing, in every run that renders.
logging.getLogger("OpenGL").setLevel(logging.WARNING)

DECISION_VARIABLE = "PHYSAI_GL_DECISION"
OFF_VALUES = ("disable", "disabled", "off", "false", "0")
PROBE_TIMEOUT_S = 60.0

# What provides each backend on Debian/Ubuntu, for the message that says how to get it.
SYSTEM_PACKAGES = {
    "egl": "libegl1 and libgl1-mesa-dri (mesa's EGL renders on the CPU without a GPU)",
    "osmesa": "libosmesa6",
    "glfw": "a running X or Wayland display (DISPLAY) and libglfw3",
    "glx": "a running X display (DISPLAY) and libgl1",
}

_PROBE_SCRIPT = """
import mujoco
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><light pos='0 0 1'/><geom size='0.1'/></worldbody></mujoco>")
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, height=16, width=16)
renderer.update_scene(data)
frame = renderer.render()
assert frame.shape == (16, 16, 3), frame.shape
renderer.close()
"""

_reason_unavailable: Optional[str] = None
_decided = False


def choose_gl_backend() -> Optional[str]:
    """Decide, once per process, which GL backend MuJoCo uses; return why rendering is off, or None."""
    global _decided, _reason_unavailable
    if _decided:
        return _reason_unavailable
    _decided = True
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    inherited = os.environ.get(DECISION_VARIABLE, "")
    if inherited.startswith(requested + "|"):  # a parent process already probed this very setting
        reason = inherited[len(requested) + 1:]
        _reason_unavailable = reason or None
        return _reason_unavailable
    _reason_unavailable = _decide(requested)
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    os.environ[DECISION_VARIABLE] = f"{chosen}|{_reason_unavailable or ''}"
    return _reason_unavailable


def _decide(requested: str) -> Optional[str]:
    if requested in OFF_VALUES:
        return f"rendering is switched off (MUJOCO_GL={requested})"
    if "mujoco" in sys.modules:
        # Too late to choose: MuJoCo already bound its backend. Check that one without touching it here.
        error = probe(requested)
        if error is None:
            return None
        return (f"MuJoCo was imported before physai could choose a renderer, with MUJOCO_GL={requested or 'unset'}, "
                f"which does not render here ({error}); set MUJOCO_GL=egl before starting Python, or import physai "
                f"first")
    if requested:
        error = probe(requested)
        if error is None:
            return None
        os.environ["MUJOCO_GL"] = "disable"
        package = SYSTEM_PACKAGES.get(requested, "the system library for that backend")
        reason = (f"MUJOCO_GL={requested} does not render on this machine ({error}); it needs {package}. "
                  f"Install it, or unset MUJOCO_GL to let physai pick a backend that works")
        log.warning("no videos in this run: %s", reason)
        return reason
    errors = []
    for candidate in _candidates():
        error = probe(candidate)
        if error is None:
            if candidate:
                os.environ["MUJOCO_GL"] = candidate
            return None
        errors.append(f"{candidate or 'default'}: {error}")
    os.environ["MUJOCO_GL"] = "disable"
    reason = ("no off-screen renderer works on this machine (" + "; ".join(errors) + "); for EGL install "
              f"{SYSTEM_PACKAGES['egl']}, or install {SYSTEM_PACKAGES['osmesa']} for OSMesa")
    log.warning("no videos in this run: %s", reason)
    return reason


def _candidates() -> list[str]:
    """Backends to try, in order; '' is MuJoCo's own default (CGL on macOS, WGL or GLFW elsewhere)."""
    if platform.system() != "Linux":
        return [""]
    candidates = ["egl", "osmesa"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        candidates.append("glfw")
    return candidates


def probe(backend: str) -> Optional[str]:
    """Render one small frame with ``MUJOCO_GL=backend`` in a child process; None if it worked, else why not."""
    env = {**os.environ, "MUJOCO_GL": backend}
    env.pop(DECISION_VARIABLE, None)
    if backend in ("egl", "osmesa") and env.get("PYOPENGL_PLATFORM") not in (None, "", backend):
        env["PYOPENGL_PLATFORM"] = backend  # PyOpenGL refuses a platform other than the one MuJoCo binds
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT], env=env, capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"a test frame took longer than {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"the probe could not start: {exc}"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[-1][:200] if lines else f"the probe exited with code {result.returncode}"


def unavailable_reason() -> Optional[str]:
    """Why this process cannot render, or None when it can (deciding first if nobody has yet)."""
    return choose_gl_backend()


def mark_unavailable(reason: str) -> str:
    """A render failed after all: stop every later attempt in this process (a second try can abort it)."""
    global _reason_unavailable, _decided
    _decided = True
    _reason_unavailable = reason
    return reason
