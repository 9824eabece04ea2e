"""physai's Hydra plugins: a Ray launcher, and an optuna sweeper with pruning, one shared study and resume.

Hydra imports every module under ``hydra_plugins`` at start-up, so these import neither ray nor
optuna until a sweep actually uses them.
"""
