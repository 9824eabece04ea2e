"""Pruned vs unpruned optuna search: env steps spent, and how good the best configuration each finds is.

Two arms run the same 24-trial PPO search with ``hydra/sweeper=physai_optuna`` on cartpole_balance (its
shipped preset: 100,000 steps, a trial solves the task in well under a minute), through ``train.py -m``
exactly as a user runs it, with the same sampler (TPE, sampler seed 0) and training seed 0:

* ``unpruned``: ``hydra.sweeper.pruner=none``, every trial trains its whole budget;
* ``pruned``: ``hydra.sweeper.pruner=median`` with optuna's defaults (5 startup trials, no warm-up steps).

**One rule for both.** Every trial evaluates itself every ``--interval`` env steps on ``--episodes``
deterministic episodes (the unpruned arm too, so both pay the same evaluation cost; only the pruned arm
acts on them) and ends with the evaluate stage's 10 episodes, whose mean return is the objective. An arm's
cost is the env steps its trials trained (``summary.json`` -> ``train.timesteps``; a pruned trial stops
at the rollout where it was judged). Each arm's best configuration (``physai sweep-report``: best by IQM)
is then trained again on 5 fresh seeds (100-104, never used in the search) and evaluated the same way;
the targets: pruned steps <= 60% of unpruned steps, and the pruned best's mean re-evaluated return within
the 95% CI (Student t, n = 5) of the unpruned best's.

The two arms, then the two re-evaluations, run as two processes at a time (one core each): the figures are
env steps and returns, which sharing the machine does not change.

    .venv/bin/python benchmarks/sweep_pruning.py [--trials 24] [--out benchmarks/results]

writes ``sweep_pruning.json`` and ``sweep_pruning.png`` (best objective so far against env steps spent,
for both arms; re-evaluated returns with their CIs) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from physai.core.io import read_summary, write_json_atomic
from physai.core.stats import mean_ci95
from physai.deploy.devices.host import cpu_model
from physai.report.format import save_png
from physai.run import sweeps

REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = "sweep_pruning.json"
PLOT_FILE = "sweep_pruning.png"
ARMS = {"unpruned": ["hydra.sweeper.pruner=none"], "pruned": ["hydra.sweeper.pruner=median"]}
COMMON = ["env=cartpole_balance", "algo=ppo", "pipeline.stages=[train,evaluate]", "tracking=none",
          "evaluate.video=false"]


def _train(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                            env=env)


def _wait(processes: dict[str, subprocess.Popen], dirs: dict[str, Path], totals: dict[str, int], title: str) -> None:
    """Wait for every process, with a bar per one counting its finished runs (``trial.json`` files)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        bars = {name: progress.add_task(f"{title} {name}", total=totals[name]) for name in processes}
        while any(p.poll() is None for p in processes.values()):
            for name, bar in bars.items():
                progress.update(bar, completed=len(list(dirs[name].glob("*/trial.json"))))
            time.sleep(2)
        for name, bar in bars.items():
            progress.update(bar, completed=len(list(dirs[name].glob("*/trial.json"))))
    failed = {name: p.returncode for name, p in processes.items() if p.returncode != 0}
    if failed:
        raise SystemExit(f"{title}: train.py exited with {failed}; see the logs beside the sweep directories")


def arm_record(sweep_dir: Path) -> dict[str, Any]:
    """Per trial: status, objective, env steps trained, evaluations; the arm's totals and search curve."""
    trials = []
    for record in sweeps.collect_trials(sweep_dir):
        train = read_summary(Path(record["run_dir"])).get("train") or {}
        trials.append({"num": record["num"], "optuna_trial": record.get("optuna_trial"), "status": record["status"],
                       "objective": record.get("objective"), "env_steps": int(train.get("timesteps") or 0),
                       "pruned_at_step": train.get("pruned_at_step"), "configuration": record["configuration"],
                       "evaluations": [(e["step"], e["mean_return"]) for e in train.get("evaluations") or []]})
    curve, spent, best = [], 0, None
    for trial in trials:
        spent += trial["env_steps"]
        if trial["objective"] is not None:
            best = trial["objective"] if best is None else max(best, trial["objective"])
        curve.append({"env_steps": spent, "best_objective": best})
    return {"sweep_dir": str(sweep_dir.relative_to(REPO)) if sweep_dir.is_relative_to(REPO) else sweep_dir.name,
            "n_trials": len(trials), "env_steps": spent,
            "counts": {s: sum(t["status"] == s for t in trials) for s in sweeps.STATUSES},
            "best_objective": best, "curve": curve, "trials": trials}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--interval", type=int, default=10_000, help="env steps between evaluations during training")
    parser.add_argument("--episodes", type=int, default=3, help="episodes of each evaluation during training")
    parser.add_argument("--reeval-seeds", default="100,101,102,103,104")
    parser.add_argument("--work", default="benchmarks/work/sweep_pruning", help="where the sweeps run (relative "
                                                                               "to the repository)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run (e.g. algo.total_timesteps=4096 for a quick check)")
    args = parser.parse_args(argv)
    work, out = REPO / args.work, REPO / args.out
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.reeval_seeds.split(",")]
    search = [*COMMON, *args.set, f"evaluate.interval_steps={args.interval}", f"evaluate.interval_episodes={args.episodes}",
              "hydra/sweeper=physai_optuna", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.sampler=tpe",
              "hydra.sweeper.sampler_seed=0", "seed=0"]
    commands: dict[str, list[str]] = {}
    processes, dirs = {}, {}
    started = time.perf_counter()
    for arm, extra in ARMS.items():
        dirs[arm] = work / arm
        commands[arm] = ["-m", *search, *extra, f"hydra.sweep.dir={args.work}/{arm}"]
        processes[arm] = _train(commands[arm], work / f"{arm}.log")
    _wait(processes, dirs, {arm: args.trials for arm in ARMS}, "search")
    search_s = time.perf_counter() - started
    records = {arm: arm_record(dirs[arm]) for arm in ARMS}
    reeval, processes, reeval_dirs = {}, {}, {}
    for arm in ARMS:
        report = sweeps.sweep_report(dirs[arm], resamples=2000)
        records[arm]["best_configuration"] = report["best_configuration"]
        records[arm]["importances"] = (report.get("importances") or {}).get("importances")
        # The configuration: the search's own overrides (env, budget, ...) and the parameters optuna chose.
        best_overrides = [o for o in report["best_configuration"].split() if not o.startswith("evaluate.interval_")]
        reeval_dirs[arm] = work / f"{arm}_reeval"
        commands[f"{arm}_reeval"] = ["-m", *best_overrides, f"seed={','.join(map(str, seeds))}",
                                     f"hydra.sweep.dir={args.work}/{arm}_reeval"]
        processes[arm] = _train(commands[f"{arm}_reeval"], work / f"{arm}_reeval.log")
    _wait(processes, reeval_dirs, {arm: len(seeds) for arm in ARMS}, "re-evaluate")
    for arm in ARMS:
        returns = [t["objective"] for t in sweeps.collect_trials(reeval_dirs[arm])]
        reeval[arm] = {"seeds": seeds, "returns": returns, **mean_ci95([r for r in returns if r is not None])}
    ratio = records["pruned"]["env_steps"] / records["unpruned"]["env_steps"]
    low, high = reeval["unpruned"]["ci95_low"], reeval["unpruned"]["ci95_high"]
    result = {
        "command": "python benchmarks/sweep_pruning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "task": "physai/CartpoleBalance-v0 (env=cartpole_balance, preset ppo_cartpole_balance: 100,000 steps)",
        "rule": ("same TPE sampler (seed 0), training seed 0 and search space (configs/hydra/sweeper/search_space/"
                 "ppo.yaml) in both arms; both evaluate every interval_steps on interval_episodes deterministic "
                 "episodes; pruned arm: optuna MedianPruner defaults; cost = env steps trained; best configuration "
                 "by IQM (physai sweep-report), re-trained on 5 fresh seeds and evaluated on 10 episodes each"),
        "train_commands": {name: "python train.py " + " ".join(c) for name, c in commands.items()},
        "interval_steps": args.interval, "interval_episodes": args.episodes, "n_trials": args.trials,
        "wall_s": {"searches_together": round(search_s, 1), "total": round(time.perf_counter() - started, 1)},
        "arms": records, "reevaluation": reeval,
        "env_steps_ratio": ratio,
        "targets": {"steps_ratio_max": 0.6, "steps_ratio_met": ratio <= 0.6,
                    "pruned_best_within_unpruned_ci": low <= reeval["pruned"]["mean"] <= high,
                    "unpruned_ci95": [low, high], "pruned_best_mean": reeval["pruned"]["mean"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RESULT_FILE, result)
    plot(result, out / PLOT_FILE)
    print(json.dumps({k: result[k] for k in ("env_steps_ratio", "targets", "wall_s")}))
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for i, (arm, record) in enumerate(result["arms"].items()):
        xs = [p["env_steps"] / 1e6 for p in record["curve"] if p["best_objective"] is not None]
        ys = [p["best_objective"] for p in record["curve"] if p["best_objective"] is not None]
        axes[0].step(xs, ys, where="post", marker=".", color=f"C{i}",
                     label=f"{arm}: {record['env_steps'] / 1e6:.2f}M steps, {record['counts']['pruned']} pruned")
        re = result["reevaluation"][arm]
        axes[1].errorbar([i], [re["mean"]], yerr=[[re["mean"] - re["ci95_low"]], [re["ci95_high"] - re["mean"]]],
                         fmt="o", color=f"C{i}", capsize=6)
        axes[1].plot([i] * len(re["returns"]), re["returns"], "x", color=f"C{i}", alpha=0.6)
    axes[0].set_xlabel("env steps spent by the search (millions)")
    axes[0].set_ylabel("best evaluation return so far")
    axes[0].set_title(f"{result['n_trials']}-trial PPO search on cartpole_balance (TPE, seed 0)", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].set_xticks(range(len(result["arms"])))
    axes[1].set_xticklabels(list(result["arms"]))
    axes[1].set_ylabel("return, 5 fresh seeds (mean, 95% CI)")
    axes[1].set_title("best configuration re-trained", fontsize=10)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    sys.exit(main())
