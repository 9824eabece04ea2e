"""The edge runtime: a verified bundle behind one ``act(obs)`` call.

Imports numpy and onnxruntime only. Inputs are checked for shape, dtype and finiteness,
because a robot that feeds NaN into a policy should get an error, not a motor command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from physai.edge.bundle import INPUT_NAME, OUTPUT_NAME, POLICY_FILE, read_verified_bundle
from physai.errors import BundleError


class EdgePolicy:
    def __init__(self, bundle_dir: str | Path, intra_op_threads: int = 1, inter_op_threads: int = 1) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest, contents = read_verified_bundle(self.bundle_dir)
        self.obs_dim = int(self.manifest["io"]["inputs"][0]["shape"][1])
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(contents[POLICY_FILE], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self._single = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._outputs = [OUTPUT_NAME]

    @classmethod
    def load(cls, bundle_dir: str | Path, **kwargs: Any) -> "EdgePolicy":
        return cls(bundle_dir, **kwargs)

    @property
    def control_rate_hz(self) -> float | None:
        return self.manifest.get("control_rate_hz")

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One observation ``(obs_dim,)`` gives one action; a batch ``(n, obs_dim)`` gives n actions."""
        array = np.asarray(obs)
        if array.dtype.kind not in "fiu":
            raise BundleError(f"observation dtype {array.dtype} is not numeric; pass float32 values")
        if array.ndim == 1 and array.shape[0] == self.obs_dim:
            np.copyto(self._single[0], array, casting="unsafe")
            batch, single = self._single, True
        elif array.ndim == 2 and array.shape[1] == self.obs_dim:
            batch, single = np.ascontiguousarray(array, dtype=np.float32), False
        else:
            raise BundleError(f"observation shape {array.shape} does not match the bundle's "
                              f"({self.obs_dim},) or (batch, {self.obs_dim})")
        if not np.isfinite(batch).all():
            raise BundleError("observation contains NaN or inf; the policy refuses non-finite input")
        action = self.session.run(self._outputs, {INPUT_NAME: batch})[0]
        return action[0] if single else action
