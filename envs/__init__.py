"""The simulation computer: tasks and the environments that step them (installed as ``physai.envs``)."""
