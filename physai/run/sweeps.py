"""Sweeps: one record per trial, a summary when a multirun ends, and ``physai sweep-report``.

A trial of ``python train.py -m ...`` runs the pipeline in ``<sweep dir>/<job num>/`` and writes
``trial.json`` there: its overrides, status (``completed`` or ``failed``, with the error), the
objective (``summary.json`` -> ``eval.mean_return``; none when the trial failed or did not evaluate,
which optuna records as a failed trial) and the bundle path. A trial that raises never stops the
sweep. When the multirun ends, ``physai.run.hydra_callbacks.SweepSummary`` prints a table of every trial
and writes ``sweep_summary.json`` and ``sweep_summary.md`` into the sweep directory.

``physai sweep-report DIR`` groups the trials of a multirun directory by configuration (their
overrides without ``seed``) and reports, per configuration, the IQM and the mean of the evaluation
return across seeds with 95% stratified-bootstrap confidence intervals (the method of rliable,
Agarwal et al. 2021: IQM is the mean of the middle 50% of runs, percentile intervals from
resampling runs with replacement within each task), a plot of both, and the best trial's bundle.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import traceback
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from physai.core.errors import PhysaiError
from physai.core.io import read_summary, write_json_atomic, write_text_atomic
from physai.deploy.gates import GateFigures
from physai.report.format import fmt, save_png
from physai.train.evaluation import ReturnFigures

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
SUMMARY_JSON = "sweep_summary.json"
SUMMARY_MD = "sweep_summary.md"
REPORT_JSON = "sweep_report.json"
REPORT_MD = "sweep_report.md"
REPORT_PNG = "sweep_report.png"
OBJECTIVE = "eval.mean_return"
COMPLETED, FAILED, INCOMPLETE = "completed", "failed", "incomplete"


# ----- the objective ------------------------------------------------------------------------
def objective(summary: Optional[dict]) -> Optional[float]:
    """What a sweeper optimizes: the run's evaluation mean return; None when there is none.

    None, not NaN, for a failed trial: hydra-optuna-sweeper records a trial whose value is not a float
    as failed and goes on, while a NaN makes optuna 2.x raise inside the sweeper.
    """
    value = ((summary or {}).get("eval") or {}).get("mean_return")
    return _finite(value)


# ----- where a run sits in a sweep ----------------------------------------------------------
def trial_info(run_dir: Path) -> Optional[dict[str, Any]]:
    """``{"sweep_dir", "num", "overrides"}`` when ``run_dir`` is a trial of a multirun, else None.

    Asked inside a Hydra job it reads Hydra's own state; afterwards (``physai run`` on a trial
    directory) it reads the trial's ``trial.json`` or ``.hydra/hydra.yaml``.
    """
    run_dir = Path(run_dir).absolute()
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN and Path(hydra_cfg.runtime.output_dir).absolute() == run_dir:
                return {"sweep_dir": str(Path(hydra_cfg.sweep.dir).absolute()), "num": int(hydra_cfg.job.num),
                        "overrides": list(hydra_cfg.overrides.task)}
    except Exception:  # no Hydra state: fall through to the files
        pass
    record = read_trial(run_dir)
    if record and record.get("sweep_dir"):
        return {"sweep_dir": record["sweep_dir"], "num": record.get("num"), "overrides": record.get("overrides", [])}
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.exists():
        from omegaconf import OmegaConf

        try:
            saved = OmegaConf.load(hydra_yaml)
            if str(OmegaConf.select(saved, "hydra.mode")) not in ("MULTIRUN", "RunMode.MULTIRUN"):
                return None
            subdir = Path(str(OmegaConf.select(saved, "hydra.sweep.subdir")))
            sweep_dir = run_dir
            for _ in subdir.parts:
                sweep_dir = sweep_dir.parent
            return {"sweep_dir": str(sweep_dir), "num": OmegaConf.select(saved, "hydra.job.num"),
                    "overrides": list(OmegaConf.select(saved, "hydra.overrides.task") or [])}
        except Exception:  # an unreadable or unresolvable record: not a sweep we can name
            return None
    return None


def _without_seed(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"]


def configuration_of(overrides: Sequence[str]) -> str:
    """A trial's configuration: its overrides without the seed, so seeds of one setting group together."""
    kept = _without_seed(overrides)
    return " ".join(kept) if kept else "(defaults)"


def seed_of(overrides: Sequence[str], default: Any = None) -> Any:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "seed":
            try:
                return int(value)
            except ValueError:
                return value
    return default


# ----- one trial ----------------------------------------------------------------------------
def read_trial(run_dir: Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / TRIAL_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_trial(run_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / TRIAL_FILE, record)


def trial_record(run_dir: Path, *, num: Any, overrides: Sequence[str], status: str, sweep_dir: Optional[str] = None,
                 summary: Optional[dict] = None, error: Optional[BaseException | str] = None,
                 tb: Optional[str] = None, wall_s: Optional[float] = None, seed: Any = None) -> dict[str, Any]:
    """The record ``trial.json`` holds (also built by the launchers for a trial whose worker died)."""
    run_dir = Path(run_dir).absolute()
    summary = summary or {}
    evaluation: ReturnFigures | dict = summary.get("eval") or {}
    bundle = run_dir / "bundle"
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}".strip()
    gates: GateFigures | dict = summary.get("gates") or {}
    return {
        "num": num, "sweep_dir": sweep_dir, "run_dir": str(run_dir), "overrides": list(overrides),
        "configuration": configuration_of(overrides), "seed": seed if seed is not None else seed_of(overrides),
        "status": status, "error": error, "traceback": tb,
        "objective": objective(summary) if status == COMPLETED else None, "objective_key": OBJECTIVE,
        "eval": {k: evaluation.get(k) for k in ("mean_return", "ci95_low", "ci95_high", "n_episodes", "solved")}
        if evaluation else None,
        "gates_passed": gates.get("passed"),
        "bundle": str(bundle) if (bundle / "manifest.json").exists() else None,
        "wall_s": None if wall_s is None else round(wall_s, 3), "host": socket.gethostname(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_trial(cfg, run_dir: Path, runner: Callable[[Any, Path], dict]) -> dict:
    """Run one trial of a sweep: record it in ``trial.json`` whatever happens, and never raise.

    ``runner(cfg, run_dir)`` (the CLI passes ``physai.run.pipeline.run_pipeline``; this module stays free of
    the pipeline so ``physai sweep-report`` loads no trainer) runs the pipeline and returns its summary.
    Returns the summary, or ``{}`` when the trial failed (its objective is then None).
    """
    run_dir = Path(run_dir)
    info = trial_info(run_dir) or {}
    overrides = info.get("overrides", [])
    start = time.perf_counter()
    status, error, tb, summary = COMPLETED, None, None, {}
    try:
        summary = runner(cfg, run_dir) or {}
        gates = summary.get("gates")
        if gates is not None and not gates.get("passed") and bool(cfg.gate.strict):
            status, error = FAILED, "release gates failed (gate.strict=true)"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a trial's exit must not end the sweep
        status, error, tb = FAILED, exc, traceback.format_exc()
        if isinstance(exc, SystemExit):  # a CLI helper exiting: the exception it handled says why
            error = exc.__context__ if exc.__context__ is not None else f"SystemExit: exit code {exc.code}"
        log.error("trial %s failed: %s", info.get("num", "?"), error)
        try:
            summary = read_summary(run_dir)  # what the trial recorded before it failed
        except Exception:
            summary = {}
    if status == COMPLETED:
        log.info("run directory: %s", run_dir)
        if summary.get("gates") is not None:
            log.info("release gates: %s", "PASS" if summary["gates"]["passed"] else "FAIL")
    record = trial_record(run_dir, num=info.get("num"), overrides=overrides, status=status,
                          sweep_dir=info.get("sweep_dir"), summary=summary, error=error, tb=tb,
                          wall_s=time.perf_counter() - start, seed=cfg.get("seed"))
    try:
        write_trial(run_dir, record)
    except OSError as exc:
        log.error("could not write %s: %s", run_dir / TRIAL_FILE, exc)
    stop = getattr(error, "signum", None)
    if stop is not None:  # SIGTERM/SIGINT stopped training (physai.train.guards): stop the sweep, not one trial
        raise SystemExit(getattr(error, "exit_code", 128 + int(stop)))
    return summary if status == COMPLETED else {}


# ----- all trials of a sweep ----------------------------------------------------------------
def _trial_dirs(sweep_dir: Path) -> list[Path]:
    found = {p.parent for p in sweep_dir.rglob(TRIAL_FILE)}
    found |= {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    return sorted(found)


def collect_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every trial under ``sweep_dir``: its ``trial.json``, or what its ``.hydra`` and summary tell."""
    from omegaconf import OmegaConf

    trials = []
    for trial_dir in _trial_dirs(Path(sweep_dir)):
        record = read_trial(trial_dir)
        if record is None:
            overrides_file = trial_dir / ".hydra" / "overrides.yaml"
            overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.exists() else []
            summary = read_summary(trial_dir)
            status = COMPLETED if summary.get("eval") else INCOMPLETE
            num = int(trial_dir.name) if trial_dir.name.isdigit() else None
            record = trial_record(trial_dir, num=num, overrides=overrides, status=status, summary=summary,
                                  sweep_dir=str(Path(sweep_dir).absolute()))
            record["finished_at"] = None
        trials.append(record)
    trials.sort(key=lambda r: (r.get("num") is None, r.get("num") if isinstance(r.get("num"), int) else 0,
                               r["run_dir"]))
    return trials


def _finite(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _short(text: Optional[str], width: int = 120) -> str:
    if not text:
        return ""
    line = str(text).strip().splitlines()[-1] if "\n" in str(text).strip() else str(text).strip()
    return line if len(line) <= width else line[: width - 1] + "…"


def summarize_sweep(sweep_dir: Path) -> dict[str, Any]:
    """``sweep_summary.json`` and ``sweep_summary.md`` for every trial in ``sweep_dir``; returns the summary."""
    sweep_dir = Path(sweep_dir).absolute()
    trials = collect_trials(sweep_dir)
    counts = {status: sum(t["status"] == status for t in trials) for status in (COMPLETED, FAILED, INCOMPLETE)}
    scored = [t for t in trials if t["status"] == COMPLETED and t.get("objective") is not None]
    best = max(scored, key=lambda t: t["objective"]) if scored else None
    summary = {"sweep_dir": str(sweep_dir), "objective": OBJECTIVE, "n_trials": len(trials), "counts": counts,
               "best": None if best is None else {k: best.get(k) for k in ("num", "configuration", "seed", "objective",
                                                                           "run_dir", "bundle")},
               "trials": [{k: v for k, v in t.items() if k != "traceback"} for t in trials]}
    write_json_atomic(sweep_dir / SUMMARY_JSON, summary)
    write_text_atomic(sweep_dir / SUMMARY_MD, "\n".join(format_summary(summary)) + "\n")
    return summary


def split_overrides(override_lists: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """The overrides every trial shares, and each trial's remaining (swept) ones, for short tables."""
    lists = [list(o) for o in override_lists]
    common = [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []
    return common, [[o for o in overrides if o not in common] for overrides in lists]


def format_summary(summary: dict[str, Any]) -> list[str]:
    counts = summary["counts"]
    trials = summary["trials"]
    common, swept = split_overrides([t.get("overrides") or [] for t in trials])
    lines = [f"# Sweep {summary['sweep_dir']}", "",
             f"{summary['n_trials']} trial(s): {counts[COMPLETED]} completed, {counts[FAILED]} failed"
             + (f", {counts[INCOMPLETE]} incomplete" if counts.get(INCOMPLETE) else "")
             + f". Objective: `{summary['objective']}` (maximize).", ""]
    if common:
        lines += [f"Every trial: `{' '.join(common)}`", ""]
    lines += ["| # | overrides | status | eval return [95% CI] | wall s | run dir | error |",
              "|---|---|---|---|---|---|---|"]
    for t, own in zip(trials, swept):
        ev = t.get("eval") or {}
        ret = "—" if ev.get("mean_return") is None or t["status"] != COMPLETED else (
            f"{fmt(ev['mean_return'])} [{fmt(ev.get('ci95_low'))}, {fmt(ev.get('ci95_high'))}]")
        lines.append(f"| {fmt(t.get('num'))} | {' '.join(own) or '—'} | {t['status']} | "
                     f"{ret} | {fmt(t.get('wall_s'))} | {t['run_dir']} | {_short(t.get('error')).replace('|', '/')} |")
    best = summary.get("best")
    lines += ["", "Best trial: " + ("none completed" if best is None else
                                    f"#{best['num']} (seed {best['seed']}): return "
                                    f"{fmt(best['objective'])}, bundle {best['bundle']}")]
    return lines


# ----- statistics: IQM and stratified bootstrap CIs (rliable) --------------------------------
def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of runs (``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        return math.nan
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of ``samples`` (resamples x runs), vectorized."""
    x = np.sort(samples, axis=1)
    cut = int(0.25 * x.shape[1])
    return x[:, cut:x.shape[1] - cut].mean(axis=1)


def stratified_bootstrap_ci(scores: np.ndarray, statistic: str = "iqm", resamples: int = 10_000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over a (runs x tasks) score matrix.

    As rliable's ``StratifiedBootstrap``: each resample draws, for every task independently, as many
    runs as it has with replacement, and the statistic is taken over all resampled scores.
    """
    if resamples < 1:
        raise ValueError("resamples must be positive")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    runs, tasks = scores.shape
    if runs == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(resamples, runs, tasks))
    samples = np.take_along_axis(np.broadcast_to(scores, (resamples, runs, tasks)), idx, axis=1)
    flat = samples.reshape(resamples, runs * tasks)
    stats = _iqm_rows(flat) if statistic == "iqm" else flat.mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


# ----- physai sweep-report ------------------------------------------------------------------
def sweep_report(sweep_dir: Path, out_dir: Optional[Path] = None, resamples: int = 10_000,
                 seed: int = 0) -> dict[str, Any]:
    """Aggregate a multirun directory: per configuration, IQM and mean with 95% bootstrap CIs."""
    sweep_dir = Path(sweep_dir).absolute()
    if not sweep_dir.is_dir():
        raise PhysaiError(f"sweep-report: '{sweep_dir}' is not a directory; pass a multirun directory "
                          f"(multirun/DATE/TIME) made by `python train.py -m ...`")
    trials = collect_trials(sweep_dir)
    if not trials:
        raise PhysaiError(f"sweep-report: '{sweep_dir}' holds no trials (no */trial.json or */.hydra/overrides.yaml); "
                          f"pass the directory a `python train.py -m ...` sweep wrote")
    groups: "OrderedDict[str, list[dict]]" = OrderedDict()
    for t in trials:
        groups.setdefault(t.get("configuration") or configuration_of(t.get("overrides") or []), []).append(t)
    common, labels = split_overrides([_without_seed(members[0].get("overrides") or []) for members in groups.values()])
    rows = []
    for (configuration, members), label in zip(groups.items(), labels):
        ok = [t for t in members if t["status"] == COMPLETED and t.get("objective") is not None]
        scores = np.array([t["objective"] for t in ok], dtype=np.float64)
        row: dict[str, Any] = {"configuration": configuration, "label": " ".join(label) or configuration,
                               "n": int(scores.size), "n_trials": len(members),
                               "n_failed": sum(t["status"] == FAILED for t in members),
                               "seeds": [t.get("seed") for t in ok], "returns": scores.tolist()}
        if scores.size:
            iqm_ci = stratified_bootstrap_ci(scores, "iqm", resamples, seed=seed)
            mean_ci = stratified_bootstrap_ci(scores, "mean", resamples, seed=seed)
            top = max(ok, key=lambda t: t["objective"])
            row.update(iqm=iqm(scores), iqm_ci95=list(iqm_ci), mean=float(scores.mean()), mean_ci95=list(mean_ci),
                       best_trial={"num": top.get("num"), "seed": top.get("seed"), "objective": top["objective"],
                                   "run_dir": top["run_dir"], "bundle": top.get("bundle")})
        else:
            row.update(iqm=None, iqm_ci95=None, mean=None, mean_ci95=None, best_trial=None)
        rows.append(row)
    ranked = [r for r in rows if r["iqm"] is not None]
    best_config = max(ranked, key=lambda r: (r["iqm"], r["mean"])) if ranked else None
    label_of = {r["configuration"]: r["label"] for r in rows}
    scored = [t for t in trials if t["status"] == COMPLETED and t.get("objective") is not None]
    best_trial = max(scored, key=lambda t: t["objective"]) if scored else None
    out_dir = Path(out_dir).absolute() if out_dir else sweep_dir
    report = {"sweep_dir": str(sweep_dir), "objective": OBJECTIVE, "method": {
        "aggregate": "IQM (mean of the middle 50% of runs) and mean, across seeds",
        "interval": f"95% percentile stratified bootstrap over runs, {resamples} resamples (rliable)",
        "bootstrap_seed": seed},
        "n_trials": len(trials), "common_overrides": common, "configurations": rows,
        "best_configuration": None if best_config is None else best_config["configuration"],
        "best_configuration_label": None if best_config is None else best_config["label"],
        "best_trial": None if best_trial is None else {
            **{k: best_trial.get(k) for k in ("num", "configuration", "seed", "objective", "run_dir", "bundle")},
            "label": label_of.get(best_trial.get("configuration"))},
        "plot": None}
    if ranked:
        report["plot"] = str(out_dir / REPORT_PNG)
        plot_report(rows, out_dir / REPORT_PNG)
    write_json_atomic(out_dir / REPORT_JSON, report)
    write_text_atomic(out_dir / REPORT_MD, "\n".join(format_report(report)) + "\n")
    return report


def _ci_text(point: Optional[float], ci: Optional[list]) -> str:
    if point is None:
        return "—"
    return f"{fmt(point)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def format_report(report: dict[str, Any]) -> list[str]:
    lines = [f"# Sweep report: {report['sweep_dir']}", "",
             f"Objective `{report['objective']}` per configuration across seeds; "
             f"{report['method']['interval']}.", ""]
    if report.get("common_overrides"):
        lines += [f"Every trial: `{' '.join(report['common_overrides'])}`", ""]
    lines += ["| configuration | seeds | IQM [95% CI] | mean [95% CI] | failed | best trial (return) |",
              "|---|---|---|---|---|---|"]
    for r in report["configurations"]:
        best = r["best_trial"]
        lines.append(f"| {r['label']} | {r['n']}/{r['n_trials']} | {_ci_text(r['iqm'], r['iqm_ci95'])} | "
                     f"{_ci_text(r['mean'], r['mean_ci95'])} | {r['n_failed']} | "
                     + ("—" if best is None else f"#{best['num']} ({fmt(best['objective'])})") + " |")
    best = report["best_trial"]
    lines += ["", f"Best configuration by IQM: {report.get('best_configuration_label') or 'none completed'}",
              "Best trial: " + ("none completed" if best is None else
                                f"#{best['num']} ({best.get('label')}, seed {best['seed']}), return "
                                f"{fmt(best['objective'])}"),
              f"Best trial's bundle: {best['bundle'] if best else '—'}"]
    if report.get("plot"):
        lines += ["", f"![IQM and mean per configuration]({Path(report['plot']).name})"]
    return lines


def plot_report(rows: list[dict[str, Any]], target: Path) -> None:
    """rliable-style interval plot: IQM and mean per configuration with their 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["iqm"] is not None]
    labels = [r["label"] if len(r["label"]) <= 48 else r["label"][:47] + "…" for r in shown]
    height = 1.2 + 0.45 * len(shown)
    fig, axes = plt.subplots(1, 2, figsize=(10, height), dpi=110, sharey=True)
    y = np.arange(len(shown))
    for ax, key, title in ((axes[0], "iqm", "IQM"), (axes[1], "mean", "Mean")):
        for i, r in enumerate(shown):
            low, high = r[f"{key}_ci95"]
            ax.barh(i, high - low, left=low, height=0.6, alpha=0.6, color=f"C{i % 10}")
            ax.plot([r[key], r[key]], [i - 0.3, i + 0.3], color="k", lw=2)
            if key == "mean":  # every seed's return
                ax.plot(r["returns"], [i] * len(r["returns"]), "o", color="k", ms=3, alpha=0.6)
        ax.set_title(f"{title} (95% CI)", fontsize=10)
        ax.margins(x=0.05)
        ax.set_xlabel("evaluation return")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{label} (n={r['n']})" for label, r in zip(labels, shown)], fontsize=8)
    fig.tight_layout()
    save_png(fig, target)


