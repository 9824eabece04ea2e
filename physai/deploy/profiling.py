"""``physai profile BUNDLE``: a trtexec-style latency harness for the edge runtime.

Like ``trtexec``: warm up, then time a fixed number of calls (``--iterations``) or keep calling
for a fixed time (``--duration``), one call at a time, and report min/mean/median/p90/p95/p99/max,
throughput and total host wall time, at batch 1 and over a batch sweep. Every figure is measured
on the host that runs the command (named in the output), through :class:`physai.edge.EdgePolicy`
(or the same runtime on a reduced-precision variant): the time of one ``act()`` call, input checks
included. On onnxruntime's CPU provider there are no host/device copies, so trtexec's H2D / GPU
compute / D2H split does not apply: the whole call is host time.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnxruntime as ort

from physai.core.errors import ConfigError
from physai.core.io import write_json_atomic
from physai.deploy.devices.host import cpu_model
from physai.deploy.latency import latency_figures
from physai.deploy.precision import VariantPolicy, variant_file
from physai.report.format import save_png

DEFAULT_BATCHES = (1, 8, 64, 256)
PROFILE_JSON = "profile.json"
HISTOGRAM_PNG = "latency_histogram_b1.png"


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--batch {text!r} is not a comma-separated list of integers, e.g. --batch 1,8,64") from None
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"--batch {text!r}: every batch size must be a positive integer, e.g. --batch 1,8,64")
    return list(dict.fromkeys(batches))


def host_description(threads: int = 1) -> dict[str, Any]:
    """Which machine measured the figures: CPU model, cores, Python and onnxruntime versions."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(terse=True),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "execution_provider": "CPUExecutionProvider", "intra_op_threads": threads}


def run_timed(call: Callable[[], object], warmup: int, iterations: Optional[int] = None,
              duration_s: Optional[float] = None) -> tuple[np.ndarray, float]:
    """Per-call wall times (ns) after ``warmup`` calls, and the timed loop's total host wall time (s).

    Exactly ``iterations`` calls, or as many as fit in ``duration_s`` seconds (at least one).
    """
    if (iterations is None) == (duration_s is None):
        raise ValueError("give iterations or duration_s, not both")
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    if iterations is not None:
        samples = np.empty(iterations, dtype=np.int64)
        begin = clock()
        for i in range(iterations):
            start = clock()
            call()
            samples[i] = clock() - start
        return samples, (clock() - begin) / 1e9
    chunks, buffer, filled = [], np.empty(4096, dtype=np.int64), 0
    begin = clock()
    deadline = begin + int(duration_s * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        buffer[filled] = end - start
        filled += 1
        if filled == buffer.size:
            chunks.append(buffer)
            buffer, filled = np.empty(4096, dtype=np.int64), 0
        if end >= deadline:
            break
    chunks.append(buffer[:filled])
    return np.concatenate(chunks), (clock() - begin) / 1e9


def default_out_dir(bundle_dir: Path) -> Path:
    """Beside the run's report when the bundle sits in a run directory, else ``./physai-profile``."""
    run_dir = bundle_dir.resolve().parent
    if (run_dir / "summary.json").exists():
        return run_dir / "report" / "profile"
    return Path("physai-profile")


def profile_bundle(bundle_dir: str | Path, *, iterations: Optional[int] = None, duration_s: Optional[float] = None,
                   warmup: int = 200, batches: Sequence[int] = DEFAULT_BATCHES, threads: int = 1,
                   variant: str = "fp32", seed: int = 0, out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Measure the bundle at each batch size; write ``profile.json`` and the batch-1 histogram into ``out_dir``."""
    if iterations is None and duration_s is None:
        iterations = 1000
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations {iterations}: time at least one call (1000+ for a stable p99)")
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"--duration {duration_s}: give a positive number of seconds, e.g. --duration 3")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup}: give zero or more warm-up calls")
    if threads < 1:
        raise ConfigError(f"--threads {threads}: onnxruntime needs at least one intra-op thread")
    bundle_dir = Path(bundle_dir)
    policy = VariantPolicy(bundle_dir, variant, intra_op_threads=threads)
    rng = np.random.default_rng(seed)
    rows, batch1_samples = [], None
    for batch in batches:
        # Batch 1 is a single observation, as a robot's control loop passes it.
        obs = rng.normal(size=(policy.obs_dim,) if batch == 1 else (batch, policy.obs_dim)).astype(np.float32)
        samples, wall_s = run_timed(lambda: policy.act(obs), warmup, iterations, duration_s)
        figures = latency_figures(samples, batch=batch)
        figures["throughput_qps"] = samples.size / wall_s  # trtexec: queries over the timed loop's wall time
        figures["actions_per_s"] = figures["throughput_qps"] * batch
        figures["total_host_wall_s"] = wall_s
        rows.append(figures)
        if batch == 1:
            batch1_samples = samples
    result: dict[str, Any] = {
        "bundle": str(bundle_dir), "variant": variant, "policy_file": _variant_file(variant),
        "policy_sha256": policy.manifest["files"][_variant_file(variant)]["sha256"],
        "measured": True, "where": "this host", "host": host_description(threads),
        "settings": {"warmup_calls": warmup, "iterations": iterations, "duration_s": duration_s,
                     "batches": list(batches), "threads": threads, "seed": seed,
                     "timer": "time.perf_counter_ns around each EdgePolicy.act() call"},
        "batches": rows,
        "transfers": "onnxruntime's CPUExecutionProvider runs in host memory, so there are no H2D/D2H copies; "
                     "every figure is host time of the whole act() call",
    }
    out = Path(out_dir) if out_dir is not None else default_out_dir(bundle_dir)
    out.mkdir(parents=True, exist_ok=True)
    if batch1_samples is not None:
        host = result["host"]
        plot_latency_histogram(batch1_samples, out / HISTOGRAM_PNG,
                               f"batch-1 latency, {variant}, measured on {host['cpu']} "
                               f"({threads} thread{'s' if threads > 1 else ''})")
        result["histogram_png"] = str(out / HISTOGRAM_PNG)
    result["json"] = str(out / PROFILE_JSON)
    write_json_atomic(out / PROFILE_JSON, result)
    return result


def _variant_file(variant: str) -> str:
    return variant_file(variant)


def plot_latency_histogram(samples_ns: np.ndarray, target: str | Path, title: str = "batch-1 latency") -> Path:
    """A histogram of per-call latency (log-spaced bins, so the tail shows), with p50/p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    low, high = max(us.min(), 1e-3), max(us.max(), us.min() * 1.01 + 1e-3)
    bins = np.geomspace(low, high, 60)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.hist(us, bins=bins, color="tab:blue", alpha=0.8)
    for q, style in ((50, "-"), (99, "--")):
        value = np.percentile(us, q)
        ax.axvline(value, color="k", ls=style, lw=1, label=f"p{q} {value:.1f} µs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per call (µs, measured)")
    ax.set_ylabel("calls")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    target = Path(target)
    save_png(fig, target)
    return target


def format_trtexec(result: dict[str, Any]) -> str:
    """The performance summary in trtexec's words and order, one block per batch size."""
    host, settings = result["host"], result["settings"]
    lines = [f"=== Performance summary (measured on this host: {host['cpu']}, {host['logical_cores']} logical "
             f"cores, onnxruntime {host['onnxruntime']} {host['execution_provider']}, "
             f"{settings['threads']} intra-op thread(s); variant {result['variant']}) ==="]
    for row in result["batches"]:
        tag = f"[batch {row['batch']}]"
        lines += [
            f"{tag} Throughput: {row['throughput_qps']:.6g} qps ({row['actions_per_s']:.6g} actions/s)",
            f"{tag} Latency: min = {row['min_ms']:.6g} ms, max = {row['max_ms']:.6g} ms, mean = {row['mean_ms']:.6g} "
            f"ms, median = {row['p50_ms']:.6g} ms, percentile(90%) = {row['p90_ms']:.6g} ms, percentile(95%) = "
            f"{row['p95_ms']:.6g} ms, percentile(99%) = {row['p99_ms']:.6g} ms",
            f"{tag} Total Host Walltime: {row['total_host_wall_s']:.6g} s ({row['n']} iterations after "
            f"{settings['warmup_calls']} warm-up calls)",
        ]
    lines.append("H2D Latency / GPU Compute Time / D2H Latency: not applicable: " + result["transfers"])
    return "\n".join(lines)


def print_profile(result: dict[str, Any]) -> None:
    """A rich table of every batch size, then the trtexec-style summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"physai profile {result['bundle']} ({result['variant']}), measured on this host "
                        f"({result['host']['cpu']})")
    columns = ("batch", "n", "min ms", "mean ms", "median ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "queries/s",
               "actions/s", "host wall s")
    for column in columns:
        table.add_column(column, justify="right")
    for row in result["batches"]:
        table.add_row(str(row["batch"]), str(row["n"]),
                      *(f"{row[k]:.4g}" for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                                  "max_ms")),
                      f"{row['throughput_qps']:.0f}", f"{row['actions_per_s']:.0f}", f"{row['total_host_wall_s']:.3g}")
    console.print(table)
    console.print(format_trtexec(result), highlight=False, soft_wrap=True, markup=False)
    if result.get("histogram_png"):
        console.print(f"histogram (batch 1): {result['histogram_png']}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"figures: {result['json']}", highlight=False, soft_wrap=True, markup=False)
