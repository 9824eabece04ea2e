"""The simulation computer: tasks and the environments that step them (installed as ``physai.envs``).

Importing this package registers every physai task with gymnasium as ``physai/<Task>-v0``.
"""

from physai.envs.registry import register_tasks

register_tasks()
