"""The simulation computer: tasks and the environments that step them (installed as ``physai.envs``).

Importing this package registers every physai task with gymnasium as ``physai/<Task>-v0``.
"""

from physai.envs.rendering import choose_gl_backend

# MuJoCo binds its GL backend at import: choose one that works (or none) before anything imports it.
choose_gl_backend()

from physai.envs.registry import register_tasks  # noqa: E402

register_tasks()
