"""Drives a run: the pipeline runner, the CLI, Hydra callbacks, sweeps, tracking."""
