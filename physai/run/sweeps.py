"""Sweeps: one record per trial, a summary when a multirun ends, and ``physai sweep-report``.

A trial of ``python train.py -m ...`` runs the pipeline in ``<sweep dir>/<job num>/`` and writes
``trial.json`` there: its overrides, status (``completed``, ``failed`` with the error, ``pruned`` by an
optuna sweep's pruner with its last evaluation and the stages that did not run, or ``interrupted``: the
sweep was killed while it ran and a resumed sweep reran it), the objective (``summary.json`` ->
``eval.mean_return``; none unless completed) and the bundle path. A trial that raises never stops the
sweep. When the multirun ends, ``physai.run.hydra_callbacks.SweepSummary`` prints a table of every trial
and writes ``sweep_summary.json`` and ``sweep_summary.md`` into the sweep directory.

``physai sweep-report DIR`` groups the trials of a multirun directory by configuration (their
overrides without ``seed`` and the ``sweep.*`` keys an optuna sweep sets per trial) and reports, per
configuration, the IQM and the mean of the evaluation return across seeds with 95% stratified-bootstrap
confidence intervals (the method of rliable, Agarwal et al. 2021: IQM is the mean of the middle 50% of
runs, percentile intervals from resampling runs with replacement within each task), a plot of both, the
best trial's bundle, the best configuration as a preset file, and for an optuna sweep the study's
parameter importances.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import traceback
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from physai.config.compose import CONFIG_FILE
from physai.core.errors import ExistingRunError, PhysaiError
from physai.core.io import read_summary, write_json_atomic, write_text_atomic
from physai.deploy.gates import GateFigures
from physai.report.format import fmt, save_png
from physai.train.evaluation import ReturnFigures
from physai.train.study import TrialPruned, close_storage, open_storage

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
SUMMARY_JSON = "sweep_summary.json"
SUMMARY_MD = "sweep_summary.md"
REPORT_JSON = "sweep_report.json"
REPORT_MD = "sweep_report.md"
REPORT_PNG = "sweep_report.png"
STUDY_FILE = "optuna_study.json"   # an optuna sweep's record: study name, storage, sampler, pruner, budget
PRESET_FILE = "best_preset.yaml"
OBJECTIVE = "eval.mean_return"
COMPLETED, FAILED, PRUNED, INTERRUPTED, INCOMPLETE = "completed", "failed", "pruned", "interrupted", "incomplete"
STATUSES = (COMPLETED, FAILED, PRUNED, INTERRUPTED, INCOMPLETE)
FINAL_STATUSES = (COMPLETED, FAILED, PRUNED)
# Overrides that say where a run sits in a sweep, not what it tries: left out of its configuration.
TRIAL_KEYS = ("seed", "sweep")


# ----- the objective ------------------------------------------------------------------------
def objective(summary: Optional[dict]) -> Optional[float]:
    """What a sweeper optimizes: the run's evaluation mean return; None when there is none (a failed trial)."""
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


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _without_seed(overrides: Sequence[str]) -> list[str]:
    """The overrides that make a configuration: without the seed and the optuna trial's ``sweep.*`` keys."""
    return [o for o in overrides if _override_key(o).split(".")[0] not in TRIAL_KEYS]


def optuna_trial_of(overrides: Sequence[str]) -> Optional[int]:
    """The optuna trial number a run belongs to (``sweep.trial=N``, set by hydra/sweeper=physai_optuna)."""
    for override in overrides:
        value = override.partition("=")[2]
        if _override_key(override) == "sweep.trial" and value.isdigit():
            return int(value)
    return None


def configuration_of(overrides: Sequence[str]) -> str:
    """A trial's configuration: its overrides without the seed, so seeds of one setting group together."""
    kept = _without_seed(overrides)
    return " ".join(kept) if kept else "(defaults)"


def seed_of(overrides: Sequence[str], default: Any = None) -> Any:
    for override in overrides:
        value = override.partition("=")[2]
        if _override_key(override) == "seed":
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
                 tb: Optional[str] = None, wall_s: Optional[float] = None, seed: Any = None,
                 pruned: Optional[dict] = None) -> dict[str, Any]:
    """The record ``trial.json`` holds (also built by the launchers for a trial whose worker died).

    ``pruned``: for a pruned trial, the step, its last evaluation and the stages that did not run."""
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
        "optuna_trial": optuna_trial_of(overrides), "status": status, "error": error, "traceback": tb,
        "pruned": pruned,
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
    pruned = None
    try:
        summary = runner(cfg, run_dir) or {}
        gates = summary.get("gates")
        if gates is not None and not gates.get("passed") and bool(cfg.gate.strict):
            status, error = FAILED, "release gates failed (gate.strict=true)"
    except KeyboardInterrupt:
        raise
    except TrialPruned as exc:  # stopped by the sweep's pruner: not a failure, and no objective
        stages = list(cfg.pipeline.stages)
        not_run = stages[stages.index("train") + 1:] if "train" in stages else []
        status, pruned = PRUNED, {"step": exc.step, "last_evaluation": exc.evaluation, "stages_not_run": not_run}
        log.info("trial %s pruned at step %d; stages not run: %s", info.get("num", "?"), exc.step, not_run)
        summary = read_summary(run_dir)
    except ExistingRunError as exc:
        existing = read_trial(run_dir)
        if (existing is not None and existing.get("configuration") == configuration_of(overrides)
                and existing.get("seed") == cfg.get("seed")):
            # The same trial ran here before (the sweep's command repeated): it and its record stand.
            log.warning("trial %s: %s; the run there keeps its record (%s)", info.get("num", "?"), exc,
                        existing.get("status"))
            return read_summary(run_dir) if existing.get("status") == COMPLETED else {}
        status, error, tb = FAILED, exc, traceback.format_exc()
        log.error("trial %s failed: %s", info.get("num", "?"), error)
        summary = read_summary(run_dir)
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
                          wall_s=time.perf_counter() - start, seed=cfg.get("seed"), pruned=pruned)
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
    counts = {status: sum(t["status"] == status for t in trials) for status in STATUSES}
    scored = [t for t in trials if t["status"] == COMPLETED and t.get("objective") is not None]
    best = max(scored, key=lambda t: t["objective"]) if scored else None
    summary = {"sweep_dir": str(sweep_dir), "objective": OBJECTIVE, "n_trials": len(trials), "counts": counts,
               "best": None if best is None else {k: best.get(k) for k in ("num", "configuration", "seed", "objective",
                                                                           "run_dir", "bundle")},
               "trials": [{k: v for k, v in t.items() if k != "traceback"} for t in trials]}
    write_json_atomic(sweep_dir / SUMMARY_JSON, summary)
    write_text_atomic(sweep_dir / SUMMARY_MD, "\n".join(format_summary(summary)) + "\n")
    return summary


def _shown(trial: dict[str, Any]) -> list[str]:
    """A trial's overrides as tables show them: the seed, not the ``sweep.*`` bookkeeping."""
    return [o for o in trial.get("overrides") or [] if _override_key(o).split(".")[0] != "sweep"]


def split_overrides(override_lists: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """The overrides every trial shares, and each trial's remaining (swept) ones, for short tables."""
    lists = [list(o) for o in override_lists]
    common = [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []
    return common, [[o for o in overrides if o not in common] for overrides in lists]


def format_summary(summary: dict[str, Any]) -> list[str]:
    counts = summary["counts"]
    trials = summary["trials"]
    common, swept = split_overrides([_shown(t) for t in trials])
    lines = [f"# Sweep {summary['sweep_dir']}", "",
             f"{summary['n_trials']} trial(s): {counts[COMPLETED]} completed, {counts[FAILED]} failed"
             + "".join(f", {counts[s]} {s}" for s in (PRUNED, INTERRUPTED, INCOMPLETE) if counts.get(s))
             + f". Objective: `{summary['objective']}` (maximize).", ""]
    if common:
        lines += [f"Every trial: `{' '.join(common)}`", ""]
    lines += ["| # | overrides | status | eval return [95% CI] | wall s | run dir | error |",
              "|---|---|---|---|---|---|---|"]
    for t, own in zip(trials, swept):
        ev = t.get("eval") or {}
        ret = "—" if ev.get("mean_return") is None or t["status"] != COMPLETED else (
            f"{fmt(ev['mean_return'])} [{fmt(ev.get('ci95_low'))}, {fmt(ev.get('ci95_high'))}]")
        last = (t.get("pruned") or {}).get("last_evaluation")
        if t["status"] == PRUNED and last:
            ret = f"pruned at {t['pruned']['step']}: {fmt(last['mean_return'])}"
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
                 seed: int = 0, preset_name: Optional[str] = None) -> dict[str, Any]:
    """Aggregate a multirun directory: per configuration, IQM and mean with 95% bootstrap CIs; the best
    configuration as a preset file (also installed as ``configs/preset/<preset_name>.yaml`` when named);
    for an optuna sweep, the study's parameter importances."""
    if preset_name is not None:
        preset_target(preset_name)  # a bad or taken name fails before anything is computed
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
        "plot": None, "importances": study_importances(sweep_dir), "preset": None}
    if ranked:
        report["plot"] = str(out_dir / REPORT_PNG)
        plot_report(rows, out_dir / REPORT_PNG)
    if best_config is not None:
        report["preset"] = write_best_preset(best_config, trials, out_dir / PRESET_FILE, preset_name)
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
    importances = report.get("importances")
    if importances:
        lines += ["", f"## Parameter importances ({importances['method']})", ""]
        if importances.get("importances"):
            lines += ["| parameter | importance |", "|---|---|"]
            lines += [f"| {name} | {value:.3f} |" for name, value in importances["importances"].items()]
        else:
            lines.append(f"Not computed: {importances.get('unavailable')}")
        lines += ["", "optuna trials: " + ", ".join(f"{n} {state}" for state, n in importances["trials"].items())]
    preset = report.get("preset")
    if preset:
        lines += ["", f"Best configuration as a preset: {preset['file']}"]
        if preset.get("installed"):
            lines.append(f"Installed as {preset['installed']}: `{preset['command']}`")
        else:
            lines.append("Install it with `physai sweep-report DIR --preset NAME` (configs/preset/NAME.yaml), "
                         "then train with `preset=NAME`")
    if report.get("plot"):
        lines += ["", f"![IQM and mean per configuration]({Path(report['plot']).name})"]
    return lines


# ----- an optuna sweep's study: importances, resume -------------------------------------------
def read_study_record(sweep_dir: Path) -> Optional[dict[str, Any]]:
    path = Path(sweep_dir) / STUDY_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


@contextmanager
def loaded_study(sweep_dir: Path, record: dict[str, Any]) -> Iterator[Any]:
    """The optuna study an ``optuna_study.json`` names (a journal file beside it, or its database); a database
    storage's connections are given back on leaving."""
    import optuna

    storage = str(record["storage"])
    opened = open_storage(storage if "://" in storage else str(Path(sweep_dir) / storage))
    try:
        yield optuna.load_study(study_name=record["study_name"], storage=opened)
    finally:
        close_storage(opened)


def study_importances(sweep_dir: Path) -> Optional[dict[str, Any]]:
    """optuna's PED-ANOVA importances of the study's parameters (its default fANOVA would need scikit-learn);
    None when the directory is no optuna sweep."""
    record = read_study_record(sweep_dir)
    if record is None:
        return None
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    with loaded_study(sweep_dir, record) as study:
        trials = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING,
                                TrialState.WAITING)}
        result: dict[str, Any] = {"method": "optuna PED-ANOVA over the completed trials",
                                  "study": record["study_name"], "trials": trials, "importances": None,
                                  "unavailable": None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks PED-ANOVA experimental
                importances = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
            result["importances"] = {name: float(value) for name, value in importances.items()}
        except (ValueError, RuntimeError, AssertionError) as exc:  # too few completed trials, a one-point space
            result["unavailable"] = f"{type(exc).__name__}: {exc}"
    return result


def resume_arguments(sweep_dir: Path) -> list[str]:
    """``train.py`` arguments that resume the optuna sweep in ``sweep_dir``: its own command line, in its directory."""
    sweep_dir = Path(sweep_dir).absolute()
    fix = ("pass the directory of a `python train.py -m ... hydra/sweeper=physai_optuna` sweep "
           "(multirun/DATE/TIME); a sweep on the basic sweeper has no study to resume, so rerun its command")
    if not sweep_dir.is_dir():
        raise PhysaiError(f"sweep resume: '{sweep_dir}' is not a directory; {fix}")
    if read_study_record(sweep_dir) is None:
        raise PhysaiError(f"sweep resume: '{sweep_dir}' holds no optuna study ({STUDY_FILE} is missing or unreadable); "
                          f"{fix}")
    saved_path = sweep_dir / "multirun.yaml"
    if not saved_path.is_file():
        raise PhysaiError(f"sweep resume: '{sweep_dir}' has a study but no multirun.yaml, so its command line is "
                          f"unknown; rerun the original command with hydra.sweep.dir={sweep_dir}")
    from omegaconf import OmegaConf

    saved = OmegaConf.load(saved_path)
    hydra_overrides = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.hydra") or []
                       if not str(o).startswith(("hydra.sweep.dir=", "hydra.mode="))]
    task_overrides = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.task") or []]
    return ["-m", *hydra_overrides, *task_overrides, f"hydra.sweep.dir={sweep_dir}"]


# ----- the best configuration as a preset ------------------------------------------------------
def preset_target(name: str) -> Path:
    """``configs/preset/<name>.yaml`` of the installed physai configs, refused if the name is bad or taken."""
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise PhysaiError(f"--preset {name!r}: use letters, digits, '_' or '-' (it becomes preset={name})")
    folder = Path(str(files("physai.configs") / "preset"))
    target = folder / f"{name}.yaml"
    if target.exists():
        raise PhysaiError(f"--preset {name}: {target} already exists; choose another name (or remove that file)")
    return target


def write_best_preset(best: dict[str, Any], trials: list[dict[str, Any]], path: Path,
                      install_as: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The best configuration as a ``# @package _global_`` preset: the best trial's whole resolved ``algo``
    section (the preset it ran on included, since ``preset=NAME`` replaces that one) with ``tuned_for`` set,
    plus any other key the configuration overrides. Group choices (``env=...``) go into the printed command."""
    from omegaconf import OmegaConf

    member = next((t for t in trials if t.get("num") == (best.get("best_trial") or {}).get("num")), None)
    config_path = Path(member["run_dir"]) / CONFIG_FILE if member else None
    if config_path is None or not config_path.is_file():
        return None
    resolved = OmegaConf.load(config_path)
    algo = OmegaConf.to_container(resolved.algo, resolve=True)
    for key in ("_target_", "name"):
        algo.pop(key, None)
    algo["tuned_for"] = algo.get("tuned_for") or str(resolved.env.id)
    others = OmegaConf.create({})
    # Group choices for the command, but not experiment=...: Hydra applies it after presets, so it would override
    # the tuned values (its algo settings are in the preset already).
    groups = [o.lstrip("+~") for o in _without_seed(member.get("overrides") or [])
              if "." not in _override_key(o) and not _override_key(o).startswith(("experiment", "preset"))]
    for override in best["label"].split():  # the swept keys outside algo (the sweep's fixed ones are not the config)
        key = _override_key(override)
        if "." in key and not key.startswith(("algo.", "hydra.")):
            OmegaConf.update(others, key, OmegaConf.select(resolved, key), force_add=True)
    preset = {"algo": algo, **OmegaConf.to_container(others, resolve=True)}
    header = (f"# @package _global_\n# Best configuration of the sweep {path.parent.name} by IQM of the evaluation return "
              f"({best['label']}): {fmt(best['iqm'])} over {best['n']} seed(s).\n"
              f"# Written by physai sweep-report; use it with preset=<name> once it is in configs/preset/. It holds the\n"
              f"# whole algo section the trial trained with; leave experiment=... out, which would override it.\n")
    text = header + OmegaConf.to_yaml(OmegaConf.create(preset))
    write_text_atomic(path, text)
    record: dict[str, Any] = {"file": str(path), "groups": groups, "installed": None, "command": None}
    if install_as is not None:
        target = preset_target(install_as)
        write_text_atomic(target, text)
        record["installed"] = str(target)
        record["command"] = " ".join(["python train.py", *groups, f"preset={install_as}"])
    return record


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


