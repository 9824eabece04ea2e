"""Export the final policy as a bundle and prove it before it replaces the previous one.

The bundle is assembled in a staging directory, checked for parity with SB3 and evaluated
closed-loop, and only then swapped in: a failed export never costs the last good bundle.
"""

from __future__ import annotations

import shutil
from typing import Any, Optional, TypedDict

import numpy as np
from omegaconf import OmegaConf

from physai.config.identity import identity_hash
from physai.core.errors import BundleError, ConfigError, PhysaiError
from physai.core.io import fresh_staging_dir, replace_dir_atomically
from physai.deploy.fallback_model import resolve_fallback
from physai.deploy.onnx_export import add_guard, git_provenance, write_bundle
from physai.deploy.parity import parity_on_observations, parity_report
from physai.deploy.precision import add_variants
from physai.deploy.release import record_bundle_evaluation
from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE, describe_space
from physai.edge.fallback import build_fallback
from physai.edge.runtime import EdgePolicy
from physai.report.format import fmt
from physai.synthetic.artifacts import CHECKPOINT_WORLD_MODEL, WORLD_MODEL_FILE
from physai.train.evaluation import ReturnFigures, episode_returns, evaluation_seeds, summarize_returns
from physai.train.sb3 import load_trained_policy


class BundleSummary(TypedDict):
    """The exported bundle: its policy's checksum, SB3 parity, closed-loop returns, variants and guard."""

    path: str
    policy_sha256: str
    policy_bytes: int
    format_version: int
    control_rate_hz: Optional[float]
    timesteps: int
    parity: dict[str, Any]
    eval: ReturnFigures  # on the evaluate stage's seeds, so the gate can pair the two
    variants: dict[str, Any]
    guard: Optional[dict[str, Any]]


REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = [f"bundle/{POLICY_FILE}", f"bundle/{MANIFEST_FILE}", "summary:bundle"]
SUMMARY = BundleSummary


class ExportError(PhysaiError):
    """The exported graph does not compute what the trained policy computes."""


def check(cfg, task) -> None:
    """Before anything trains: a guard fallback that reads the task's MJCF names parts the MJCF has, and a
    camera policy's fallback reads only the state terms the policy keeps."""
    if "guard" in cfg and cfg.guard.enabled and cfg.guard.get("fallback"):
        fallback = resolve_fallback(OmegaConf.to_container(cfg.guard.fallback, resolve=True), task)
        if camera_of(task) is not None:
            _check_camera_fallback(fallback, task)


def _check_camera_fallback(fallback: dict[str, Any], task) -> None:
    if str(fallback.get("_target_", "")).rsplit(".", 1)[-1] == "ZeroAction":
        return
    env = task.make()  # one env gives both the action space and the state columns the policy keeps
    try:
        action_space = describe_space(env.action_space, [])
        engine = env.unwrapped.engine
        kept = [engine.observation_names[i] for i in engine.policy_state_columns]
    finally:
        env.close()
    try:
        build_fallback(fallback, {"observation_space": {"names": kept}, "action_space": action_space})
    except BundleError as exc:
        raise ConfigError(f"env {task.id} gives the policy camera images, and its guard's fallback cannot act on the "
                          f"state terms the policy keeps: {exc} A camera policy falls back on what its state input "
                          f"holds; set guard.fallback._target_=physai.edge.fallback.ZeroAction") from exc


def run(cfg, ctx) -> BundleSummary:
    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    # The guard watches the world model the policy learned with: a model-based learner's own ensemble
    # (checksummed in its checkpoint) when it has one, else the world_model stage's.
    learner_ensemble = ctx.path("checkpoints", "final", CHECKPOINT_WORLD_MODEL)
    world_model_path = learner_ensemble if learner_ensemble.is_file() else ctx.path(WORLD_MODEL_FILE)
    provenance = {**git_provenance(), "config_sha256": identity_hash(cfg), "seed": int(cfg.seed),
                  "env_id": cfg.env.id, "algo": cfg.algo.name, "timesteps": trained.timesteps,
                  "checkpoint": "checkpoints/final", "dataset_ids": []}
    target = ctx.path("bundle")
    staging = fresh_staging_dir(target)
    try:
        camera = camera_of(ctx.task)
        manifest = write_bundle(trained.model, trained.obs_norm, staging, opset=cfg.export.opset,
                                control_rate_hz=ctx.task.control_rate_hz(), provenance=provenance,
                                observation_names=_kept_state_names(ctx.task) if camera else ctx.task.signal_names()[0],
                                camera=camera)
        policy = EdgePolicy.load(staging)
        if camera is None:
            parity = _check_parity(parity_report(trained, policy, cfg.export.parity_samples, seed=cfg.seed), cfg)
        seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
        seen: list = []  # (observation, action) pairs: the edge guard's reference statistics

        def recording_act(obs):
            action = policy.act(obs)
            seen.append((obs, action))
            return action

        closed_loop = summarize_returns(episode_returns(ctx.task, recording_act, seeds), seeds,
                                        ctx.task.solved_threshold)
        if camera is not None:  # a camera policy's parity is judged on the frames it met, not on random pixels
            parity = _check_parity(parity_on_observations(trained, [o for o, _ in seen], [a for _, a in seen],
                                                          cfg.export.parity_samples), cfg)
        observations = [o for o, _ in seen] if camera is not None else np.stack([o for o, _ in seen])
        guard = add_guard(staging, OmegaConf.to_container(cfg.guard, resolve=True) if "guard" in cfg else None,
                          ctx.task, observations, np.stack([a for _, a in seen]), len(seeds),
                          world_model_path=world_model_path, opset=cfg.export.opset,
                          intra_op_threads=cfg.profile.intra_op_threads, guard_seeds=_guard_seeds(cfg, len(seeds)))
        # FP16/INT8 variants beside the proven FP32 graph, each judged on what it meets driving the task.
        variants = add_variants(staging, ctx.task, policy, seeds, closed_loop, cfg.export)
        record_bundle_evaluation(staging, closed_loop)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir_atomically(staging, target)
    policy_file = manifest["files"][POLICY_FILE]
    figures = BundleSummary(path="bundle", policy_sha256=policy_file["sha256"], policy_bytes=policy_file["bytes"],
                            format_version=manifest["format_version"], control_rate_hz=manifest["control_rate_hz"],
                            timesteps=trained.timesteps, parity=parity, eval=closed_loop, variants=variants,
                            guard=guard)
    ctx.record("bundle", figures)
    return figures


def camera_of(task) -> Optional[dict[str, Any]]:
    """What the manifest says about a camera policy's camera; None for a state policy."""
    spec = getattr(task, "task_spec", None)
    pixels = None if spec is None else spec.pixels
    if pixels is None:
        return None
    return {"name": pixels.camera, "height": pixels.height, "width": pixels.width, "frame_stack": pixels.frame_stack,
            "quality": pixels.quality, "depth": pixels.depth}


def _kept_state_names(task) -> list[str]:
    spec = task.task_spec
    names = task.signal_names()[0]
    return [names[i] for i in spec.pixels.kept_columns(names)]


def _check_parity(parity: dict[str, Any], cfg) -> dict[str, Any]:
    if parity["max_abs_error"] > cfg.export.parity_tolerance:
        raise ExportError(
            f"the exported graph differs from the trained policy by {parity['max_abs_error']:.3g} "
            f"(> export.parity_tolerance={cfg.export.parity_tolerance}); the previous bundle was kept. "
            f"Report this with the run directory, or raise export.parity_tolerance if the gap is expected")
    return parity


def _guard_seeds(cfg, n_eval: int) -> list[int]:
    """Fresh episodes for the guarded evaluation: right after the evaluation seeds, never training ones."""
    guard = cfg.get("guard")
    count = n_eval if guard is None or guard.get("evaluate_episodes") is None else int(guard.evaluate_episodes)
    if guard is not None and not guard.get("enabled", True):
        return []
    return evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset + n_eval, count)


def report_lines(cfg, ctx, summary: dict) -> list[str]:
    """The bundle's checksum, size, control rate and parity, and its reduced-precision variants."""
    bundle = summary.get("bundle")
    if not bundle:
        return []
    lines = ["## Bundle", "", f"`bundle/policy.onnx` sha256 `{bundle['policy_sha256']}`, "
             f"{bundle['policy_bytes']} bytes, control rate {fmt(bundle['control_rate_hz'])} Hz; parity with "
             f"SB3 on {bundle['parity']['samples']} "
             f"{'recorded frames' if 'frames' in bundle['parity'].get('reference', '') else 'random observations'}: "
             f"max abs error "
             f"{bundle['parity']['max_abs_error']:.2e}.", ""]
    return lines + _variant_lines(bundle.get("variants") or {}) + _guard_lines(bundle.get("guard"))


def _guard_lines(guard: Optional[dict]) -> list[str]:
    """The edge guard's fallback, why it is that one (camera policies), and how often it acted."""
    if not guard or not guard.get("enabled"):
        return []
    text = f"Edge guard: fallback `{guard['fallback']}`"
    if guard.get("fallback_reason"):
        text += f" ({guard['fallback_reason']})"
    if guard.get("steps"):
        evaluation = guard["eval"]
        text += (f"; on {evaluation['n_episodes']} fresh episodes it acted on {guard['fallbacks']} of "
                 f"{guard['steps']} steps (fallback rate {guard['fallback_rate']:.3g}"
                 f"{', ' + ', '.join(f'{k} {v}' for k, v in guard['by_reason'].items()) if guard['by_reason'] else ''}), "
                 f"return {fmt(evaluation['mean_return'])} [{fmt(evaluation['ci95_low'])}, {fmt(evaluation['ci95_high'])}]")
    return [text + ".", ""]


def _variant_lines(variants: dict) -> list[str]:
    """Reduced-precision variants beside the FP32 graph: parity and the change in evaluation return."""
    if not variants:
        return []
    lines = ["Reduced-precision variants (max action error vs FP32 on the observations each met driving the task, "
             "as a share of the action range; return change paired on the evaluation seeds):", "",
             "| variant | file | written | max abs error | share of range | tolerance | return change | 95% CI | "
             "points |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in variants.items():
        parity, change = v["parity_vs_fp32"], v["return_change"]
        lines.append(f"| {name} | `{v['file']}` | {fmt(v['written'])} | {fmt(parity.get('max_abs_error'), 3)} | "
                     f"{fmt(parity['max_error_share'], 3)} | {fmt(v['tolerance_share_of_action_range'])} | "
                     f"{change['mean']:+.4g} | [{fmt(change['ci95_low'])}, {fmt(change['ci95_high'])}] | "
                     f"{change['points']:+.3g} |")
    return lines + [""]
