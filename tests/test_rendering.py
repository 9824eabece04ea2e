"""Rendering is optional equipment: it is chosen by a probe in a child process, and no run dies without it."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

from conftest import REPO, require_rendering
from physai.envs.rendering import probe

# What a process that imports physai reports about its renderer.
REPORT_DECISION = ("import json, logging, os; logging.basicConfig(level=logging.WARNING); import physai.envs; "
                   "from physai.envs.rendering import unavailable_reason; "
                   "print(json.dumps({'reason': unavailable_reason(), 'MUJOCO_GL': os.environ.get('MUJOCO_GL')}))")


def _decide_in_child(env_changes: dict) -> tuple[dict, str]:
    import os

    env = {key: value for key, value in os.environ.items()
           if key not in ("MUJOCO_GL", "PHYSAI_GL_DECISION", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")}
    env.update(env_changes)
    result = subprocess.run([sys.executable, "-c", REPORT_DECISION], env=env, capture_output=True, text=True,
                            timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_the_base_images_egl_renders_a_frame():
    # The machines this project runs on ship mesa's EGL; llvmpipe renders on the CPU without a GPU.
    require_rendering()
    assert probe("egl") is None


def test_without_a_choice_physai_picks_a_working_backend():
    decision, stderr = _decide_in_child({})
    assert decision["reason"] is None, decision
    assert decision["MUJOCO_GL"] in ("egl", "osmesa")
    assert "no videos" not in stderr


def test_a_user_choice_that_cannot_render_gets_one_warning_naming_the_package():
    decision, stderr = _decide_in_child({"MUJOCO_GL": "glx"})  # GLX needs an X display, and there is none
    assert decision["MUJOCO_GL"] == "disable"
    assert "MUJOCO_GL=glx does not render" in decision["reason"] and "X display" in decision["reason"]
    assert stderr.count("no videos in this run") == 1, stderr


def test_osmesa_is_used_when_installed_and_named_when_missing():
    decision, stderr = _decide_in_child({"MUJOCO_GL": "osmesa"})
    if ctypes.util.find_library("OSMesa"):
        assert decision["reason"] is None and decision["MUJOCO_GL"] == "osmesa"
    else:  # the crash of a fresh machine with MUJOCO_GL=osmesa exported: now a warning and no video
        assert "libosmesa6" in decision["reason"] and decision["MUJOCO_GL"] == "disable"
        assert stderr.count("no videos in this run") == 1, stderr


def test_a_child_process_inherits_the_decision_without_probing_again():
    code = ("import os, physai.envs.rendering as r; r.probe = lambda backend: 'probed again'; "
            "print(r.choose_gl_backend(), os.environ['MUJOCO_GL'])")
    import os

    env = {**os.environ, "MUJOCO_GL": "disable", "PHYSAI_GL_DECISION": "disable|no display here"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["no", "display", "here", "disable"], out.stderr
