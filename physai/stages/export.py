"""Export the final policy as a bundle and prove it before it replaces the previous one.

The bundle is assembled in a staging directory, checked for parity with SB3 and evaluated
closed-loop, and only then swapped in: a failed export never costs the last good bundle.
"""

from __future__ import annotations

import shutil

from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE
from physai.errors import PhysaiError
from physai.evaluation import episode_returns, evaluation_seeds, summarize_returns

REQUIRES = ["checkpoints/final/model.zip"]
PRODUCES = [f"bundle/{POLICY_FILE}", f"bundle/{MANIFEST_FILE}", "summary:bundle"]


class ExportError(PhysaiError):
    """The exported graph does not compute what the trained policy computes."""


def run(cfg, ctx) -> dict:
    from physai.edge.runtime import EdgePolicy
    from physai.export import git_provenance, write_bundle
    from physai.io import fresh_staging_dir, replace_dir_atomically
    from physai.parity import parity_report
    from physai.pipeline import identity_hash
    from physai.training.sb3 import load_trained_policy

    trained = load_trained_policy(cfg.algo, ctx.path("checkpoints", "final"), ctx.task)
    provenance = {**git_provenance(), "config_sha256": identity_hash(cfg), "seed": int(cfg.seed),
                  "env_id": cfg.env.id, "algo": cfg.algo.name, "timesteps": trained.timesteps,
                  "checkpoint": "checkpoints/final", "dataset_ids": []}
    target = ctx.path("bundle")
    staging = fresh_staging_dir(target)
    try:
        manifest = write_bundle(trained.model, trained.obs_norm, staging, opset=cfg.export.opset,
                                control_rate_hz=ctx.task.control_rate_hz(), provenance=provenance)
        policy = EdgePolicy.load(staging)
        parity = parity_report(trained, policy, cfg.export.parity_samples, seed=cfg.seed)
        if parity["max_abs_error"] > cfg.export.parity_tolerance:
            raise ExportError(
                f"the exported graph differs from the trained policy by {parity['max_abs_error']:.3g} "
                f"(> export.parity_tolerance={cfg.export.parity_tolerance}); the previous bundle was kept. "
                f"Report this with the run directory, or raise export.parity_tolerance if the gap is expected")
        seeds = evaluation_seeds(cfg.seed, cfg.evaluate.seed_offset, cfg.evaluate.n_episodes)
        closed_loop = summarize_returns(episode_returns(ctx.task, policy.act, seeds), seeds,
                                        ctx.task.solved_threshold)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir_atomically(staging, target)
    figures = {"path": "bundle", "policy_sha256": manifest["files"][POLICY_FILE]["sha256"],
               "policy_bytes": manifest["files"][POLICY_FILE]["bytes"], "format_version": manifest["format_version"],
               "control_rate_hz": manifest["control_rate_hz"], "timesteps": trained.timesteps,
               "parity": parity, "eval": closed_loop}
    ctx.record("bundle", figures)
    return figures
