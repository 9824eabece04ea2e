"""Do prompted edge cases make a policy robust? Three SAC policies per scenario, one real-step budget.

* ``nominal``: SAC on the task as shipped (its own domain randomization), real data only.
* ``prompted``: MBPO (``physai.synthetic.mbpo``), SAC plus a context-conditioned ensemble; ``prompt_share``
  of every model round's branches start from the scenario prompt (its physics, its kicks, its horizon).
  No real step is ever taken under the scenario's physics.
* ``unprompted``: the same MBPO with every branch from real states (``prompt_share=0``): the control that
  says how much of (b)'s result is the prompt, not the model or its update-to-data ratio.
* ``randomized``: SAC on ``randomize_scenario(task)``: domain randomization over the hull of the task's
  ranges and the scenario's, with the scenario's kicks in every episode (real steps spent on the edge case).

Every arm uses the task's SAC preset (``configs/preset/sac_<env>.yaml``: network, batch, learning rate,
warm-up, envs and one gradient step per real step); the two MBPO arms take two steps per real step with
half of each batch real, so they learn from as many real samples per real step as the SAC arms. Each final policy plays the same ``eval_episodes`` fixed-seed episodes deterministically under
nominal physics and under the staged scenario (``stage_scenario``, as the ``scenario_eval`` stage does).

Real steps on the edge case are counted by one rule for every arm: a step whose env's physics lies inside
every range the scenario names, and (separately) a step of an episode in which the scenario's kick lands.

**Targets, fixed before any run.** ``margin`` is 10% of the task's solved threshold. (b) beats (a) under
the scenario by at least the margin (seed means); (b)'s nominal return is not below (a)'s by more than the
95% CI half-width of their paired difference; (b)'s scenario return is at least (c)'s, with fewer real
steps on the edge case. The default seeds (100-104) were never used to choose a setting.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from physai.bench.jobs import JobStore, job_inputs, run_jobs
from physai.config.compose import build_task, compose_config, override_value
from physai.core.errors import ConfigError
from physai.core.io import write_json_atomic
from physai.core.stats import mean_ci95, paired_ci95
from physai.deploy.devices.host import machine_description
from physai.report.format import save_png
from physai.synthetic.mbpo import training_figures
from physai.synthetic.scenario import Scenario, scenario_of_run
from physai.synthetic.staging import randomize_scenario, stage_scenario
from physai.train.evaluation import episode_returns
from physai.train.sb3 import build_model, build_vec_env
from physai.train.vec_env import batched_engine

RESULT_FILE = "robustness.json"
PLOT_FILE = "robustness.png"
ARMS = ("nominal", "prompted", "randomized", "unprompted")
ARM_LABELS = {"nominal": "(a) SAC, nominal real data", "prompted": "(b) MBPO, prompted synthetic",
              "randomized": "(c) SAC, scenario as domain randomization",
              "unprompted": "(b0) MBPO, unprompted (control)"}
EVAL_SEED_BASE = 3_000_000  # evaluation episodes reset with these seeds, for every arm and condition
REPORT_SEEDS = (100, 101, 102, 103, 104)
MARGIN_SHARE = 0.10  # the edge-case margin: this share of the task's solved threshold


@dataclass
class RobustnessPlan:
    """One scenario's benchmark: its env option, real-step budget and the prompted arm's MBPO settings."""

    env: str
    budget: int
    eval_episodes: int = 10
    prompt_share: float = 0.5
    mbpo: dict[str, Any] = field(default_factory=dict)  # algo.<key> overrides of the prompted arm


# The prompted arm: half of every batch real at two updates per real step, so it learns from as many real
# samples per real step as the SAC arms (16 envs, 16 updates per batch step) and as many synthetic ones
# again; a model round every 1,000 real steps; nominal branches of 1-3 steps beside the prompted ones (the
# prompt's own horizon). Fixed on seeds 0-1 before the reported seeds ran.
SHARED_MBPO = {"gradient_steps": 32, "real_ratio": 0.5, "model_train_every": 1000, "rollout_batch": 4000,
               "rollout_length": [1000, 5000, 1, 3], "model_retain_rounds": 4}
# Its ensemble (synthetic.world_model): conditioned on the physics context, every fit bounded by epochs
# (never by seconds, so machine load cannot change a result).
WORLD_MODEL = {"use_context": True, "members": 5, "elites": 3, "hidden": 128, "layers": 3, "max_epochs": 30,
               "max_seconds": None}
PLANS: dict[str, RobustnessPlan] = {
    "cartpole_balance/heavy_pole_push": RobustnessPlan(env="cartpole_balance", budget=20_000),
    "car_lane/low_friction_push": RobustnessPlan(env="car_lane", budget=60_000),
}
DEFAULT_SCENARIOS = tuple(PLANS)


def arm_overrides(arm: str, scenario: str, plan: RobustnessPlan) -> list[str]:
    """The ``train.py`` overrides that train this arm (the randomized arm's task is changed in code)."""
    common = [f"env={plan.env}", f"algo.total_timesteps={plan.budget}", f"scenario={scenario}"]
    if arm in ("prompted", "unprompted"):
        mbpo = {**SHARED_MBPO, **plan.mbpo, "prompt_share": plan.prompt_share if arm == "prompted" else 0.0}
        return [*common, "algo=mbpo", f"preset=sac_{plan.env}",
                *(f"synthetic.world_model.{key}={override_value(value)}" for key, value in WORLD_MODEL.items()),
                *(f"algo.{key}={override_value(value)}" for key, value in mbpo.items())]
    if arm in ("nominal", "randomized"):
        return [*common, "algo=sac"]
    raise ValueError(f"unknown arm {arm!r}; arms are {ARMS}")


def _run_line(name: str, arm: str, seed: int, record: dict) -> str:
    """One finished run's mean returns under the scenario and nominal physics, as the progress log shows them."""
    return (f"{name} {ARM_LABELS[arm]} seed {seed}: scenario {np.mean(record['scenario_returns']):.1f}, "
            f"nominal {np.mean(record['nominal_returns']):.1f}")


def check_arms(arms: Sequence[str], work_dir: Optional[Path]) -> list[str]:
    """The arms to train, in ``ARMS`` order; a subset needs a work folder to keep its runs for the full analysis."""
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown or not arms:
        raise ConfigError(f"--arms {','.join(arms)!r}: choose one or more of {', '.join(ARMS)}")
    if len(set(arms)) < len(ARMS) and work_dir is None:
        raise ConfigError("--arms trains only some arms and analyzes nothing, so its runs must be kept: give --work")
    return [arm for arm in ARMS if arm in arms]


class _EdgeCaseSteps(BaseCallback):
    """Counts real steps taken under the scenario's physics, reading every env's context each step."""

    def __init__(self, scenario: Scenario, kicked: bool) -> None:
        super().__init__()
        self.scenario, self.kicked = scenario, kicked
        self.in_physics = 0

    def _on_training_start(self) -> None:
        self.engine = batched_engine(self.training_env)
        names = list(self.engine.context_names)
        self.columns = [names.index(self.scenario.context_names[i]) for i in self.scenario.context_ranges]
        self.bounds = np.array(list(self.scenario.context_ranges.values()), dtype=np.float64).reshape(-1, 2)

    def _on_step(self) -> bool:
        if self.columns:
            context = self.engine.context_matrix()[:, self.columns]
            inside = ((context >= self.bounds[:, 0]) & (context <= self.bounds[:, 1])).all(axis=1)
            self.in_physics += int(inside.sum())
        return True

    def figures(self) -> dict[str, int]:
        steps = int(self.num_timesteps)
        return {"real_steps": steps, "steps_in_scenario_physics": self.in_physics,
                "steps_in_kicked_episodes": steps if self.kicked else 0}


def train_arm(arm: str, scenario_name: str, plan: RobustnessPlan, seed: int) -> dict[str, Any]:
    """Train one arm for the plan's budget; evaluate it under nominal physics and the staged scenario."""
    cfg = compose_config(arm_overrides(arm, scenario_name, plan))
    task = build_task(cfg.env)
    scenario = scenario_of_run(cfg.scenario, task, "bench robustness")
    staged, staged_record = stage_scenario(task, scenario)
    training_task, trained_on = (randomize_scenario(task, scenario) if arm == "randomized" else (task, None))
    venv = build_vec_env(training_task, cfg.algo, seed)
    model = build_model(cfg.algo, venv, seed, world_model=cfg.synthetic.world_model)
    if arm == "prompted":
        model.set_prompt(scenario)
    counter = _EdgeCaseSteps(scenario, kicked=arm == "randomized")
    started = time.perf_counter()
    model.learn(total_timesteps=plan.budget, callback=counter)
    seconds = time.perf_counter() - started
    seeds = [EVAL_SEED_BASE + i for i in range(plan.eval_episodes)]

    def act(obs: np.ndarray) -> np.ndarray:
        observed = venv.normalize_obs(obs) if isinstance(venv, VecNormalize) else obs
        return model.predict(observed, deterministic=True)[0]

    record = {"seed": seed, "seconds": seconds, **counter.figures(),
              "nominal_returns": episode_returns(task, act, seeds),
              "scenario_returns": episode_returns(staged, act, seeds),
              "staged": staged_record, "trained_on": trained_on,
              "model_based": training_figures(model) if hasattr(model, "mbpo_stats") else None}
    venv.close()
    return record


@dataclass(frozen=True)
class Job:
    scenario: str
    arm: str
    seed: int
    plan: RobustnessPlan
    torch_threads: int = 1

    @property
    def cost(self) -> float:
        """Longest first: the prompted arm also fits a model and imagines."""
        return self.plan.budget * (2.5 if self.arm in ("prompted", "unprompted") else 1.0)


def run_job(job: Job, events=None) -> dict[str, Any]:
    torch.set_num_threads(job.torch_threads)
    record = train_arm(job.arm, job.scenario, job.plan, job.seed)
    if events is not None:
        events.put((job.scenario, job.arm, job.seed, record))
    return record


# ---------------------------------------------------------------------- analysis

def _seed_means(records: list[dict], key: str) -> list[float]:
    return [float(np.mean(r[key])) for r in records]


def analyze_scenario(records: dict[str, list[dict]], margin: float) -> dict[str, Any]:
    """Per arm: scenario and nominal return (95% CI over seeds) and edge-case steps; the three targets."""
    edge = {arm: _seed_means(records[arm], "scenario_returns") for arm in ARMS}
    nominal = {arm: _seed_means(records[arm], "nominal_returns") for arm in ARMS}
    arms = {arm: {"scenario_return": mean_ci95(edge[arm]), "nominal_return": mean_ci95(nominal[arm]),
                  "steps_in_scenario_physics": mean_ci95([r["steps_in_scenario_physics"] for r in records[arm]]),
                  "steps_in_kicked_episodes": mean_ci95([r["steps_in_kicked_episodes"] for r in records[arm]])}
            for arm in ARMS}
    edge_gain = paired_ci95(edge["prompted"], edge["nominal"])
    nominal_change = paired_ci95(nominal["prompted"], nominal["nominal"])
    versus_randomized = paired_ci95(edge["prompted"], edge["randomized"])
    versus_unprompted = paired_ci95(edge["prompted"], edge["unprompted"])
    half_width = (nominal_change["ci95_high"] - nominal_change["ci95_low"]) / 2
    edge_steps = {arm: arms[arm]["steps_in_scenario_physics"]["mean"] + arms[arm]["steps_in_kicked_episodes"]["mean"]
                  for arm in ARMS}
    targets = {
        "prompted_beats_nominal_on_scenario": bool(edge_gain["mean"] >= margin),
        "prompted_keeps_nominal_return": bool(nominal_change["mean"] >= -half_width),
        "prompted_matches_randomized_with_fewer_edge_steps": bool(
            versus_randomized["mean"] >= 0 and edge_steps["prompted"] < edge_steps["randomized"]),
    }
    return {"margin": margin, "arms": arms, "prompted_minus_nominal_on_scenario": edge_gain,
            "prompted_minus_nominal_on_nominal": nominal_change,
            "prompted_minus_randomized_on_scenario": versus_randomized,
            "prompted_minus_unprompted_on_scenario": versus_unprompted, "targets": targets}


def _ci_text(ci: dict[str, float], digits: int = 1) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['ci95_low']:.{digits}f}, {ci['ci95_high']:.{digits}f}]"


def markdown_tables(record: dict[str, Any]) -> str:
    """The README's table from a ``robustness.json`` (``physai bench robustness --markdown``)."""
    lines = ["| scenario | arm | return under the scenario | nominal return | real steps under its physics | "
             "real steps in kicked episodes |", "|---|---|---|---|---|---|"]
    for name, result in record["scenarios"].items():
        for arm in ARMS:
            figures = result["arms"][arm]
            lines.append(f"| `{name}` | {ARM_LABELS[arm]} | {_ci_text(figures['scenario_return'])} | "
                         f"{_ci_text(figures['nominal_return'])} | "
                         f"{figures['steps_in_scenario_physics']['mean']:,.0f} | "
                         f"{figures['steps_in_kicked_episodes']['mean']:,.0f} |")
    lines += ["", "| scenario | margin | (b) - (a) under the scenario | (b) - (a) nominal | (b) - (c) under the "
                  "scenario | (b) - (b0) under the scenario | targets met |", "|---|---|---|---|---|---|---|"]
    for name, result in record["scenarios"].items():
        met = ", ".join(f"{key}: {'yes' if ok else 'no'}" for key, ok in result["targets"].items())
        lines.append(f"| `{name}` | {result['margin']:.1f} | {_ci_text(result['prompted_minus_nominal_on_scenario'])} | "
                     f"{_ci_text(result['prompted_minus_nominal_on_nominal'])} | "
                     f"{_ci_text(result['prompted_minus_randomized_on_scenario'])} | "
                     f"{_ci_text(result['prompted_minus_unprompted_on_scenario'])} | {met} |")
    return "\n".join(lines)


def _plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["scenarios"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        result = record["scenarios"][name]
        for offset, (condition, key) in enumerate((("nominal", "nominal_return"), ("scenario", "scenario_return"))):
            for position, arm in enumerate(ARMS):
                ci = result["arms"][arm][key]
                x = offset * (len(ARMS) + 1) + position
                ax.bar(x, ci["mean"], color=f"C{position}", label=ARM_LABELS[arm] if offset == 0 else None)
                ax.errorbar(x, ci["mean"], yerr=[[ci["mean"] - ci["ci95_low"]], [ci["ci95_high"] - ci["mean"]]],
                            color="black", capsize=3)
        center = (len(ARMS) - 1) / 2
        ax.set_xticks([center, center + len(ARMS) + 1], ["nominal physics", "staged scenario"])
        ax.set_title(f"{name} ({len(record['seeds'])} seeds, 95% CI)", fontsize=9)
        ax.set_ylabel("deterministic return")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_png(fig, path)


# ---------------------------------------------------------------------- entry point

def bench_robustness(scenarios: Sequence[str] = DEFAULT_SCENARIOS, seeds: Sequence[int] = REPORT_SEEDS,
                     out_dir: Optional[Path] = Path("benchmarks/results"), *, workers: Optional[int] = None,
                     plans: Optional[dict[str, dict]] = None, torch_threads: int = 1,
                     command: Optional[str] = None, work_dir: Optional[Path] = None,
                     arms: Sequence[str] = ARMS) -> Optional[dict[str, Any]]:
    """Train every (scenario, arm, seed), evaluate, analyze; write ``robustness.json`` and the plot.
    With ``work_dir``, every finished run is kept there and a rerun trains only the runs it lacks.

    ``arms`` short of all of them trains only those (into ``work_dir``, which it then needs) and analyzes
    nothing: on a small machine the cheap arms can be done first, and the full command later reads them back.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    resolved, seed_list, workers = job_inputs(scenarios, PLANS, plans, seeds, workers, "--scenarios")
    chosen = check_arms(arms, work_dir)
    jobs = sorted((Job(name, arm, seed, plan, torch_threads) for name, plan in resolved.items() for arm in chosen
                   for seed in seed_list), key=lambda job: -job.cost)
    records: dict[tuple, dict] = {}
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
               TimeElapsedColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task(f"bench robustness: {len(jobs)} runs on {workers} workers", total=len(jobs))

        def show(name: str, arm: str, seed: int, record: dict) -> None:
            progress.console.log(f"{_run_line(name, arm, seed, record)} ({record['seconds']:.0f} s)")

        def finished(job: Job, record: dict) -> None:
            records[(job.scenario, job.arm, job.seed)] = record
            progress.advance(bar)

        store = JobStore(work_dir) if work_dir is not None else None
        resumed = run_jobs(jobs, run_job, workers, show, finished, store)
    if resumed:
        print(f"{resumed} of {len(jobs)} runs were read from {work_dir}, finished by an earlier invocation")
    if len(chosen) < len(ARMS):
        for job in sorted(jobs, key=lambda job: (job.scenario, ARMS.index(job.arm), job.seed)):
            print(_run_line(job.scenario, job.arm, job.seed, records[(job.scenario, job.arm, job.seed)]))
        print(f"trained only {', '.join(chosen)}, kept in {work_dir}; run the command without --arms (same "
              f"--work) to train the other arms and write {RESULT_FILE}")
        return None
    results = {}
    for name, plan in resolved.items():
        threshold = build_task(compose_config([f"env={plan.env}"]).env).solved_threshold
        if threshold is None:
            raise ConfigError(f"{plan.env} has no solved threshold, so the benchmark's margin is undefined")
        results[name] = analyze_scenario({arm: [records[(name, arm, s)] for s in seed_list] for arm in ARMS},
                                         MARGIN_SHARE * float(threshold))
    record = {
        "command": command if command is not None else " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "machine": machine_description(),
        "seeds": seed_list, "wall_clock_s": time.perf_counter() - started, "workers": workers,
        "runs_resumed": resumed, "train_seconds_all_runs": sum(r["seconds"] for r in records.values()),
        "settings": {"plans": {n: asdict(p) for n, p in resolved.items()}, "shared_mbpo": SHARED_MBPO,
                     "world_model": WORLD_MODEL,
                     "overrides": {n: {arm: arm_overrides(arm, n, p) for arm in ARMS} for n, p in resolved.items()},
                     "eval": f"deterministic actions; episodes reset with seeds {EVAL_SEED_BASE}+i under nominal "
                             f"physics and under the staged scenario, for every arm", "margin_share": MARGIN_SHARE,
                     "torch_threads": torch_threads},
        "scenarios": results,
        "runs": {n: {arm: [records[(n, arm, s)] for s in seed_list] for arm in ARMS} for n in resolved},
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / RESULT_FILE, record)
        _plot(record, out_dir / PLOT_FILE)
    print(markdown_tables(record))
    print(json.dumps({n: r["targets"] for n, r in results.items()}))
    return record
