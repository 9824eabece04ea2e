"""Export the final policy as a bundle, then prove it: parity with SB3 and its closed-loop return."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE
from physai.evaluation import episode_returns, evaluation_seeds, summarize_returns

REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = [f"bundle/{POLICY_FILE}", f"bundle/{MANIFEST_FILE}", "summary:bundle"]

# Keys that change how a run is executed but not what policy it produces.
_NON_IDENTITY_KEYS = ("pipeline", "tracking", "resume", "profile", "gate", "device")


def run(cfg, ctx) -> dict:
    from physai.edge.runtime import EdgePolicy
    from physai.export import config_hash, git_provenance, write_bundle
    from physai.parity import parity_report
    from physai.training.normalization import NORMALIZATION_FILE, load_obs_normalization
    from physai.training.sb3 import load_checkpoint

    checkpoint = ctx.path("checkpoints", "final")
    model = load_checkpoint(cfg.algo, checkpoint)
    obs_norm = load_obs_normalization(checkpoint / NORMALIZATION_FILE)
    identity = OmegaConf.to_container(cfg, resolve=True)
    for key in _NON_IDENTITY_KEYS:
        identity.pop(key, None)
    provenance = {**git_provenance(), "config_sha256": config_hash(OmegaConf.to_yaml(OmegaConf.create(identity))),
                  "seed": int(cfg.seed), "env_id": cfg.env.id, "algo": cfg.algo.name,
                  "timesteps": int(model.num_timesteps), "checkpoint": "checkpoints/final", "dataset_ids": []}
    bundle_dir = ctx.path("bundle")
    manifest = write_bundle(model, obs_norm, bundle_dir, opset=cfg.export.opset,
                            control_rate_hz=ctx.task.control_rate_hz(), provenance=provenance)

    policy = EdgePolicy.load(bundle_dir)
    parity = parity_report(model, obs_norm, policy, cfg.export.parity_samples, seed=cfg.seed)
    if parity["max_abs_error"] > cfg.export.parity_tolerance:
        raise RuntimeError(f"exported bundle disagrees with the trained policy by {parity['max_abs_error']:.3g} "
                           f"(> export.parity_tolerance={cfg.export.parity_tolerance}); the export is wrong")
    seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
    closed_loop = summarize_returns(episode_returns(ctx.task, policy.act, seeds), seeds, ctx.task.solved_threshold)
    figures = {"path": "bundle", "policy_sha256": manifest["files"][POLICY_FILE]["sha256"],
               "policy_bytes": manifest["files"][POLICY_FILE]["bytes"], "format_version": manifest["format_version"],
               "control_rate_hz": manifest["control_rate_hz"], "parity": parity, "eval": closed_loop}
    ctx.record("bundle", figures)
    return figures
