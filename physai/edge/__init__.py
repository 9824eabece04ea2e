"""The inference computer: load a bundle and act, with numpy and onnxruntime only.

Nothing under ``physai.edge`` may import torch, stable-baselines3, MuJoCo or Hydra: this is
the code that runs on the robot.
"""

from physai.edge.bundle import load_manifest, verify_bundle
from physai.edge.runtime import EdgePolicy

__all__ = ["EdgePolicy", "load_manifest", "verify_bundle"]
