"""A report a person reads: learning curve, evaluation, bundle, latency, device budgets, gates."""

from __future__ import annotations

from pathlib import Path

from physai.io import write_text_atomic
from physai.reporting import fmt, save_png

REQUIRES: list[str] = []
PRODUCES = ["report/report.md"]


def _smooth(values, window: int):
    import numpy as np

    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_learning_curve(rows: list[dict], target: Path, threshold: float | None) -> bool:
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([r["timesteps"] for r in rows])
    returns = np.array([r["episode_return"] for r in rows])
    window = max(1, min(20, len(returns) // 5))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.plot(steps, returns, ".", alpha=0.3, markersize=3, label="episode return")
    ax.plot(steps[window - 1:], _smooth(returns, window), lw=2, label=f"mean of {window}")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label="solved threshold")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, target)
    return True


def plot_reward_terms(rows: list[dict], target: Path) -> bool:
    """One smoothed curve per reward term's episode sum: which term drives (or fights) learning."""
    from physai.training.sb3 import TERM_PREFIX

    terms = sorted({k for r in rows for k in r if k.startswith(TERM_PREFIX)})
    if not terms:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    window = max(1, min(20, len(rows) // 5))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for term in terms:
        points = [(r["timesteps"], r[term]) for r in rows if term in r]
        steps, values = np.array(points).T
        ax.plot(steps[window - 1:], _smooth(values, window), lw=1.5, label=term[len(TERM_PREFIX):])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode sum (weighted)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, target)
    return True


def _variant_lines(variants: dict) -> list[str]:
    """Reduced-precision variants beside the FP32 graph: parity and evaluation-return change (physai.precision)."""
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


def _histogram_lines(ctx, profile: dict) -> list[str]:
    """The batch-1 latency histogram, when the profile stage wrote one (``histogram_png``, run-relative)."""
    histogram = profile.get("histogram_png")
    if not histogram or not ctx.path(histogram).exists():
        return []
    import os

    link = os.path.relpath(ctx.path(histogram), ctx.path("report"))
    return ["", f"![batch-1 latency histogram (measured)]({link})"]


def run(cfg, ctx) -> dict:
    summary = ctx.summary()
    report_dir = ctx.path("report")
    lines = [f"# physai run: {cfg.env.id} / {cfg.algo.name} / seed {cfg.seed}", ""]
    train = summary.get("train")
    if train:
        lines += [f"Trained {train['timesteps']} steps with {train['n_envs']} env(s).", ""]
    from physai.training.sb3 import CURVE_FILE, read_curve

    rows = read_curve(ctx.path(CURVE_FILE))
    curve_png = report_dir / "learning_curve.png"
    if plot_learning_curve(rows, curve_png, (summary.get("eval") or {}).get("solved_threshold")):
        lines += ["![learning curve](learning_curve.png)", ""]
        ctx.tracker.log_image("report/learning_curve", curve_png)
    terms_png = report_dir / "reward_terms.png"
    if plot_reward_terms(rows, terms_png):
        lines += ["Reward terms (episode sums):", "", "![reward terms](reward_terms.png)", ""]
        ctx.tracker.log_image("report/reward_terms", terms_png)
    lines += _video_lines("An evaluation episode", summary.get("eval"), "video")
    lines += _video_lines("The world model's dream beside the simulator", summary.get("synthesize"), "dream_video")
    evaluation = summary.get("eval")
    if evaluation:
        lines += ["## Evaluation (deterministic, fresh seeds)", "",
                  "| policy | mean return | 95% CI | n | solved threshold | solved |", "|---|---|---|---|---|---|",
                  f"| trained (SB3) | {fmt(evaluation['mean_return'])} | [{fmt(evaluation['ci95_low'])}, "
                  f"{fmt(evaluation['ci95_high'])}] | {evaluation['n_episodes']} | "
                  f"{fmt(evaluation['solved_threshold'])} | {fmt(evaluation['solved'])} |"]
        bundle_eval = (summary.get("bundle") or {}).get("eval")
        if bundle_eval:
            lines.append(f"| bundle (ONNX) | {fmt(bundle_eval['mean_return'])} | [{fmt(bundle_eval['ci95_low'])}, "
                         f"{fmt(bundle_eval['ci95_high'])}] | {bundle_eval['n_episodes']} | "
                         f"{fmt(bundle_eval['solved_threshold'])} | {fmt(bundle_eval['solved'])} |")
        lines.append("")
    bundle = summary.get("bundle")
    if bundle:
        lines += ["## Bundle", "", f"`bundle/policy.onnx` sha256 `{bundle['policy_sha256']}`, "
                  f"{bundle['policy_bytes']} bytes, control rate {fmt(bundle['control_rate_hz'])} Hz; parity with "
                  f"SB3 on {bundle['parity']['samples']} random observations: max abs error "
                  f"{bundle['parity']['max_abs_error']:.2e}.", ""]
        lines += _variant_lines(bundle.get("variants") or {})
    profile = summary.get("profile")
    if profile:
        host = profile["host"]
        lines += ["## Latency at batch 1", "", "Measured on this host (edge runtime, "
                  f"{host['n']} timed calls after {host['warmup']} warm-up):", "",
                  "| min | mean | p50 | p90 | p95 | p99 | max (ms) | actions/s |", "|---|---|---|---|---|---|---|---|",
                  "| " + " | ".join(fmt(host[k]) for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms",
                                                            "p99_ms", "max_ms")) + f" | {host['actions_per_s']:.0f} |",
                  *_histogram_lines(ctx, profile),
                  "", "Modeled (roofline + per-kernel overhead from published specs; not measured):", "",
                  "| target | path | latency ms | actions/s | actions/J | $ per 1M actions | meets control rate | source |",
                  "|---|---|---|---|---|---|---|---|"]
        from physai.devices.report import assumption_footnotes, path_mark, profile_lines

        for device in profile["devices"].values():
            mark = path_mark(device.get("paths") or {}, device["path_used"])
            lines.append(f"| {device['device']} | {device['path_used']} | {fmt(device['latency_ms'])}{mark} | "
                         f"{device['actions_per_s']:.0f}{mark} | {fmt(device['actions_per_joule'])}{mark} | "
                         f"{fmt(device['usd_per_million_actions'])}{mark} | "
                         f"{fmt(device.get('meets_control_rate'))}{mark} | {device['source']} |")
        lines += ["", *assumption_footnotes(profile["devices"]), ""]

        lines += profile_lines(profile)
    if summary.get("delay_eval"):
        from physai.delay_eval import report_lines

        names = {key: d["device"] for key, d in (profile or {}).get("devices", {}).items()}
        lines += report_lines(summary["delay_eval"], names)
    gates = summary.get("gates")
    if gates:
        lines += [f"## Release gates: {'PASS' if gates['passed'] else 'FAIL'}", "",
                  "| gate | value | threshold | unit | result | why |", "|---|---|---|---|---|---|"]
        from physai.delay_eval import gate_result

        for gate in gates["gates"]:
            tag = " (modeled)" if gate.get("modeled") else ""
            why = gate.get("detail", "").replace("|", "\\|")  # a literal | would split the Markdown cell
            lines.append(f"| {gate['name']}{tag} | {fmt(gate['value'])} | {fmt(gate['threshold'])} | "
                         f"{gate['unit']} | {gate_result(gate)} | {why} |")
        lines.append("")
    write_text_atomic(report_dir / "report.md", "\n".join(lines))
    figures = {"path": "report/report.md", "learning_curve": "report/learning_curve.png" if curve_png.exists() else None}
    ctx.record("report", figures)
    return figures


def _video_lines(title: str, section, key: str) -> list[str]:
    """A link to the stage's video, or the reason it has none (no display, switched off, ...)."""
    if not section or key not in section:
        return []
    video = section.get(key)
    if video:
        return [f"{title}: [{Path(video).name}]({Path(video).name})", ""]
    return [f"{title}: no video ({section.get(key + '_missing') or 'reason not recorded'}).", ""]
