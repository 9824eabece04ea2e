"""Edge latency side by side: physai's runtime, a bare onnxruntime session and torch eager.

All three run the same network in one process, interleaved in rounds so that noise from a
shared machine lands on every contender alike. Batch 1, one thread each. When the bundle has
observation statistics, the guarded runtime (physai.edge.guard: monitors + fallback) runs beside
them on an in-distribution observation, so its cost over the bare runtime is measured too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from physai.latency import latency_figures, time_calls

log = logging.getLogger(__name__)


def bench_edge(bundle_dir: Path, iterations: int = 2000, rounds: int = 5, warmup: int = 300) -> dict:
    import onnxruntime as ort
    import torch

    from physai.edge.bundle import INPUT_NAME, OUTPUT_NAME, POLICY_FILE
    from physai.edge.runtime import EdgePolicy
    from physai.export import DeployablePolicy
    from physai.pipeline import CONFIG_FILE, build_task
    from physai.training.sb3 import load_trained_policy

    run_dir = bundle_dir.resolve().parent
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    torch.set_num_threads(1)
    trained = load_trained_policy(cfg.algo, run_dir / "checkpoints" / "final", build_task(cfg.env))
    torch_policy = DeployablePolicy(trained.model, trained.obs_norm).eval()

    runtime = EdgePolicy.load(bundle_dir, intra_op_threads=1)
    guarded = None
    if runtime.manifest.get("observation_statistics"):
        from physai.edge.guard import GuardedPolicy

        guarded = GuardedPolicy.from_bundle(bundle_dir, intra_op_threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    bare = ort.InferenceSession(str(bundle_dir / POLICY_FILE), sess_options=options,
                                providers=["CPUExecutionProvider"])

    stats = runtime.manifest.get("observation_statistics")
    # An observation the policy meets (the statistics' mean), so the guard takes its normal path.
    obs = (np.asarray(stats["mean"], dtype=np.float32) if stats
           else np.random.default_rng(0).normal(size=runtime.obs_dim).astype(np.float32))
    obs_batch = obs[None, :]
    obs_tensor = torch.from_numpy(obs_batch)

    def torch_eager():
        with torch.inference_mode():
            return torch_policy(obs_tensor).numpy()

    contenders = {
        "physai_runtime": lambda: runtime.act(obs),
        "onnxruntime_bare": lambda: bare.run([OUTPUT_NAME], {INPUT_NAME: obs_batch}),
        "torch_eager": torch_eager,
    }
    if guarded is not None:
        contenders["physai_guarded"] = lambda: guarded.act(obs)
    host_model = _predict_host(cfg, bundle_dir)  # before any policy call is timed: a prediction, not a fit
    samples: dict[str, list[np.ndarray]] = {name: [] for name in contenders}
    for name, call in contenders.items():
        time_calls(call, warmup, 0)
    for _ in range(rounds):
        for name, call in contenders.items():
            samples[name].append(time_calls(call, warmup=50, iterations=iterations))
    figures = {name: latency_figures(np.concatenate(parts)) for name, parts in samples.items()}
    result = {
        "bundle": str(bundle_dir),
        "latency": figures,
        "runtime_p50_over_ort": figures["physai_runtime"]["p50_ms"] / figures["onnxruntime_bare"]["p50_ms"],
        "runtime_p99_over_ort": figures["physai_runtime"]["p99_ms"] / figures["onnxruntime_bare"]["p99_ms"],
        "runtime_p50_over_torch": figures["physai_runtime"]["p50_ms"] / figures["torch_eager"]["p50_ms"],
        "runtime_p99_over_torch": figures["physai_runtime"]["p99_ms"] / figures["torch_eager"]["p99_ms"],
    }
    if host_model is not None:
        host_model["measured_p50_ms"] = figures["physai_runtime"]["p50_ms"]
        host_model["error"] = host_model["predicted_ms"] / host_model["measured_p50_ms"] - 1
        result["host_model"] = host_model
        result["host_model_error"] = host_model["error"]
    if guarded is not None:
        result["guarded_p50_over_runtime"] = figures["physai_guarded"]["p50_ms"] / figures["physai_runtime"]["p50_ms"]
        result["guarded_p99_over_runtime"] = figures["physai_guarded"]["p99_ms"] / figures["physai_runtime"]["p99_ms"]
        result["guard_fallbacks_during_bench"] = guarded.fallbacks
    _print_table(figures)
    return result


def _predict_host(cfg, bundle_dir: Path) -> dict | None:
    """The host's modeled batch-1 latency: its spec-sheet roofline plus per-kernel and per-call costs
    measured on chains of tiny Add nodes (not the policy), as the profile stage does."""
    from physai.config.schema import DeviceConfig
    from physai.devices.microbench import measure_host_overheads
    from physai.devices.onnx_cost import node_costs
    from physai.devices.roofline import model_device
    from physai.edge.bundle import POLICY_FILE

    hosts = [(key, OmegaConf.merge(OmegaConf.structured(DeviceConfig), device))
             for key, device in cfg.get("device", {}).items() if device.get("measured_host")]
    if not hosts:
        log.warning("the run's config names no measured_host device: no host model error to report")
        return None
    key, device = hosts[0]
    overheads = measure_host_overheads(intra_op_threads=1, seed=0)
    modeled = model_device(node_costs(bundle_dir / POLICY_FILE, batch=1), device, None, overheads)
    return {"device": key, "predicted_ms": modeled["latency_ms"], "modeled": True, "overheads": overheads,
            "method": "spec-sheet roofline + overheads measured on Add-chain graphs, before the policy was timed"}


def _print_table(figures: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="batch-1 latency, same network, one process, interleaved rounds")
    for column in ("contender", "p50 ms", "p95 ms", "p99 ms", "max ms", "actions/s", "n"):
        table.add_column(column)
    for name, fig in figures.items():
        table.add_row(name, f"{fig['p50_ms']:.4f}", f"{fig['p95_ms']:.4f}", f"{fig['p99_ms']:.4f}",
                      f"{fig['max_ms']:.4f}", f"{fig['actions_per_s']:.0f}", str(fig["n"]))
    Console(stderr=True).print(table)
