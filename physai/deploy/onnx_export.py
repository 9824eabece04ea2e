"""Export a trained SB3 policy as a checksummed ONNX bundle for the edge runtime.

The graph takes raw observations and returns actions in the env's units: observation
normalization, the deterministic action head and the action-space mapping (clip for PPO,
tanh-unsquash for SAC, argmax for discrete) are all folded in, so the robot runs one graph.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from physai import __version__
from physai.core.errors import ConfigError
from physai.core.io import write_json_atomic
from physai.core.manifest import files_section
from physai.deploy.fallback_model import resolve_fallback
from physai.edge.bundle import (FORMAT_NAME, FORMAT_VERSION, INPUT_NAME, MANIFEST_FILE, OUTPUT_NAME, POLICY_FILE,
                                WORLD_MODEL_FILE, WORLD_MODEL_INPUTS, WORLD_MODEL_OUTPUTS, describe_inputs,
                                describe_space, load_manifest)
from physai.edge.guard import STATE_INPUT, GuardedPolicy
from physai.synthetic.world_model import EnsembleDynamicsModel
from physai.train.evaluation import episode_returns, summarize_returns
from physai.train.normalization import ObsNormalization

log = logging.getLogger(__name__)


def is_image(space: Any) -> bool:
    """An SB3 image input: uint8 with three dimensions (channels first inside the policy)."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def bundle_inputs(observation_space: Any) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, shape of one observation) of each graph input. A camera policy's images enter as the
    camera gives them, height x width x channels uint8 (the policy sees them channels first, transposed by
    SB3's VecTransposeImage; the graph transposes them back)."""
    if not isinstance(observation_space, gym.spaces.Dict):
        return [(INPUT_NAME, np.dtype(np.float32), (int(np.prod(observation_space.shape)),))]
    return [(key, np.dtype(np.uint8), (part.shape[1], part.shape[2], part.shape[0])) if is_image(part)
            else (key, np.dtype(np.float32), tuple(int(d) for d in part.shape))
            for key, part in observation_space.spaces.items()]


class DeployablePolicy(nn.Module):
    """Raw observation in, env-unit action out: what SB3's deterministic ``predict`` computes. A camera
    policy takes one input per observation key; its images are uint8 HxWxC, transposed and scaled in here."""

    def __init__(self, model: Any, obs_norm: Optional[ObsNormalization]) -> None:
        super().__init__()
        self.policy = model.policy
        self.kind = _policy_kind(model)
        space = model.observation_space
        self.input_keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else None
        self.image_keys = {key for key in self.input_keys or [] if is_image(space.spaces[key])}
        self.normalize = obs_norm is not None
        if obs_norm is not None:
            self.register_buffer("obs_mean", torch.as_tensor(obs_norm.mean, dtype=torch.float32))
            self.register_buffer("obs_std", torch.as_tensor(np.sqrt(obs_norm.var + obs_norm.epsilon),
                                                            dtype=torch.float32))
            self.obs_clip = float(obs_norm.clip)
        space = model.action_space
        if isinstance(space, gym.spaces.Box):
            self.register_buffer("action_low", torch.as_tensor(space.low, dtype=torch.float32))
            self.register_buffer("action_high", torch.as_tensor(space.high, dtype=torch.float32))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        obs: Any = inputs[0]
        if self.input_keys is not None:
            obs = {key: value.permute(0, 3, 1, 2) if key in self.image_keys else value
                   for key, value in zip(self.input_keys, inputs)}
        if self.normalize:
            obs = torch.clamp((obs - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)
        if self.kind == "squashed_gaussian":
            mean_actions, _, _ = self.policy.actor.get_action_dist_params(obs)
            squashed = torch.tanh(mean_actions)
            return self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)
        features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
        latent = self.policy.mlp_extractor.forward_actor(features)
        head = self.policy.action_net(latent)
        if self.kind == "categorical":
            return torch.argmax(head, dim=-1)
        return torch.maximum(torch.minimum(head, self.action_high), self.action_low)


def _policy_kind(model: Any) -> str:
    space = model.action_space
    if hasattr(model.policy, "actor") and hasattr(model.policy.actor, "get_action_dist_params"):
        return "squashed_gaussian"
    if isinstance(space, gym.spaces.Discrete):
        return "categorical"
    if isinstance(space, gym.spaces.Box):
        if getattr(model.policy, "squash_output", False):
            raise ConfigError("PPO with squash_output (gSDE) is not exportable yet; train with use_sde=false")
        return "gaussian"
    raise ConfigError(f"action space {space} cannot be exported; physai exports Box and Discrete actions")


def export_onnx(model: Any, obs_norm: Optional[ObsNormalization], target: Path, opset: int) -> None:
    module = DeployablePolicy(model, obs_norm).eval()
    inputs = bundle_inputs(model.observation_space)
    # A batch of 2 in the examples: torch.export specializes dimensions of size 1, which would pin the batch.
    examples = tuple(torch.zeros(2, *shape, dtype=torch.uint8 if dtype == np.uint8 else torch.float32)
                     for _, dtype, shape in inputs)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), _quiet_exporter_logs(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, examples, str(target), input_names=[name for name, _, _ in inputs],
                          output_names=[OUTPUT_NAME],
                          dynamic_shapes=(tuple({0: batch} for _ in inputs),),  # forward(*inputs): one varargs
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)


@contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """torch.onnx and onnxscript narrate every optimization pass at INFO; keep the run log readable."""
    names = ("torch.onnx", "onnx_ir", "onnxscript", "torch.onnx._internal.exporter._registration")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def git_provenance() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if dirty is None else bool(dirty)}


def write_bundle(model: Any, obs_norm: Optional[ObsNormalization], bundle_dir: Path, *, opset: int,
                 control_rate_hz: Optional[float], provenance: dict[str, Any],
                 observation_names: Optional[list[str]] = None, action_names: Optional[list[str]] = None,
                 camera: Optional[dict[str, Any]] = None) -> dict:
    """Write ``policy.onnx`` and then ``manifest.json`` into ``bundle_dir``.

    The export stage points this at a staging directory and swaps it in only once the bundle
    has proven itself, so a failed export leaves the previous bundle untouched.
    """
    bundle_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, obs_norm, bundle_dir / POLICY_FILE, opset)
    obs_space, action_space = model.observation_space, model.action_space
    obs_dim = 0 if isinstance(obs_space, gym.spaces.Dict) else int(np.prod(obs_space.shape))
    act_dim = int(np.prod(action_space.shape)) if isinstance(action_space, gym.spaces.Box) else 1
    discrete = isinstance(action_space, gym.spaces.Discrete)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "io": {
            "inputs": _input_entries(obs_space, camera),
            "outputs": [{"name": OUTPUT_NAME, "dtype": "int64" if discrete else "float32",
                         "shape": ["batch"] if discrete else ["batch", act_dim],
                         "units": "action index" if discrete else "environment action units (already clipped/scaled)"}],
        },
        "observation_space": (describe_inputs(_camera_layout(obs_space), observation_names or [])
                              if isinstance(obs_space, gym.spaces.Dict) else
                              describe_space(obs_space, observation_names or [f"obs_{i}" for i in range(obs_dim)])),
        "action_space": describe_space(action_space, action_names or [f"act_{i}" for i in range(act_dim)]),
        "control_rate_hz": control_rate_hz,
        "normalization": None if obs_norm is None else {
            "folded_into_graph": True, "mean": obs_norm.mean.tolist(),
            "std": np.sqrt(obs_norm.var + obs_norm.epsilon).tolist(), "clip": obs_norm.clip},
        "files": files_section(bundle_dir, [POLICY_FILE]),
        "provenance": {**provenance, "physai_version": __version__,
                       "exported_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
    }
    write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)
    return manifest


def _input_entries(obs_space: Any, camera: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's description of each graph input: name, dtype, shape, layout, and for images the camera."""
    if not isinstance(obs_space, gym.spaces.Dict):
        return [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", int(np.prod(obs_space.shape))],
                 "units": "raw environment observation (normalization is inside the graph)"}]
    entries = []
    for name, dtype, shape in bundle_inputs(obs_space):
        entry: dict[str, Any] = {"name": name, "dtype": str(dtype), "shape": ["batch", *shape]}
        if dtype == np.uint8:
            entry.update({"layout": "NHWC", "units": "RGB 0-255, frames stacked along channels, oldest first; "
                                                     "scaling to [0, 1] and the NCHW layout are inside the graph",
                          "camera": dict(camera or {})})
        else:
            entry["units"] = "raw state terms the policy keeps beside its images (no normalization)"
        entries.append(entry)
    return entries


def _camera_layout(obs_space: Any) -> Any:
    """The observation space as the camera gives it (images HxWxC), which is what the bundle takes."""
    return gym.spaces.Dict({name: gym.spaces.Box(0, 255, shape, np.uint8) if dtype == np.uint8 else
                            obs_space.spaces[name] for name, dtype, shape in bundle_inputs(obs_space)})


# ----- what the edge guard needs (physai.edge.guard) ------------------------------------------------
def observation_statistics(observations: np.ndarray, source: str, episodes: int) -> dict[str, Any]:
    """Per-column mean/std/min/max of observations the policy met in closed loop, for the OOD monitor."""
    obs = np.asarray(observations, dtype=np.float64).reshape(len(observations), -1)
    if len(obs) == 0 or not np.isfinite(obs).all():
        raise ConfigError(f"observation statistics need finite observations; got {len(obs)} rows from {source}")
    return {"source": source, "episodes": int(episodes), "samples": int(len(obs)),
            "mean": obs.mean(axis=0).tolist(), "std": obs.std(axis=0).tolist(),
            "min": obs.min(axis=0).tolist(), "max": obs.max(axis=0).tolist()}


def update_manifest(bundle_dir: Path, sections: dict[str, Any], files: tuple[str, ...] = ()) -> dict:
    """Add ``sections`` (and the sha256 of ``files``, already in ``bundle_dir``) to a bundle's manifest."""
    manifest = load_manifest(bundle_dir)
    manifest.update(sections)
    manifest["files"].update(files_section(bundle_dir, files))
    write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)
    return manifest


class WorldModelDisagreement(nn.Module):
    """(observation, action) -> the elites' normalized mean deltas and their disagreement, for the edge guard.

    The robot does not know its physics-context draw, so context columns are fed at their
    training mean. ``disagreement`` is the ensemble's own measure (max over columns of the
    population std over elites, in normalized delta units; see EnsembleDynamicsModel.sample_step).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.obs_dim, self.act_dim, self.context_dim = model.obs_dim, model.act_dim, model.context_dim
        self.register_buffer("context_mean", model.input_mean[self.obs_dim + self.act_dim:].clone())

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        parts = [observation, action.reshape(observation.shape[0], self.act_dim)]
        if self.context_dim:
            parts.append(self.context_mean.expand(observation.shape[0], self.context_dim))
        x = (torch.cat(parts, dim=1) - model.input_mean) / model.input_std
        mean, _, _ = model._forward_normalized(x, model.elite_indices)
        deltas = mean[..., : self.obs_dim]
        disagreement = deltas.std(dim=0, unbiased=False).amax(dim=-1)
        return deltas, disagreement


def export_world_model(model: Any, target: Path, opset: int) -> None:
    """Write the ensemble as ``world_model.onnx`` (inputs observation/action, outputs as the guard reads them)."""
    module = WorldModelDisagreement(model).eval()
    example = (torch.zeros(2, model.obs_dim), torch.zeros(2, model.act_dim))
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), _quiet_exporter_logs(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(target), input_names=list(WORLD_MODEL_INPUTS),
                          output_names=list(WORLD_MODEL_OUTPUTS), dynamic_shapes=({0: batch}, {0: batch}),
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)


def camera_fallback_reason(fallback: dict[str, Any], inputs: list[str]) -> str:
    """Why a camera policy's guard falls back on what it does: the manifest says it, for the robot's engineer."""
    name = str(fallback.get("_target_", "ZeroAction")).rsplit(".", 1)[-1]
    if name == "ZeroAction":
        reads = ("only pixels" if STATE_INPUT not in inputs else
                 "pixels and a few state terms, not the full state a classical controller needs")
        return (f"a camera policy (inputs {inputs}): the classical fallbacks (LQR, task-space servo, brake and hold "
                f"lane) read named state columns, and this policy reads {reads}; its fallback holds a constant "
                f"(zero) action")
    return f"{name} reads only the state terms this camera policy keeps (input {STATE_INPUT!r})"


def add_guard(bundle_dir: Path, settings: Any, task: Any, observations: np.ndarray | list[dict[str, np.ndarray]],
              actions: np.ndarray, episodes: int, *, world_model_path: Optional[Path], opset: int,
              intra_op_threads: int, guard_seeds: list[int]) -> dict[str, Any]:
    """Write what the edge guard needs into a staging bundle, prove it builds, and measure its fallback rate.

    ``observations``/``actions`` are what the exported policy saw and did in the export stage's
    closed-loop evaluation (rows, or a camera policy's dicts of frames and state): their statistics
    become the OOD reference (a camera policy's: of its state input), and they calibrate the world
    model's disagreement threshold. The guarded policy then drives ``guard_seeds`` (fresh episodes)
    and its fallback rate is returned for the run's summary.
    """
    settings = dict(settings or {})
    camera = bool(len(observations)) and isinstance(observations[0], dict)
    guard = {"enabled": bool(settings.get("enabled", True)), "ood_threshold": float(settings.get("ood_threshold", 6.0)),
             "min_std": float(settings.get("min_std", 1e-3)),
             "action_tolerance": float(settings.get("action_tolerance", 1e-4)),
             "max_disagreement": settings.get("max_disagreement"), "hold_steps": int(settings.get("hold_steps", 0)),
             "fallback": resolve_fallback(settings.get("fallback") or {"_target_": "physai.edge.fallback.ZeroAction"},
                                          task)}
    sections: dict[str, Any] = {"runtime": {"intra_op_threads": int(intra_op_threads), "inter_op_threads": 1}}
    source = "export stage closed-loop evaluation"
    if camera:  # the OOD monitor judges the state terms a camera policy keeps, never its frames
        if STATE_INPUT in observations[0]:
            rows = np.stack([o[STATE_INPUT] for o in observations])
            sections["observation_statistics"] = {**observation_statistics(rows, source, episodes), "input": STATE_INPUT}
        guard["fallback_reason"] = camera_fallback_reason(guard["fallback"], sorted(observations[0]))
    else:
        sections["observation_statistics"] = observation_statistics(observations, source, episodes)
    files: tuple[str, ...] = ()
    continuous = np.asarray(actions).dtype.kind == "f"
    if (settings.get("world_model", True) and world_model_path is not None and world_model_path.is_file() and continuous
            and not camera):  # the ensemble predicts flat observations, not frames
        model = EnsembleDynamicsModel.load(world_model_path, expected_obs_dim=observations.shape[1])
        export_world_model(model, bundle_dir / WORLD_MODEL_FILE, opset)
        files = (WORLD_MODEL_FILE,)
        session = ort.InferenceSession(str(bundle_dir / WORLD_MODEL_FILE), providers=["CPUExecutionProvider"])
        seen = session.run([WORLD_MODEL_OUTPUTS[1]], {
            WORLD_MODEL_INPUTS[0]: np.asarray(observations, np.float32),
            WORLD_MODEL_INPUTS[1]: np.asarray(actions, np.float32).reshape(len(actions), -1)})[0]
        calibration = {"p50": float(np.percentile(seen, 50)), "p99": float(np.percentile(seen, 99)),
                       "max": float(seen.max()), "samples": int(seen.size)}
        if guard["max_disagreement"] is None:
            guard["max_disagreement"] = float(settings.get("disagreement_margin", 1.5)) * calibration["max"]
        sections["world_model"] = {
            "file": WORLD_MODEL_FILE, "model_id": model.model_id, "members": int(model.elites),
            "inputs": list(WORLD_MODEL_INPUTS), "outputs": list(WORLD_MODEL_OUTPUTS),
            "units": "max over columns of the std over elites of the predicted next-observation delta, "
                     "in units of the training deltas' std; physics context at its training mean",
            "calibration": calibration}
    sections["guard"] = guard
    update_manifest(bundle_dir, sections, files)
    guarded = GuardedPolicy.from_bundle(bundle_dir)  # a fallback that does not fit the task fails the export here
    figures: dict[str, Any] = {"enabled": guard["enabled"], "fallback": guarded.report()["fallback"],
                               "fallback_reason": guard.get("fallback_reason"),
                               "ood_threshold": guard["ood_threshold"], "max_disagreement": guard["max_disagreement"],
                               "world_model": bool(files)}
    if guard["enabled"] and guard_seeds:
        guarded.reset_counters()
        returns = []
        for seed in guard_seeds:
            guarded.reset()
            returns += episode_returns(task, guarded.act, [seed])
        report = guarded.report()
        figures.update({"fallback_rate": report["fallback_rate"], "steps": report["steps"],
                        "fallbacks": report["fallbacks"], "by_reason": report["by_reason"],
                        "eval": summarize_returns(returns, guard_seeds, task.solved_threshold)})
    return figures
