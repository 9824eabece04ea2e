"""The saved file: tensors and JSON strings in one ``torch.save`` payload, with a checksummed sidecar."""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Self, Sequence

import torch

from physai.core.io import atomic_path, finite_or_null
from physai.core.manifest import bytes_record, read_json_object, verify_bytes
from physai.synthetic.world_model.settings import WorldModelError

log = logging.getLogger(__name__)

FORMAT_NAME = "physai.world_model.ensemble"
# Version 2 added the exact-column rule buffers; version 1 files load as models without exact columns.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)


class FileFormat:
    """Mixin of ``EnsembleDynamicsModel``: its id, metadata, ``save`` and ``load``."""

    @property
    def model_id(self) -> str:
        """``<task>-<first 12 hex of the file's sha256>``: names the exact saved weights."""
        if self.model_hash is None or self.task_id is None:
            raise WorldModelError("world model: model_id names a saved file; call save() (or load a model) first")
        return f"{self.task_id}-{self.model_hash[:12]}"

    def metadata(self) -> dict:
        """JSON-able description of the model (no hash: that is computed from the saved bytes)."""
        config = asdict(self.config)
        config["context_names"] = list(config["context_names"])
        config["obs_names"] = list(config["obs_names"])
        config["weight_decay"] = list(config["weight_decay"])
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "task_id": self.task_id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "context_dim": self.context_dim,
            "context_names": list(self.config.context_names),
            "obs_names": list(self.config.obs_names),
            # Observation columns predicted by an exact affine rule instead of the network (see fit).
            "exact_columns": self.exact_columns_info,
            "members": self.members,
            "elites": self.elites,
            "elite_indices": [int(v) for v in self.elite_indices],
            "validation_mse_per_member": [_json_float(v) for v in self.validation_mse],
            "config": config,
            "training": self.training_history[-1] if self.training_history else None,
            "training_history": self.training_history,
        }

    def save(self, path: str | Path, *, task_id: str, obs_space_shape: Sequence[int] = (),
             act_space_shape: Sequence[int] = (), extra_metadata: dict | None = None) -> str:
        """Write ``path`` (one ``torch.save`` file of tensors + JSON strings) and ``<path>.json``.

        Both are written atomically. The sidecar holds the sha256 of the model file's bytes, which
        ``load`` checks. Returns the hash.
        """
        self._require_fitted()
        if not task_id or not isinstance(task_id, str):
            raise WorldModelError(f"world model save: task_id must be a non-empty string, got {task_id!r}")
        path = Path(path)
        metadata = self.metadata()
        metadata["task_id"] = task_id
        metadata["obs_space_shape"] = [int(v) for v in obs_space_shape]
        metadata["act_space_shape"] = [int(v) for v in act_space_shape]
        metadata["extra"] = extra_metadata or {}
        try:
            metadata = finite_or_null(metadata)
            metadata_json = json.dumps(metadata, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WorldModelError(f"world model save: metadata for {path} is not JSON-able ({exc}); "
                                  f"pass plain str/int/float/list/dict values in extra_metadata") from exc
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "metadata_json": metadata_json,
            "state": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        digest = bytes_record(data)["sha256"]
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        sidecar = {**metadata, "model_hash": digest, "model_file": path.name, "model_bytes": len(data),
                   "model_id": f"{task_id}-{digest[:12]}"}
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n")
        self.task_id, self.model_hash = task_id, digest
        log.info("world model: saved %s (%s)", path, self.model_id)
        return digest

    @classmethod
    def load(cls, path: str | Path, *, expected_task_id: str | None = None, expected_obs_dim: int | None = None,
             expected_act_dim: int | None = None, map_location: str | torch.device = "cpu") -> Self:
        """Load a model saved by ``save`` after checking its sha256, task and dims."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.is_file():
            raise WorldModelError(f"world model file {path} does not exist; run the world_model stage first")
        if not side.is_file():
            raise WorldModelError(f"world model file {path} has no checksum sidecar {side}; it was not written by "
                                  f"EnsembleDynamicsModel.save or the sidecar was lost; retrain or restore it")
        sidecar = read_json_object(side, error=WorldModelError, missing=f"{side} does not exist",
                                   fix="retrain the world model or restore the sidecar")
        if not isinstance(sidecar.get("model_hash"), str):
            raise WorldModelError(f"world model sidecar {side} records no model_hash; retrain or restore it")
        data = verify_bytes(path, {"sha256": sidecar["model_hash"]}, error=WorldModelError, manifest=side.name,
                            fix="retrain the world model or restore an intact copy")
        try:
            payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise WorldModelError(f"world model file {path} could not be read ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise WorldModelError(f"world model file {path} is not a physai ensemble world model")
        version = payload.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise WorldModelError(f"world model file {path} has format version {version}, this physai reads "
                                  f"versions {list(READABLE_FORMAT_VERSIONS)}; retrain the world model")
        metadata = json.loads(payload["metadata_json"])
        saved_task = metadata.get("task_id")
        if expected_task_id is not None and saved_task != expected_task_id:
            raise WorldModelError(f"world model file {path} was trained for task '{saved_task}', but task "
                                  f"'{expected_task_id}' asked for it; retrain the world model on "
                                  f"'{expected_task_id}' or point to the model trained for it")
        for name, expected in (("obs_dim", expected_obs_dim), ("act_dim", expected_act_dim)):
            if expected is not None and metadata[name] != expected:
                raise WorldModelError(f"world model file {path} (task '{saved_task}') has {name}={metadata[name]}, "
                                      f"but {expected} is expected; the task's spaces changed since it was trained, "
                                      f"so retrain the world model")
        config = metadata["config"]
        model = cls(config["obs_dim"], config["act_dim"], config["context_dim"], members=config["members"],
                    elites=config["elites"], hidden=config["hidden"], layers=config["layers"], seed=config["seed"],
                    context_names=config["context_names"], obs_names=config.get("obs_names"),
                    weight_decay=config["weight_decay"],
                    learning_rate=config["learning_rate"], init_max_logvar=config["init_max_logvar"],
                    init_min_logvar=config["init_min_logvar"], logvar_bound_penalty=config["logvar_bound_penalty"],
                    termination_loss_weight=config["termination_loss_weight"])
        state = dict(payload["state"])
        if version == 1:  # written before exact columns existed: the network predicts every column
            for name in ("exact_mask", "exact_weight", "exact_bias"):
                state.setdefault(name, getattr(model, name).clone())
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WorldModelError(f"world model file {path} does not match the network its metadata describes "
                                  f"({exc}); retrain the world model") from exc
        model._sync_exact_columns()
        model.exact_columns_info = list(metadata.get("exact_columns") or [])
        model.to(map_location)
        model.eval()
        model.task_id = saved_task
        model.model_hash = sidecar["model_hash"]
        model.training_history = list(metadata.get("training_history") or [])
        model.fit_calls = len(model.training_history)
        return model


def sidecar_path(path: str | Path) -> Path:
    """The checksum + metadata file written next to a saved model: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
