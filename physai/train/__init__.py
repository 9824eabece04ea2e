"""The training computer: stable-baselines3 algorithms, checkpoints, progress."""
