"""Markdown sections of the report for the device budgets (all figures modeled unless said)."""

from __future__ import annotations

from typing import Any, Mapping

from physai.report.format import fmt


GPU_MARK = "†"  # the figure rests on assumed GPU kernel-launch and host-device transfer costs
CPU_MARK = "‡"  # the figure rests on the device file's assumed per-kernel and per-call CPU overheads


def _us(ms: float | None) -> str:
    return "–" if ms is None else f"{ms * 1e3:.3g}"


def path_mark(paths: Mapping[str, Any], name: str) -> str:
    """The mark of a path whose latency rests on constants nobody measured ("" when measured or unknown)."""
    if not (paths.get(name) or {}).get("assumed"):
        return ""
    return GPU_MARK if name == "gpu" else CPU_MARK


def assumption_footnotes(devices: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The footnotes for the marks a device table used: which constants, their values, where they live."""
    gpu, cpu = [], []
    for key, device in devices.items():
        paths = device.get("paths") or {}
        if path_mark(paths, "gpu"):
            over = device.get("gpu_overheads") or {}
            gpu.append(f"{device['device']} {fmt(over.get('kernel_launch_us'))} / {fmt(over.get('transfer_us'))} us")
        if path_mark(paths, "cpu"):
            over = device.get("cpu_overheads") or {}
            cpu.append(f"{device['device']} {fmt(over.get('op_us'))} / {fmt(over.get('call_us'))} us")
    lines = []
    if gpu:
        lines.append(f"{GPU_MARK} rests on assumed GPU constants, not measured: kernel launch / host-device transfer "
                     f"per call (`gpu_kernel_launch_us` / `gpu_transfer_overhead_us` in configs/device/<target>.yaml; "
                     f"set `gpu_overheads_measured` once calibrated): " + "; ".join(gpu) + ".")
    if cpu:
        lines.append(f"{CPU_MARK} rests on the device file's assumed CPU overheads per kernel / per call "
                     f"(`cpu_op_overhead_us` / `runtime_call_overhead_us`; the host's are micro-benchmarked): "
                     + "; ".join(cpu) + ".")
    if lines:
        lines.append("A figure of the verdict path (actions/s, actions/J, $ per 1M actions, meets control rate) "
                     "carries its path's mark.")
    return lines


def profile_lines(profile: Mapping[str, Any]) -> list[str]:
    """Host-model check, every device x power mode, cost basis and the per-node roofline table."""
    lines: list[str] = []
    validation = profile.get("host_model_validation")
    if validation:
        overheads = profile.get("host_overheads") or {}
        host_facts = (profile["devices"].get(validation["device"]) or {}).get("host_facts")
        lines += ["### Host model check", "",
                  f"Predicted {_us(validation['predicted_ms'])} us, measured p50 {_us(validation['measured_p50_ms'])} "
                  f"us: error {100 * validation['error']:+.1f}% (target +-{100 * validation['target_abs_error']:.0f}%, "
                  f"{'met' if validation['within_target'] else 'MISSED'}). {validation['method']}."
                  + (f" Micro-benchmark: {overheads['op_us']:.3g} us per kernel, {overheads['call_us']:.3g} us per "
                     f"call." if overheads else "")
                  + (f" Host figures {host_facts['source']}." if host_facts else ""), ""]
    lines += ["### Every device and power mode (modeled)", "",
              "| device | power mode | W | CPU path us | GPU path us | verdict path | actions/s | actions/J | "
              "$ per 1M actions | memory/compute-bound nodes | meets control rate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for device in profile["devices"].values():
        for name, mode in device.get("power_modes", {}).items():
            paths = mode["paths"]
            head = " **(verdict)**" if name == device.get("power_mode") else ""
            used = path_mark(paths, mode["path_used"])
            lines.append(
                f"| {device['device']} | {name}{head} | {fmt(mode['power_w'])} | "
                f"{_us(paths['cpu']['latency_ms'])}{path_mark(paths, 'cpu')} | "
                f"{_us(paths['gpu']['latency_ms']) + path_mark(paths, 'gpu') if 'gpu' in paths else '–'} | "
                f"{mode['path_used']} | {mode['actions_per_s']:.0f}{used} | {fmt(mode['actions_per_joule'])}{used} | "
                f"{fmt(mode['usd_per_million_actions'])}{used} | "
                f"{mode['memory_bound_nodes']}/{mode['compute_bound_nodes']} | "
                f"{fmt(mode.get('meets_control_rate'))}{used} |")
    footnotes = assumption_footnotes(profile["devices"])
    if footnotes:
        lines += [""] + footnotes
    lines += ["", "Cost basis and unverified figures:", ""]
    for device in profile["devices"].values():
        peaks = ", ".join(f"{k} {v:g}" for k, v in (device.get("published_gpu_peaks_tflops") or {}).items())
        lines.append(f"- **{device['device']}**: {device.get('cost_basis') or 'no price'}"
                     + (f"; GPU peaks (TFLOPS/TOPS): {peaks}, modeled at {device.get('gpu_peak_basis')}"
                        if peaks else "")
                     + (f"; {device['notes']}" if device.get("notes") else ""))
    table = profile.get("node_table")
    if table:
        device = profile["devices"][table["device"]]
        has_gpu = any("gpu_bound" in row for row in table["rows"])
        lines += ["", f"### Per-node roofline on {device['device']} ({table['power_mode']}, modeled)", "",
                  "| node | op | FLOPs | bytes | FLOP/byte | CPU kernel | CPU bound |"
                  + (" GPU kernel | GPU bound |" if has_gpu else ""),
                  "|---|---|---|---|---|---|---|" + ("---|---|" if has_gpu else "")]
        for row in table["rows"]:
            lines.append(f"| {row['name']} | {row['op_type']} | {row['flops']:.0f} | {row['bytes']:.0f} | "
                         f"{fmt(row['intensity_flop_per_byte'], 3)} | {row['cpu_kernel']} | {row['cpu_bound']} |"
                         + (f" {row['gpu_kernel']} | {row['gpu_bound']} |" if has_gpu else ""))
        kernels = profile.get("kernels") or {}
        if kernels:
            lines += ["", f"{kernels['graph_nodes']} graph nodes; CPU kernels modeled {kernels['cpu_modeled']}, "
                          f"run by onnxruntime {kernels['cpu_onnxruntime']}."]
    lines.append("")
    return lines
