"""Pruned vs unpruned optuna search: env steps spent, and how good the best configuration each finds is.

Three arms run the same 24-trial PPO search with ``hydra/sweeper=physai_optuna`` on one task (``--env``, default
``reach2d``: its shipped preset trains 400,000 steps and solves in well under a minute, and its return, a
negative distance, keeps separating good configurations from better ones where cart-pole saturates at 500),
through ``train.py -m`` exactly as a user runs it, with the same sampler (TPE) and training seed in every arm
(``--search-seed``, 0 by default: the sampler's seed and the training seed of every trial):

* ``unpruned``: ``hydra.sweeper.pruner=none``, every trial trains its whole budget;
* ``pruned``: ``hydra.sweeper.pruner=median`` with optuna's defaults (5 startup trials, no warm-up steps);
* ``successive_halving``: ``hydra.sweeper.pruner=successive_halving`` with optuna's defaults (reduction
  factor 4, minimum resource estimated from the first finished trial). This arm was added after the median
  arm missed the target on cart-pole and on reach2d; it is reported beside it, not instead of it.
* ``median_3_startup``: the median pruner judging from the fourth trial on (``n_startup_trials=3``). Chosen
  after both arms above missed, by replaying the unpruned seed-0 searches' evaluations (reach2d and cart-pole)
  through candidate pruners (``--replay benchmarks/results/sweep_pruning_<env>.json`` prints that table); it
  is reported on a search seed that choice never saw (``--search-seed 1``).

**One rule for all.** Every trial evaluates itself every ``--interval`` env steps (default: a tenth of the preset's budget) on ``--episodes``
deterministic episodes (the unpruned arm too, so every arm pays the same evaluation cost; only the pruned
arms act on them) and ends with the evaluate stage's 10 episodes, whose mean return is the objective. An arm's
cost is the env steps its trials trained (``summary.json`` -> ``train.timesteps``; a pruned trial stops
at the rollout where it was judged). Each arm's best configuration (``physai sweep-report``: best by IQM)
is then trained again on 5 fresh seeds (100-104, never used in the search) and evaluated the same way;
the targets, per pruned arm: its steps <= 60% of unpruned steps, and its best's mean re-evaluated return
within the 95% CI (Student t, n = 5) of the unpruned best's.

The arms, then the re-evaluations, run as processes side by side: the figures are env steps and returns,
which sharing the machine does not change. A rerun with the same ``--work`` resumes: a finished search has
no trial left to run (the sweeper's resume), and a re-evaluation whose runs all finished with the same
configuration is read, not rerun.

    .venv/bin/python benchmarks/sweep_pruning.py [--env reach2d] [--trials 24] [--out benchmarks/results]

writes ``sweep_pruning_<env>.json`` and ``sweep_pruning_<env>.png`` (best objective so far against env steps spent,
for every arm; re-evaluated returns with their CIs) into ``--out``.
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

from physai.config.compose import compose_config
from physai.core.io import read_summary, write_json_atomic
from physai.core.stats import mean_ci95
from physai.deploy.devices.host import cpu_model
from physai.report.format import save_png
from physai.run import sweeps

REPO = Path(__file__).resolve().parents[1]
ARMS = {"unpruned": ["hydra.sweeper.pruner=none"], "pruned": ["hydra.sweeper.pruner=median"],
        "successive_halving": ["hydra.sweeper.pruner=successive_halving"],
        "median_3_startup": ["hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_kwargs.n_startup_trials=3"]}
LABELS = {"unpruned": "no pruner", "pruned": "median pruner", "successive_halving": "successive halving",
          "median_3_startup": "median pruner, 3 startup trials"}
DEFAULT_ARMS = "unpruned,pruned,successive_halving"
COMMON = ["algo=ppo", "pipeline.stages=[train,evaluate]", "tracking=none", "evaluate.video=false"]


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


def _parsed(configuration: str) -> dict[str, Any]:
    """Overrides as Hydra reads them (Hydra's basic sweeper records ``false`` as ``False``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(configuration.split())}


def _finished(sweep_dir: Path, configuration: str, seeds: list[int]) -> bool:
    """True when ``sweep_dir`` holds completed runs of ``configuration``, one per seed of ``seeds`` (a
    re-evaluation done before)."""
    if not sweep_dir.is_dir():
        return False
    trials = sweeps.collect_trials(sweep_dir)
    return (sorted(t["seed"] for t in trials) == sorted(seeds)
            and all(t["status"] == "completed" and _parsed(t["configuration"]) == _parsed(configuration)
                    for t in trials))


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
            "trials_wall_s": round(sum(r.get("wall_s") or 0.0 for r in sweeps.collect_trials(sweep_dir)), 1),
            "counts": {s: sum(t["status"] == s for t in trials) for s in sweeps.STATUSES},
            "best_objective": best, "curve": curve, "trials": trials}


def first_evaluation_agreement(record: dict[str, Any]) -> Optional[dict[str, Any]]:
    """How well a trial's first evaluation during training foretells its final objective, in an arm that ran
    every trial to the end: the Spearman rank correlation, and where the winner stood at the first evaluation
    (1 = best). What a pruner that judges early can hope for."""
    trials = [t for t in record["trials"] if t["evaluations"] and t["objective"] is not None]
    if len(trials) < 3:
        return None
    first = [t["evaluations"][0][1] for t in trials]
    final = [t["objective"] for t in trials]

    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=lambda i: -values[i])
        out = [0] * len(values)
        for rank, i in enumerate(order, start=1):
            out[i] = rank
        return out

    first_rank, final_rank = ranks(first), ranks(final)
    n = len(trials)
    spearman = 1 - 6 * sum((a - b) ** 2 for a, b in zip(first_rank, final_rank)) / (n * (n * n - 1))
    winner = final_rank.index(1)
    return {"spearman": spearman, "trials": n, "winner_rank_at_first_evaluation": first_rank[winner],
            "first_evaluation_step": trials[winner]["evaluations"][0][0]}


# Pruners replayed by --replay: (label, physai pruner name, kwargs; "interval" in a value means that many
# evaluation intervals of env steps).
REPLAYED = [("median, optuna's defaults", "median", {}),
            ("median, 3 startup trials", "median", {"n_startup_trials": 3}),
            ("median, warm-up 2 evaluations", "median", {"n_warmup_steps": "2 interval"}),
            ("successive halving, optuna's defaults", "successive_halving", {}),
            ("successive halving, from 2 evaluations, 1 in 3 kept", "successive_halving",
             {"min_resource": "2 interval", "reduction_factor": 3}),
            ("hyperband, from 1 evaluation, factor 3", "hyperband",
             {"min_resource": "1 interval", "max_resource": "budget", "reduction_factor": 3})]


def replay_pruners(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What each pruner in ``REPLAYED`` would have done to a finished unpruned search: its trials, in order,
    report their recorded evaluations to a fresh study with that pruner. The env steps a pruned trial trained
    are its step when judged. An approximation of a real pruned search, whose sampler would have seen the
    pruned trials and suggested different ones after them; used to choose a pruner on one search seed."""
    import optuna

    from physai.train.study import make_pruner

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = sorted(result["arms"]["unpruned"]["trials"], key=lambda t: t["num"])
    budget, interval = trials[0]["env_steps"], result["interval_steps"]
    ranked = sorted((t["objective"] for t in trials), reverse=True)

    def value(v: Any) -> Any:
        if isinstance(v, str):
            return budget if v == "budget" else int(v.split()[0]) * interval
        return v

    rows = []
    for label, name, kwargs in REPLAYED:
        study = optuna.create_study(direction="maximize", pruner=make_pruner(name, {k: value(v) for k, v in kwargs.items()}))
        spent, kept = 0, []
        for record in trials:
            trial = study.ask()
            for step, mean_return in record["evaluations"]:
                trial.report(mean_return, step)
                if trial.should_prune():
                    spent += step
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                spent += budget
                kept.append(record["objective"])
                study.tell(trial, record["objective"])
        rows.append({"pruner": label, "env_steps_ratio": spent / (budget * len(trials)), "completed": len(kept),
                     "best_rank_among_all_trials": ranked.index(max(kept)) + 1})
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="reach2d", help="the env config group option to search on (PPO preset)")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--interval", type=int, default=None,
                        help="env steps between evaluations during training (default: a tenth of the budget)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes of each evaluation during training")
    parser.add_argument("--reeval-seeds", default="100,101,102,103,104")
    parser.add_argument("--work", default="benchmarks/work/sweep_pruning", help="where the sweeps run (relative "
                                                                               "to the repository)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--search-seed", type=int, default=0,
                        help="the TPE sampler's seed and every trial's training seed (the same in every arm)")
    parser.add_argument("--arms", default=DEFAULT_ARMS,
                        help=f"comma-separated arms, 'unpruned' among them; known: {', '.join(ARMS)}")
    parser.add_argument("--replay", metavar="JSON", default=None,
                        help="replay a saved result's unpruned search through several pruners; train nothing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run (e.g. algo.total_timesteps=4096 for a quick check)")
    args = parser.parse_args(argv)
    if args.replay:
        print("| pruner | env steps of unpruned | trials completed | its best's rank among all trials |")
        print("|---|---|---|---|")
        for row in replay_pruners(json.loads(Path(args.replay).read_text())):
            print(f"| {row['pruner']} | {row['env_steps_ratio']:.1%} | {row['completed']} | "
                  f"{row['best_rank_among_all_trials']} |")
        return 0
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if "unpruned" not in arms or any(arm not in ARMS for arm in arms):
        parser.error(f"--arms {args.arms!r}: name 'unpruned' and any of {', '.join(ARMS)}")
    seed = args.search_seed
    tag = args.env if seed == 0 else f"{args.env}_search{seed}"  # seed 0 keeps the names results were first written under
    task = compose_config([f"env={args.env}", *COMMON, *args.set])
    budget = int(task.algo.total_timesteps)
    interval = args.interval or budget // 10
    work, out = REPO / args.work / tag, REPO / args.out
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.reeval_seeds.split(",")]
    search = [f"env={args.env}", *COMMON, *args.set, f"evaluate.interval_steps={interval}", f"evaluate.interval_episodes={args.episodes}",
              "hydra/sweeper=physai_optuna", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.sampler=tpe",
              f"hydra.sweeper.sampler_seed={seed}", f"seed={seed}"]
    commands: dict[str, list[str]] = {}
    processes, dirs = {}, {}
    started = time.perf_counter()
    for arm in arms:
        dirs[arm] = work / arm
        commands[arm] = ["-m", *search, *ARMS[arm], f"hydra.sweep.dir={args.work}/{tag}/{arm}"]
        processes[arm] = _train(commands[arm], work / f"{arm}.log")
    _wait(processes, dirs, {arm: args.trials for arm in arms}, "search")
    search_s = time.perf_counter() - started
    records = {arm: arm_record(dirs[arm]) for arm in arms}
    reeval, processes, reeval_dirs = {}, {}, {}
    for arm in arms:
        report = sweeps.sweep_report(dirs[arm], resamples=2000)
        records[arm]["best_configuration"] = report["best_configuration"]
        records[arm]["importances"] = (report.get("importances") or {}).get("importances")
        # The configuration: the search's own overrides (env, budget, ...) and the parameters optuna chose.
        best_overrides = [o for o in report["best_configuration"].split() if not o.startswith("evaluate.interval_")]
        reeval_dirs[arm] = work / f"{arm}_reeval"
        commands[f"{arm}_reeval"] = ["-m", *best_overrides, f"seed={','.join(map(str, seeds))}",
                                     f"hydra.sweep.dir={args.work}/{tag}/{arm}_reeval"]
        if not _finished(reeval_dirs[arm], sweeps.configuration_of(best_overrides), seeds):
            processes[arm] = _train(commands[f"{arm}_reeval"], work / f"{arm}_reeval.log")
    _wait(processes, reeval_dirs, {arm: len(seeds) for arm in processes}, "re-evaluate")
    for arm in arms:
        returns = [t["objective"] for t in sweeps.collect_trials(reeval_dirs[arm])]
        reeval[arm] = {"seeds": seeds, "returns": returns, **mean_ci95([r for r in returns if r is not None])}
    low, high = reeval["unpruned"]["ci95_low"], reeval["unpruned"]["ci95_high"]
    targets = {}
    for arm in arms:
        if arm != "unpruned":
            ratio = records[arm]["env_steps"] / records["unpruned"]["env_steps"]
            targets[arm] = {"env_steps_ratio": ratio, "steps_ratio_max": 0.6, "steps_ratio_met": ratio <= 0.6,
                            "best_mean": reeval[arm]["mean"], "unpruned_ci95": [low, high],
                            "best_within_unpruned_ci": low <= reeval[arm]["mean"] <= high}
    result = {
        "command": "python benchmarks/sweep_pruning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "task": f"{task.env.id} (env={args.env}, PPO preset for {task.algo.tuned_for}: {budget:,} steps)",
        "rule": (f"same TPE sampler (seed {seed}), training seed {seed} and search space (configs/hydra/sweeper/"
                 "search_space/ppo.yaml) in every arm; every arm evaluates every interval_steps on interval_episodes "
                 "deterministic episodes; pruned arms: optuna's MedianPruner and SuccessiveHalvingPruner defaults, "
                 "and MedianPruner with n_startup_trials=3; cost = env steps trained; best configuration by IQM "
                 "(physai sweep-report), re-trained on 5 fresh seeds and evaluated on 10 episodes each"),
        "search_seed": seed,
        "train_commands": {name: "python train.py " + " ".join(c) for name, c in commands.items()},
        "interval_steps": interval, "interval_episodes": args.episodes, "n_trials": args.trials,
        "wall_s": {"searches_together": round(search_s, 1), "total": round(time.perf_counter() - started, 1),
                   "note": "this invocation's time; a resumed run does not repeat the searches it found finished"},
        "arms": records, "reevaluation": reeval, "targets": targets,
        "unpruned_first_evaluation_vs_final": first_evaluation_agreement(records["unpruned"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"sweep_pruning_{tag}.json", result)
    plot(result, out / f"sweep_pruning_{tag}.png", args.env)
    print(json.dumps({k: result[k] for k in ("targets", "wall_s")}))
    return 0


def plot(result: dict[str, Any], path: Path, env: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for i, (arm, record) in enumerate(result["arms"].items()):
        xs = [p["env_steps"] / 1e6 for p in record["curve"] if p["best_objective"] is not None]
        ys = [p["best_objective"] for p in record["curve"] if p["best_objective"] is not None]
        axes[0].step(xs, ys, where="post", marker=".", color=f"C{i}",
                     label=f"{LABELS[arm]}: {record['env_steps'] / 1e6:.2f}M steps, {record['counts']['pruned']} pruned")
        re = result["reevaluation"][arm]
        axes[1].errorbar([i], [re["mean"]], yerr=[[re["mean"] - re["ci95_low"]], [re["ci95_high"] - re["mean"]]],
                         fmt="o", color=f"C{i}", capsize=6)
        axes[1].plot([i] * len(re["returns"]), re["returns"], "x", color=f"C{i}", alpha=0.6)
    axes[0].set_xlabel("env steps spent by the search (millions)")
    axes[0].set_ylabel("best evaluation return so far")
    axes[0].set_title(f"{result['n_trials']}-trial PPO search on {env} (TPE, seed {result.get('search_seed', 0)})",
                      fontsize=10)
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].set_xticks(range(len(result["arms"])))
    axes[1].set_xticklabels([LABELS[arm] for arm in result["arms"]], fontsize=8)
    axes[1].set_ylabel("return, 5 fresh seeds (mean, 95% CI)")
    axes[1].set_title("best configuration re-trained", fontsize=10)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    sys.exit(main())
