"""Markdown sections of the report for the device budgets (all figures modeled unless said)."""

from __future__ import annotations

from typing import Any, Mapping

from physai.reporting import fmt


def _us(ms: float | None) -> str:
    return "–" if ms is None else f"{ms * 1e3:.3g}"


def profile_lines(profile: Mapping[str, Any]) -> list[str]:
    """Host-model check, every device x power mode, cost basis and the per-node roofline table."""
    lines: list[str] = []
    validation = profile.get("host_model_validation")
    if validation:
        overheads = profile.get("host_overheads") or {}
        lines += ["### Host model check", "",
                  f"Predicted {_us(validation['predicted_ms'])} us, measured p50 {_us(validation['measured_p50_ms'])} "
                  f"us: error {100 * validation['error']:+.1f}% (target +-{100 * validation['target_abs_error']:.0f}%, "
                  f"{'met' if validation['within_target'] else 'MISSED'}). {validation['method']}."
                  + (f" Micro-benchmark: {overheads['op_us']:.3g} us per kernel, {overheads['call_us']:.3g} us per "
                     f"call." if overheads else ""), ""]
    lines += ["### Every device and power mode (modeled)", "",
              "| device | power mode | W | CPU path us | GPU path us | verdict path | actions/s | actions/J | "
              "$ per 1M actions | memory/compute-bound nodes | meets control rate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for device in profile["devices"].values():
        for name, mode in device.get("power_modes", {}).items():
            paths = mode["paths"]
            head = " **(verdict)**" if name == device.get("power_mode") else ""
            lines.append(
                f"| {device['device']} | {name}{head} | {fmt(mode['power_w'])} | {_us(paths['cpu']['latency_ms'])} | "
                f"{_us(paths['gpu']['latency_ms']) if 'gpu' in paths else '–'} | {mode['path_used']} | "
                f"{mode['actions_per_s']:.0f} | {fmt(mode['actions_per_joule'])} | "
                f"{fmt(mode['usd_per_million_actions'])} | "
                f"{mode['memory_bound_nodes']}/{mode['compute_bound_nodes']} | "
                f"{fmt(mode.get('meets_control_rate'))} |")
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
