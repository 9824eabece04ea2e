"""The simulation computer: tasks and the environments that step them (installed as ``physai.envs``).

Importing this package registers every physai task with gymnasium as ``physai/<Task>-v0``.
"""

import ctypes.util
import os

# Off-screen rendering: MuJoCo picks its GL backend from MUJOCO_GL when it is first imported, and
# importing it with a backend whose library is missing fails outright, so choose only what exists.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and ctypes.util.find_library("OSMesa"):
    os.environ["MUJOCO_GL"] = "osmesa"

from physai.envs.registry import register_tasks  # noqa: E402

register_tasks()
