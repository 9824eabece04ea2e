"""Atomic, rotating, checksummed checkpoints that hold everything a run needs to continue.

A checkpoint is a directory ``checkpoints/step_<N>/`` (``checkpoints/final/`` at the end):

=======================  ==================================================================
``model.zip``            SB3's archive: policy and optimizer state dicts, counters
``normalization.npz``    VecNormalize's running observation/return statistics
``replay_buffer.npz``    off-policy algorithms: every stored transition (plain arrays)
``rng_state.npz``        numpy's and torch's global generator states
``trainer_state.json``   python's generator, the env's and the action space's generators,
                         the step, the next checkpoint step, the run's curve length
``train_curve.csv``      every training episode up to this step
``world_model.pt`` ...   what the algorithm keeps beside the policy (MBPO: its fitted
                         ensemble, checksummed, and the synthetic rows of its model buffer)
``checkpoint.json``      written last: the sha256 and size of every file above
=======================  ==================================================================

It is assembled in a staging directory, fsynced and renamed into place, then
``checkpoints/latest`` is pointed at it and all but the newest ``keep`` step checkpoints are
removed, so a crash at any moment leaves the previous checkpoint whole. A directory without
``checkpoint.json`` is not a checkpoint; loading verifies every checksum first.

Nothing here unpickles: SB3's archive is read with ``torch.load(weights_only=True)`` through
``set_parameters`` and plain JSON (see ``physai.train.sb3.load_checkpoint``), and the replay
buffer and RNG states are ``.npz``/JSON. Checkpoints are only read from inside the run directory
they belong to (``<run_dir>/checkpoints/<name>``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from physai.core.errors import PhysaiError
from physai.core.io import atomic_path, fresh_staging_dir, replace_dir_atomically, write_text_atomic
from physai.core.manifest import files_section, read_json_object, verify_files
from physai.train.normalization import NORMALIZATION_FILE, save_vecnormalize

MODEL_FILE = "model.zip"
REPLAY_FILE = "replay_buffer.npz"
RNG_FILE = "rng_state.npz"
STATE_FILE = "trainer_state.json"
CURVE_COPY = "train_curve.csv"
MANIFEST_FILE = "checkpoint.json"
LATEST_POINTER = "latest"
FINAL_NAME = "final"
CHECKPOINT_DIR = "checkpoints"
FORMAT_NAME = "physai-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(PhysaiError):
    """A checkpoint that is incomplete, corrupted, outside its run directory or for another run."""


# ----- writing ---------------------------------------------------------------------------------
def save_checkpoint(model, checkpoint_root: Path, name: str, *, keep: Optional[int] = None,
                    trainer_state: Optional[dict[str, Any]] = None, curve_csv: Optional[str] = None,
                    task_id: Optional[str] = None) -> Path:
    """Write checkpoint ``name`` under ``checkpoint_root`` atomically; return its directory."""
    target = checkpoint_root / name
    staging = fresh_staging_dir(target)
    try:
        model.save(staging / MODEL_FILE)
        venv = model.get_env()
        if hasattr(venv, "obs_rms"):
            save_vecnormalize(venv, staging / NORMALIZATION_FILE)
        if getattr(model, "replay_buffer", None) is not None:
            save_replay_buffer(model.replay_buffer, staging / REPLAY_FILE)
        rng_json, rng_arrays = capture_rng(model)
        _write_npz(staging / RNG_FILE, rng_arrays)
        state = {"format": "physai-trainer-state", "format_version": FORMAT_VERSION,
                 "timesteps": int(model.num_timesteps), "algo": type(model).__name__, "task_id": task_id,
                 "rng": rng_json, **(trainer_state or {})}
        write_text_atomic(staging / STATE_FILE, json.dumps(state, separators=(",", ":")) + "\n")
        if curve_csv is not None:
            write_text_atomic(staging / CURVE_COPY, curve_csv)
        if hasattr(model, "save_extras"):  # e.g. MBPO: the fitted ensemble and the model buffer
            quiet = logging.getLogger("physai.synthetic.world_model")  # its "saved <staging path>" would mislead
            level = quiet.level
            quiet.setLevel(max(level, logging.WARNING))
            try:
                model.save_extras(staging, task_id=task_id or "unknown")
            finally:
                quiet.setLevel(level)
        files = files_section(staging)
        manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name,
                    "timesteps": int(model.num_timesteps), "algo": type(model).__name__, "task_id": task_id,
                    "written_unix": time.time(), "files": files}
        write_text_atomic(staging / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")  # last: marks it complete
        replace_dir_atomically(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_text_atomic(checkpoint_root / LATEST_POINTER, name + "\n")
    if keep is not None:
        _rotate(checkpoint_root, keep)
    return target


def step_name(step: int) -> str:
    return f"step_{step:010d}"


def _rotate(checkpoint_root: Path, keep: int) -> None:
    steps = sorted(p for p in checkpoint_root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        (old / MANIFEST_FILE).unlink(missing_ok=True)  # first: a half-deleted directory is never taken for whole
        shutil.rmtree(old)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


# ----- finding and verifying -------------------------------------------------------------------
def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / MANIFEST_FILE).is_file() and (checkpoint / MODEL_FILE).is_file()


def _manifest_step(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / MANIFEST_FILE).read_text())["timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def latest_checkpoint(checkpoint_root: Path) -> Optional[Path]:
    """The complete checkpoint with the most steps (``final`` on a tie).

    ``latest`` is written after the checkpoint it names, so a kill in between leaves it one behind;
    the manifests are what count.
    """
    candidates = [p for p in list_checkpoints(checkpoint_root) if p.name == FINAL_NAME or p.name.startswith("step_")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (_manifest_step(p), p.name == FINAL_NAME))


def list_checkpoints(checkpoint_root: Path) -> list[Path]:
    return sorted(p for p in checkpoint_root.glob("*") if p.is_dir() and is_complete(p))


def check_inside_run(checkpoint: Path, run_dir: Optional[Path] = None) -> Path:
    """Refuse a checkpoint that is not ``<run_dir>/checkpoints/<name>`` of a physai run directory.

    Loading a checkpoint runs code from its files' formats (SB3's archive), so physai reads them only
    from the run directory that wrote them, never from an arbitrary path. Without ``run_dir`` the run
    directory is the one the checkpoint sits in, which must hold the run's ``config.yaml``.
    """
    checkpoint = Path(checkpoint)
    resolved = checkpoint.resolve()
    owner = (Path(run_dir) if run_dir is not None else checkpoint.parent.parent).resolve()
    expected_parent = owner / CHECKPOINT_DIR
    if resolved.parent != expected_parent:
        raise CheckpointError(
            f"checkpoint {checkpoint} is not inside the run directory {owner} (it resolves to {resolved}); physai "
            f"loads checkpoints only from <run_dir>/{CHECKPOINT_DIR}/<name> of the run that wrote them. Rerun the "
            f"stage on that run directory (`physai run RUN_DIR --stages ...`) instead of pointing elsewhere")
    if run_dir is None and not (owner / "config.yaml").is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint} is not in a physai run directory: {owner} has no config.yaml; physai loads "
            f"checkpoints only from the run directory that wrote them")
    return resolved


def verify_checkpoint(checkpoint: Path, run_dir: Optional[Path] = None) -> dict[str, Any]:
    """Check location, completeness and every checksum; return the manifest."""
    checkpoint = Path(checkpoint)
    check_inside_run(checkpoint, run_dir)
    manifest_path = checkpoint / MANIFEST_FILE
    root = checkpoint.parent
    others = [p.name for p in list_checkpoints(root) if p.name != checkpoint.name]
    fallback = (f"; the other complete checkpoints here are {others} (remove {checkpoint} to resume from the newest "
                f"of them)" if others else "")
    manifest = read_json_object(manifest_path, error=CheckpointError, fix=f"it cannot be used{fallback}",
                                missing=f"{checkpoint} has no {MANIFEST_FILE}: it is incomplete (the run was killed "
                                        f"while writing it) or was not written by physai{fallback}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path} lists no files; it cannot be used{fallback}")
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{checkpoint} has format {manifest.get('format')!r} version "
                              f"{manifest.get('format_version')!r}; this physai reads {FORMAT_NAME} version "
                              f"{FORMAT_VERSION}. Retrain, or use the physai that wrote it")
    verify_files(checkpoint, files, error=CheckpointError, manifest=MANIFEST_FILE,
                 fix=f"restore the checkpoint directory or train again{fallback}")
    return manifest


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


# ----- replay buffer as plain arrays ----------------------------------------------------------------
def save_replay_buffer(buffer, path: Path) -> None:
    """Every stored row of an SB3 replay buffer (and subclasses' per-row arrays) as an ``.npz``."""
    if isinstance(getattr(buffer, "observations", None), dict):
        raise CheckpointError(f"{type(buffer).__name__} with dict observations cannot be checkpointed yet; "
                              f"use a Box observation space")
    upper = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {f"rows/{key}": value[:upper] for key, value in vars(buffer).items()
              if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == buffer.buffer_size}
    arrays.update({"meta/pos": np.int64(buffer.pos), "meta/full": np.bool_(buffer.full),
                   "meta/buffer_size": np.int64(buffer.buffer_size), "meta/n_envs": np.int64(buffer.n_envs),
                   "meta/class": np.str_(type(buffer).__name__)})
    _write_npz(path, arrays)


def load_replay_buffer(buffer, path: Path) -> None:
    """Fill a freshly built replay buffer of the same class and size from ``save_replay_buffer``'s file."""
    with np.load(path, allow_pickle=False) as data:
        saved_class = str(data["meta/class"])
        if saved_class != type(buffer).__name__:
            raise CheckpointError(f"{path} holds a {saved_class}, but this run's algorithm uses a "
                                  f"{type(buffer).__name__}; resume only with the algorithm that wrote it")
        for key in ("buffer_size", "n_envs"):
            if int(data[f"meta/{key}"]) != int(getattr(buffer, key)):
                raise CheckpointError(f"{path} was written with {key}={int(data[f'meta/{key}'])}, this run has "
                                      f"{getattr(buffer, key)}; resume with the same algo.buffer_size and algo.n_envs")
        for entry in data.files:
            if not entry.startswith("rows/"):
                continue
            key = entry[len("rows/"):]
            target = getattr(buffer, key, None)
            saved = data[entry]
            if not isinstance(target, np.ndarray) or target.shape[1:] != saved.shape[1:]:
                shape = None if not isinstance(target, np.ndarray) else target.shape[1:]
                raise CheckpointError(f"{path}: {key} has rows of shape {saved.shape[1:]}, this run's buffer "
                                      f"{shape}; the task's spaces (or the physics context) changed since it was "
                                      f"written")
            target[: saved.shape[0]] = saved
        buffer.pos = int(data["meta/pos"])
        buffer.full = bool(data["meta/full"])


# ----- random number generators ----------------------------------------------------------------
def _generators(model) -> dict[str, np.random.Generator]:
    """Named numpy generators an SB3 run draws from besides the global ones: action space and envs."""
    found: dict[str, np.random.Generator] = {}
    for label in ("action_space", "observation_space"):
        space = getattr(model, label, None)
        generator = getattr(space, "_np_random", None)
        if isinstance(generator, np.random.Generator):
            found[label] = generator
    venv = model.get_env()
    while venv is not None and not hasattr(venv, "engine") and not hasattr(venv, "envs"):
        venv = getattr(venv, "venv", None)
    engine = getattr(venv, "engine", None)
    if engine is not None and isinstance(getattr(engine, "rng", None), np.random.Generator):
        found["engine"] = engine.rng  # the batched physai engine: resets, commands, events, noise
    for index, env in enumerate(getattr(venv, "envs", None) or []):
        generator = getattr(env.unwrapped, "_np_random", None)
        if isinstance(generator, np.random.Generator):
            found[f"env{index}"] = generator
        space_rng = getattr(env.action_space, "_np_random", None)
        if isinstance(space_rng, np.random.Generator):
            found[f"env{index}.action_space"] = space_rng
    return found


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def capture_rng(model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every RNG state of the run: python, numpy and torch globals, the action space, the envs."""
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng_json = {"python": {"version": version, "state": list(internal), "gauss_next": gauss},
                "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                "generators": {name: _to_json(g.bit_generator.state) for name, g in _generators(model).items()}}
    arrays = {"numpy_keys": np.asarray(keys, dtype=np.uint32), "torch_cpu": torch.get_rng_state().numpy()}
    return rng_json, arrays


def restore_rng(model, checkpoint: Path, state: dict[str, Any]) -> list[str]:
    """Put back the RNG states a checkpoint holds; returns the names of the env/space generators restored."""
    import torch

    rng = state.get("rng")
    if not rng or not (checkpoint / RNG_FILE).is_file():
        return []
    python = rng["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    with np.load(checkpoint / RNG_FILE, allow_pickle=False) as data:
        numpy = rng["numpy"]
        np.random.set_state((numpy["kind"], data["numpy_keys"], numpy["pos"], numpy["has_gauss"],
                             numpy["cached_gaussian"]))
        torch.set_rng_state(torch.from_numpy(data["torch_cpu"].copy()))
    restored = []
    generators = _generators(model)
    for name, saved in rng.get("generators", {}).items():
        generator = generators.get(name)
        saved = _from_json(saved)
        if generator is not None and generator.bit_generator.state.get("bit_generator") == saved.get("bit_generator"):
            generator.bit_generator.state = saved
            restored.append(name)
    return restored


# ----- small helpers for the trainer ---------------------------------------------------------------
def write_progress(path: Path, payload: dict[str, Any]) -> None:
    """A small status file for watchers, renamed into place (no fsync: it is rewritten every rollout)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(payload) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
