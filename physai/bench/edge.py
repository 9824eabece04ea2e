"""Edge latency side by side: physai's runtime against onnxruntime called its fastest way, and torch eager.

Every contender runs the same network at batch 1 on one thread, in one process. Calls are interleaved
one by one (each iteration calls every contender once, in a fresh random order, so none always runs
right after the same neighbour, torch's heavy call say), so a burst of load on a shared machine lands
on all of them alike, and the whole run is repeated in rounds: the pooled percentiles come with their
spread over rounds. The contenders:

- ``physai_runtime``: ``EdgePolicy.act(obs)``: shape, dtype and finiteness checks, copy in, run, copy out.
- ``onnxruntime_iobinding``: a bare session with an input and an output OrtValue bound once; per call
  the observation is copied into the bound input and ``session.run_with_iobinding`` runs (public API).
- ``onnxruntime_iobinding_native``: the same through the pybind method behind it (private API, the one
  physai's runtime calls): the floor for any Python caller.
- ``onnxruntime_run``: ``session.run`` with a feed dict, as onnxruntime's documentation shows.
- ``torch_eager``: the trained network in torch (when the run's checkpoint and torch are at hand).
- ``physai_guarded``: the guard's monitors and fallback around the runtime (when the bundle has
  observation statistics), on an in-distribution observation so it takes its normal path.

The host's latency is predicted before any policy call is timed (spec roofline plus overheads
micro-benchmarked on Add chains, as the profile stage does). Without a bundle the command first
trains one (``BUILD_OVERRIDES``: the default task and network, a short training) in a temporary run
directory, so ``physai bench edge --out benchmarks/results`` reproduces from a clean checkout.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnxruntime as ort
from omegaconf import OmegaConf

from physai.config.compose import CONFIG_FILE, build_task
from physai.config.schema import DeviceConfig
from physai.core.errors import BundleError, PhysaiError
from physai.core.io import write_json_atomic
from physai.deploy.devices.microbench import measure_host_overheads
from physai.deploy.devices.onnx_cost import node_costs
from physai.deploy.devices.roofline import model_device
from physai.deploy.latency import latency_figures, time_calls, time_interleaved
from physai.deploy.profiling import host_description
from physai.deploy.release import load_device
from physai.edge.bundle import INPUT_NAME, OUTPUT_NAME, POLICY_FILE
from physai.edge.guard import GuardedPolicy
from physai.edge.runtime import EdgePolicy
from physai.report.format import fmt, save_png

log = logging.getLogger(__name__)

RESULT_FILE = "edge.json"
PLOT_FILE = "edge.png"
TARGET_P99_RATIO = 1.1  # physai's runtime p99 at most 1.1x bare onnxruntime with IOBinding
REFERENCE = "onnxruntime_iobinding"
# The bundle the command trains when none is given: the default task's network, a smoke budget.
BUILD_OVERRIDES = ("experiment=smoke", "tracking=none", "evaluate.video=false", "pipeline.stages=[train,export]",
                   "seed=0")
CONTENDERS = {
    "physai_runtime": "physai.edge.EdgePolicy.act(obs): checks shape, dtype and finiteness, copies in, runs "
                      "through its bound buffers, returns a fresh action array",
    "onnxruntime_iobinding": "bare InferenceSession, input and output OrtValues bound once; per call: copy obs "
                             "into the bound input, session.run_with_iobinding(binding, run_options) (public API; "
                             "a RunOptions with gpu_graph_id=-1, faster than None or a bare RunOptions)",
    "onnxruntime_iobinding_native": "the same binding through session._sess.run_with_iobinding (the pybind "
                                    "method under the public one; private API, what physai's runtime calls)",
    "onnxruntime_run": "bare InferenceSession, session.run([output], {input: obs[None]})",
    "torch_eager": "the trained network in torch, inference_mode, one thread",
    "physai_guarded": "physai.edge.guard.GuardedPolicy.act(obs) on an in-distribution observation",
}


def build_bundle(run_dir: Path) -> Path:
    """Train the benchmark's policy in ``run_dir`` (a subprocess, so its threads and memory leave with it)."""
    command = [sys.executable, "-m", "physai.run.cli", "train", *BUILD_OVERRIDES, f"hydra.run.dir={run_dir}"]
    log.info("no bundle given: training one with %s", " ".join(BUILD_OVERRIDES))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    bundle = run_dir / "bundle"
    if result.returncode != 0 or not (bundle / "manifest.json").exists():
        raise PhysaiError(f"training the benchmark's bundle failed (exit {result.returncode}): "
                          f"{(result.stderr or result.stdout).strip()[-1500:]}; pass a bundle directory instead")
    return bundle


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _onnxruntime_contenders(policy_path: Path, obs: np.ndarray, action_shape: tuple, action_dtype) -> dict:
    """Bare onnxruntime, each way a user would call it, on its own session."""
    contenders: dict[str, Callable[[], Any]] = {}
    for name in ("onnxruntime_iobinding", "onnxruntime_iobinding_native"):
        session = _session(policy_path)
        inputs = np.zeros((1, obs.size), dtype=np.float32)
        outputs = np.zeros((1, *action_shape), dtype=action_dtype)
        binding = session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(inputs))
        binding.bind_ortvalue_output(OUTPUT_NAME, ort.OrtValue.ortvalue_from_numpy(outputs))
        row = inputs[0]
        # A RunOptions object: with None, onnxruntime builds a default one on every call. The entry
        # gpu_graph_id=-1 (no graph capture, all a CPU session does anyway) lets the public wrapper read
        # it without the exception it raises and catches when the key is absent.
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", "-1")
        if name == "onnxruntime_iobinding":
            run = session.run_with_iobinding

            def call(row=row, run=run, binding=binding, options=options, outputs=outputs):
                row[...] = obs
                run(binding, options)
                return outputs
        else:
            native, native_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
            if native is None or native_binding is None or not hasattr(native, "run_with_iobinding"):
                log.info("this onnxruntime has no pybind run_with_iobinding: %s left out", name)
                continue
            run = native.run_with_iobinding

            def call(row=row, run=run, binding=native_binding, options=options, outputs=outputs):
                row[...] = obs
                run(binding, options)
                return outputs
        contenders[name] = call
    session = _session(policy_path)
    feed, names = {INPUT_NAME: obs[None, :]}, [OUTPUT_NAME]
    contenders["onnxruntime_run"] = lambda: session.run(names, feed)[0]
    return contenders


def _torch_contender(bundle_dir: Path, obs: np.ndarray) -> Optional[Callable[[], Any]]:
    """The trained network in torch eager, from the run's checkpoint; None where torch or the run is missing."""
    run_dir = bundle_dir.resolve().parent
    if not (run_dir / CONFIG_FILE).exists() or not (run_dir / "checkpoints" / "final").exists():
        log.info("%s is not in a run directory with a final checkpoint: torch eager left out", bundle_dir)
        return None
    try:
        import torch
    except ImportError:
        log.info("torch is not installed: torch eager left out")
        return None
    from physai.deploy.onnx_export import DeployablePolicy
    from physai.train.sb3 import load_trained_policy

    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    torch.set_num_threads(1)
    trained = load_trained_policy(cfg.algo, run_dir / "checkpoints" / "final", build_task(cfg.env))
    network = DeployablePolicy(trained.model, trained.obs_norm).eval()
    tensor = torch.from_numpy(obs[None, :])

    def torch_eager():
        with torch.inference_mode():
            return network(tensor).numpy()

    return torch_eager


def _check_same_work(contenders: dict[str, Callable[[], Any]], expected: np.ndarray) -> None:
    """Every contender must return the runtime's action on the benchmark's observation."""
    for name, call in contenders.items():
        got = np.asarray(call()).reshape(expected.shape)
        tolerance = 1e-4 if name == "torch_eager" else 1e-6
        if not np.allclose(got, expected, atol=tolerance, rtol=0):
            raise BundleError(f"bench edge: {name} returned {got.tolist()}, the runtime {expected.tolist()}: "
                              f"the contenders do not run the same network")


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _host_device(cfg) -> Optional[tuple[str, Any]]:
    for key, device in ((cfg or {}).get("device") or {}).items():
        if device.get("measured_host"):
            return key, OmegaConf.merge(OmegaConf.structured(DeviceConfig), device)
    try:
        return "host_cpu", load_device("host_cpu")
    except PhysaiError as exc:
        log.warning("no measured_host device to model this host with (%s): no host model error to report", exc)
        return None


def _predict_host(cfg, bundle_dir: Path) -> Optional[dict]:
    """The host's modeled batch-1 latency: its roofline (clock, caches and SIMD width read from this
    machine) plus per-kernel and per-call costs measured on chains of tiny Add nodes (not the policy),
    as the profile stage does."""
    host = _host_device(cfg)
    if host is None:
        return None
    key, device = host
    overheads = measure_host_overheads(intra_op_threads=1, seed=0)
    modeled = model_device(node_costs(bundle_dir / POLICY_FILE, batch=1), device, None, overheads)
    return {"device": key, "predicted_ms": modeled["latency_ms"], "modeled": True, "overheads": overheads,
            "host_facts": modeled.get("host_facts"), "cpu_peak_gflops": modeled.get("cpu_peak_gflops"),
            "method": "spec roofline (clock, caches, SIMD width of this machine) + overheads measured on "
                      "Add-chain graphs, before the policy was timed"}


def _machine() -> dict[str, Any]:
    machine = host_description(threads=1)
    machine["numpy"] = np.__version__
    try:
        import torch

        machine["torch"] = torch.__version__
    except ImportError:
        machine["torch"] = None
    return machine


def bench_edge(bundle_dir: Optional[Path] = None, iterations: int = 10_000, rounds: int = 10, warmup: int = 1_000,
               out_dir: Optional[Path] = None, command: Optional[str] = None, seed: int = 0) -> dict:
    """Run the contenders interleaved call by call in ``rounds`` rounds of ``iterations`` calls each.

    Returns every figure; with ``out_dir``, also writes ``edge.json`` and ``edge.png`` there.
    """
    if iterations < 100 or rounds < 1 or warmup < 0:
        raise PhysaiError(f"bench edge: --iterations {iterations} (>= 100), --rounds {rounds} (>= 1, 5+ for a "
                          f"spread) and warm-up {warmup} (>= 0)")
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="physai-bench-edge-") as scratch:
        built = bundle_dir is None
        if built:
            bundle_dir = build_bundle(Path(scratch) / "run")
        bundle_dir = Path(bundle_dir)
        record = _bench(bundle_dir, iterations, rounds, warmup, seed)
        record["bundle"]["built_by_command"] = ("physai train " + " ".join(BUILD_OVERRIDES)) if built else None
        if built:
            record["bundle"]["path"] = "(temporary run directory, removed after the benchmark)"
    record = {"command": command if command is not None else "physai " + " ".join(sys.argv[1:]),
              "machine": _machine(),
              "load_average_1_5_15min": {"before": list(load_before) if load_before else None,
                                         "after": list(os.getloadavg()) if load_before else None},
              **record, "wall_clock_s": time.perf_counter() - started}
    _print_table(record)
    if out_dir is not None:
        out_dir = Path(out_dir)
        record["plot"] = str(out_dir / PLOT_FILE)
        _plot(record, out_dir / PLOT_FILE)
        write_json_atomic(out_dir / RESULT_FILE, record)
    return record


def _bench(bundle_dir: Path, iterations: int, rounds: int, warmup: int, seed: int) -> dict:
    run_dir = bundle_dir.resolve().parent
    cfg = OmegaConf.load(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).exists() else None
    runtime = EdgePolicy.load(bundle_dir, intra_op_threads=1)
    stats = runtime.manifest.get("observation_statistics")
    # An observation the policy meets (the statistics' mean), so the guard takes its normal path.
    obs = (np.asarray(stats["mean"], dtype=np.float32) if stats
           else np.random.default_rng(seed).normal(size=runtime.obs_dim).astype(np.float32))
    contenders: dict[str, Callable[[], Any]] = {"physai_runtime": lambda: runtime.act(obs)}
    contenders.update(_onnxruntime_contenders(bundle_dir / POLICY_FILE, obs, runtime.action_shape,
                                              runtime.action_dtype))
    torch_call = _torch_contender(bundle_dir, obs)
    if torch_call is not None:
        contenders["torch_eager"] = torch_call
    guarded = None
    if stats:
        guarded = GuardedPolicy.from_bundle(bundle_dir, intra_op_threads=1)
        contenders["physai_guarded"] = lambda: guarded.act(obs)
    _check_same_work(contenders, runtime.act(obs))

    host_model = _predict_host(cfg, bundle_dir)  # before any policy call is timed: a prediction, not a fit
    # The model's own condition: the runtime called in a loop that does nothing else, as the micro-benchmark
    # and the profile stage time it. The interleaved p50 (neighbours such as torch evict its caches) is kept
    # beside it.
    alone = latency_figures(time_calls(contenders["physai_runtime"], warmup, max(iterations, 2000)))
    names, calls = list(contenders), list(contenders.values())
    per_round: list[np.ndarray] = []
    for r in range(rounds):
        gc.collect()  # each round starts from the same heap; collection stays on while timing
        time_interleaved(calls, warmup, seed=seed + 2 * r)
        per_round.append(time_interleaved(calls, iterations, seed=seed + 2 * r + 1))
    figures: dict[str, dict] = {}
    for i, name in enumerate(names):
        pooled = latency_figures(np.concatenate([samples[i] for samples in per_round]))
        by_round = [latency_figures(samples[i]) for samples in per_round]
        pooled["rounds"] = {key: [r[key] for r in by_round] for key in ("p50_ms", "p95_ms", "p99_ms")}
        pooled["p50_over_rounds_ms"] = _spread(pooled["rounds"]["p50_ms"])
        pooled["p99_over_rounds_ms"] = _spread(pooled["rounds"]["p99_ms"])
        figures[name] = pooled

    result: dict[str, Any] = {
        "bundle": {"path": str(bundle_dir), "obs_dim": runtime.obs_dim, "action_shape": list(runtime.action_shape),
                   "policy_sha256": runtime.manifest["files"][POLICY_FILE]["sha256"]},
        "settings": {"batch": 1, "intra_op_threads": 1, "iterations_per_round": iterations, "rounds": rounds,
                     "warmup_calls_per_round": warmup, "n_per_contender": iterations * rounds,
                     "order": "interleaved call by call: every iteration calls each contender once, in a fresh "
                                  "seeded random order",
                     "timer": "time.perf_counter_ns around each call", "observation": (
                         "the bundle's observation_statistics mean" if stats else f"normal(0, 1), seed {seed}")},
        "contenders": {name: CONTENDERS[name] for name in names},
        "latency": figures,
    }
    runtime_fig = figures["physai_runtime"]
    for other, suffix in ((REFERENCE, "ort_iobinding"), ("onnxruntime_iobinding_native", "ort_iobinding_native"),
                          ("onnxruntime_run", "ort_run"), ("torch_eager", "torch")):
        if other not in figures:
            continue
        for q in ("p50", "p99"):
            result[f"runtime_{q}_over_{suffix}"] = runtime_fig[f"{q}_ms"] / figures[other][f"{q}_ms"]
        result[f"runtime_p99_over_{suffix}_by_round"] = _spread(
            [a / b for a, b in zip(runtime_fig["rounds"]["p99_ms"], figures[other]["rounds"]["p99_ms"])])
    ratio = result["runtime_p99_over_ort_iobinding"]
    result["target"] = {"runtime_p99_over_ort_iobinding_max": TARGET_P99_RATIO, "measured": ratio,
                        "met": bool(ratio <= TARGET_P99_RATIO),
                        "gap": None if ratio <= TARGET_P99_RATIO else ratio - TARGET_P99_RATIO}
    if host_model is not None:
        host_model["measured_p50_ms"] = alone["p50_ms"]
        host_model["measured"] = (f"physai_runtime alone, {alone['n']} calls after {warmup} warm-up, right after "
                                  f"the prediction")
        host_model["error"] = host_model["predicted_ms"] / host_model["measured_p50_ms"] - 1
        host_model["measured_p50_interleaved_ms"] = runtime_fig["p50_ms"]
        host_model["error_vs_interleaved_p50"] = host_model["predicted_ms"] / runtime_fig["p50_ms"] - 1
        result["host_model"] = host_model
        result["host_model_error"] = host_model["error"]
    if guarded is not None:
        for q in ("p50", "p99"):
            result[f"guarded_{q}_over_runtime"] = figures["physai_guarded"][f"{q}_ms"] / runtime_fig[f"{q}_ms"]
        result["guard_fallbacks_during_bench"] = guarded.fallbacks
    return result


def _us(ms: float) -> str:
    return fmt(ms * 1e3, 3)


def markdown_table(record: dict) -> list[str]:
    """The README's table, quoted from an ``edge.json`` record (microseconds)."""
    lines = ["| contender | p50 µs | p95 µs | p99 µs | p99 over rounds, min / median / max µs | n |",
             "|---|---|---|---|---|---|"]
    for name, fig in record["latency"].items():
        spread = fig["p99_over_rounds_ms"]
        lines.append(f"| {name} | {_us(fig['p50_ms'])} | {_us(fig['p95_ms'])} | {_us(fig['p99_ms'])} | "
                     f"{_us(spread['min'])} / {_us(spread['median'])} / {_us(spread['max'])} | {fig['n']:,} |")
    return lines


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    settings = record["settings"]
    table = Table(title=f"batch-1 latency, same network, one process, calls interleaved one by one, "
                        f"{settings['rounds']} rounds (measured on {record['machine']['cpu']})")
    for column in ("contender", "p50 µs", "p95 µs", "p99 µs", "p99 over rounds µs (min/med/max)", "max µs",
                   "actions/s", "n"):
        table.add_column(column, justify="right")
    for name, fig in record["latency"].items():
        spread = fig["p99_over_rounds_ms"]
        table.add_row(name, _us(fig["p50_ms"]), _us(fig["p95_ms"]), _us(fig["p99_ms"]),
                      f"{_us(spread['min'])} / {_us(spread['median'])} / {_us(spread['max'])}", _us(fig["max_ms"]),
                      f"{fig['actions_per_s']:,.0f}", f"{fig['n']:,}")
    console = Console(stderr=True, width=160)
    console.print(table)
    target = record["target"]
    console.print(f"physai runtime p99 / onnxruntime IOBinding p99 = {fmt(target['measured'])} (target <= "
                  f"{target['runtime_p99_over_ort_iobinding_max']}: {'met' if target['met'] else 'MISSED'}); "
                  f"by round {fmt(record['runtime_p99_over_ort_iobinding_by_round']['min'])} .. "
                  f"{fmt(record['runtime_p99_over_ort_iobinding_by_round']['max'])}", highlight=False)
    if "host_model_error" in record:
        host = record["host_model"]
        console.print(f"host model: predicted {_us(host['predicted_ms'])} µs before timing, measured p50 "
                      f"{_us(host['measured_p50_ms'])} µs (runtime alone): error {100 * host['error']:+.1f}% "
                      f"(target +-25%); against the interleaved p50 {_us(host['measured_p50_interleaved_ms'])} µs: "
                      f"{100 * host['error_vs_interleaved_p50']:+.1f}%", highlight=False)


def _plot(record: dict, target: Path) -> None:
    """Left: each contender's tail (share of calls slower than x). Right: p50 and p99 of every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = record["latency"]
    fig, (tail, rounds) = plt.subplots(1, 2, figsize=(12.0, 4.4), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, fig_) in enumerate(figures.items()):
        color = colors[i % len(colors)]
        points = [("p50_ms", 0.5), ("p95_ms", 0.05), ("p99_ms", 0.01)]
        tail.plot([fig_[k] * 1e3 for k, _ in points] + [fig_["max_ms"] * 1e3],
                  [share for _, share in points] + [1.0 / fig_["n"]], "o-", color=color, label=name)
        for j, (p50, p99) in enumerate(zip(fig_["rounds"]["p50_ms"], fig_["rounds"]["p99_ms"])):
            rounds.plot([i - 0.15], [p50 * 1e3], "o", mfc="none", color=color, label="p50" if i == j == 0 else None)
            rounds.plot([i + 0.15], [p99 * 1e3], "s", color=color, label="p99" if i == j == 0 else None)
    tail.set_xscale("log")
    tail.set_yscale("log")
    tail.set_xlabel("latency per call (µs, measured)")
    tail.set_ylabel("share of calls slower (p50, p95, p99, max)")
    tail.grid(alpha=0.3, which="both")
    tail.legend(fontsize=7)
    rounds.set_xticks(range(len(figures)), [n.replace("_", "\n", 1) for n in figures], fontsize=7)
    rounds.set_yscale("log")
    rounds.set_ylabel("µs per call, one marker per round")
    rounds.grid(alpha=0.3, which="both")
    rounds.legend(fontsize=7)
    settings = record["settings"]
    fig.suptitle(f"batch-1 latency, interleaved call by call, {settings['rounds']} rounds x "
                 f"{settings['iterations_per_round']:,} calls; {record['machine']['cpu']}, onnxruntime "
                 f"{record['machine']['onnxruntime']}", fontsize=9)
    fig.tight_layout()
    save_png(fig, target)

