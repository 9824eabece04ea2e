"""Release gates between two bundles: may CANDIDATE replace REFERENCE on the robot?

``physai gate CANDIDATE --reference REFERENCE`` checks both bundles' checksums, then applies the
thresholds of a staged rollout (defaults from ``GateConfig``, each overridable on the command line):

- **quality**: the candidate's evaluation return may be below the reference's by at most
  ``quality_max_drop_points`` score points (100 points = |solved threshold|, or |reference return|
  for a task without one). Paired over the same seeds; as in the run's own gate, it fails only when
  the drop exceeds the limit with 95% confidence, because float rounding alone moves single episodes
  of contact-rich tasks. Returns come from the bundles' manifests (the export stage records them),
  else from the ``summary.json`` of the run a bundle sits in; when the two were evaluated on
  different seeds (or ``--episodes`` asks for it) the bundles are evaluated here, in the simulator
  of the run's ``config.yaml``, on the same seeds.
- **p99 vs reference**: batch-1 p99 latency of the candidate at most ``reference_p99_max_ratio``
  times the reference's, both measured in this process with calls interleaved one by one, so that
  noise from a shared machine falls on both alike (measured, this host).
- **absolute latency**: the candidate's measured p99 at most ``latency_p99_max_ms`` and at most the
  control period; on each modeled target, the modeled latency likewise (modeled).
- **cost per action**: the candidate's modeled dollars per million actions on each target at most
  ``cost_max_ratio`` times the reference's on the same target (1.2: at most 20% more; modeled).

- **solves under delay**: on each target, the candidate's closed-loop return with the action delay that
  target's modeled latency imposes reaches the task's solved threshold (``physai.deploy.gates.delay_gates``,
  the same check as the pipeline's gate). Figures come from the delay_eval its run recorded for this
  policy, else are evaluated here; a task without a threshold reads "not applicable", and a target that
  could not be checked reads "not run" and fails unless ``--no-require-delay-eval``.

Exit status: 0 when every gate passes, 3 when one fails (as the pipeline's strict gate), 2 for bad input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from physai.config.compose import CONFIG_FILE, build_task
from physai.config.schema import GateConfig, packaged_device_keys
from physai.core.errors import BundleError, ConfigError
from physai.core.io import write_json_atomic
from physai.deploy.delayed_evaluation import evaluate_delays
from physai.deploy.devices.onnx_cost import node_costs
from physai.deploy.devices.roofline import load_device, model_device
from physai.deploy.gates import (GATE_SUFFIX, delay_gates, gate_result, gate_row, latency_gates,
                                 quality_drop_gate)
from physai.deploy.latency import latency_figures
from physai.deploy.profiling import host_description
from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE, load_manifest, verify_bundle
from physai.edge.runtime import EdgePolicy
from physai.report.format import fmt
from physai.train.evaluation import episode_returns, evaluation_seeds

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Thresholds:
    quality_max_drop_points: float = 2.0
    reference_p99_max_ratio: float = 1.2
    latency_p99_max_ms: float = 50.0
    latency_within_control_period: bool = True
    cost_max_ratio: float = 1.2
    require_delay_eval: bool = True

    @classmethod
    def defaults(cls) -> "Thresholds":
        """The defaults of ``GateConfig``, so `physai gate` and the pipeline's gate start from the same numbers."""
        gate = GateConfig()
        return cls(**{f.name: getattr(gate, f.name) for f in dataclasses.fields(cls)})


# ----- what a bundle says about itself -------------------------------------------------------------
def record_bundle_evaluation(bundle_dir: Path, closed_loop: dict) -> None:
    """Write the FP32 bundle's closed-loop evaluation into its manifest, so the bundle carries it."""
    manifest = load_manifest(bundle_dir)
    manifest["evaluation"] = {
        "policy": POLICY_FILE, "how": "deterministic closed-loop episodes of the bundle in the task's simulator",
        **{key: closed_loop.get(key) for key in ("mean_return", "std_return", "ci95_low", "ci95_high", "n_episodes",
                                                 "solved_threshold", "episode_returns", "seeds")}}
    write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)


def recorded_evaluation(bundle_dir: Path, manifest: dict) -> Optional[dict]:
    """The bundle's evaluation: from its manifest, else from the summary of the run it sits in."""
    if manifest.get("evaluation"):
        return {**manifest["evaluation"], "source": f"{bundle_dir / MANIFEST_FILE}"}
    summary_path = bundle_dir.resolve().parent / "summary.json"
    if summary_path.is_file():
        try:
            bundle = json.loads(summary_path.read_text()).get("bundle") or {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if bundle.get("policy_sha256") == manifest["files"][POLICY_FILE]["sha256"] and bundle.get("eval"):
            return {**bundle["eval"], "source": str(summary_path)}
    return None


# ----- measuring ------------------------------------------------------------------------------------
def measure_side_by_side(load_candidate: Any, load_reference: Any, iterations: int, warmup: int,
                         repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Batch-1 latency of two policies in one process, calls interleaved one by one (order alternating).

    ``repeats`` independent measurements, each on freshly loaded sessions, of ``iterations`` calls per
    policy; the p99 ratio is the median of the repeats' ratios (one noisy repeat on a shared machine does
    not decide), the latency figures pool every call.
    """
    pooled: list[list[np.ndarray]] = [[], []]
    ratios = []
    clock = time.perf_counter_ns
    for repeat in range(repeats):
        candidate, reference = load_candidate(), load_reference()
        obs = candidate.example_observation(np.random.default_rng(seed + repeat))
        calls = (lambda: candidate.act(obs), lambda: reference.act(obs))
        for _ in range(warmup):
            calls[0]()
            calls[1]()
        samples = np.empty((2, iterations), dtype=np.int64)
        for i in range(iterations):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = clock()
                calls[which]()
                samples[which, i] = clock() - start
        ratios.append(float(np.percentile(samples[0], 99) / np.percentile(samples[1], 99)))
        pooled[0].append(samples[0])
        pooled[1].append(samples[1])
    return {"candidate": latency_figures(np.concatenate(pooled[0])),
            "reference": latency_figures(np.concatenate(pooled[1])),
            "p99_ratio": float(np.median(ratios)), "p99_ratio_per_repeat": ratios,
            "iterations_per_repeat": iterations, "repeats": repeats}


def _run_config(bundle_dirs: Sequence[Path], run_config: Optional[Path]) -> Any:
    """The config of the run a bundle came from (its ``config.yaml``), or None when there is none."""
    candidates = [Path(run_config)] if run_config else [d.resolve().parent / CONFIG_FILE for d in bundle_dirs]
    for path in candidates:
        if path.is_file():
            return OmegaConf.load(path)
        if run_config:
            raise ConfigError(f"--config {path} does not exist; point at a run's config.yaml")
    return None


def _task_for(bundle_dirs: Sequence[Path], run_config: Optional[Path]) -> Any:
    """The task of the run a bundle came from, or None when there is none."""
    cfg = _run_config(bundle_dirs, run_config)
    return None if cfg is None else build_task(cfg.env)


def delay_check(cand_dir: Path, cand_manifest: dict, latencies_ms: dict[str, float], names: dict[str, str],
                period_ms: Optional[float], episodes: Optional[int], run_config: Optional[Path],
                required: bool) -> list[dict]:
    """The candidate's per-target delay gates (``physai.deploy.gates.delay_gates``, as in the pipeline's gate).

    Figures come from the delay_eval that the candidate's own run recorded for this very policy and
    control period; targets it lacks (or all, with ``--episodes``) are evaluated here with the run's
    delay_eval settings, each target's modeled latency held constant (no host jitter); without a
    run config to build the task from, the check reads "not run".
    """
    sha = cand_manifest["files"][POLICY_FILE]["sha256"]
    rows: dict[str, dict] = {}
    summary_path = cand_dir.resolve().parent / "summary.json"
    if episodes is None and summary_path.is_file() and period_ms:
        try:
            recorded = json.loads(summary_path.read_text()).get("delay_eval")
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = None
        if (recorded and recorded.get("policy_sha256") == sha
                and math.isclose(recorded.get("control_period_ms") or 0.0, period_ms, rel_tol=1e-6)):
            known = {key: names[key] for key in names if key in recorded.get("devices", {})}
            for row in delay_gates(recorded, known, required=required):
                row["detail"] += f"; recorded by delay_eval in {summary_path}"
                rows[row["name"]] = row
    remaining = {key: name for key, name in names.items() if f"{key}{GATE_SUFFIX}" not in rows}
    if remaining:
        cfg = _run_config([cand_dir], run_config)
        section, missing = None, None
        if not period_ms:
            missing = "control rate unknown (pass --control-rate HZ)"
        elif cfg is None:
            missing = ("no delay_eval was recorded for this bundle and no run config.yaml sits beside it to "
                       "evaluate one (pass --config <run_dir>/config.yaml)")
        else:
            task = build_task(cfg.env)
            settings = cfg.get("delay_eval") or {}
            seeds = evaluation_seeds(int(cfg.get("seed", 0)), int(cfg.evaluate.seed_offset),
                                     episodes or int(settings.get("n_episodes", 5)))
            log.info("evaluating the candidate with each target's action delay on %d seeds", len(seeds))
            section = evaluate_delays(task, EdgePolicy.load(cand_dir).act, seeds,
                                      {key: latencies_ms[key] for key in remaining}, period_ms,
                                      controller=settings.get("controller", "synchronous"), sweep_max_steps=0,
                                      solved_threshold=task.solved_threshold)
        for row in delay_gates(section, remaining, required=required, missing=missing or ""):
            if section is not None:
                row["detail"] += f"; evaluated here on {len(section['seeds'])} seeds, no jitter"
            rows[row["name"]] = row
    return [rows[f"{key}{GATE_SUFFIX}"] for key in names]


def compare_quality(cand_dir: Path, ref_dir: Path, cand_manifest: dict, ref_manifest: dict,
                    episodes: Optional[int], run_config: Optional[Path], limit: float) -> dict:
    """The quality gate on candidate and reference returns, paired on the same seeds when possible."""
    cand_eval = recorded_evaluation(cand_dir, cand_manifest)
    ref_eval = recorded_evaluation(ref_dir, ref_manifest)
    how = "recorded evaluations, paired on the same seeds"
    if episodes is None and cand_eval and ref_eval and cand_eval.get("seeds") == ref_eval.get("seeds"):
        ref_returns, cand_returns = ref_eval["episode_returns"], cand_eval["episode_returns"]
        threshold = ref_eval.get("solved_threshold")
        paired = True
    else:
        task = _task_for([cand_dir, ref_dir], run_config)
        if task is None:
            if not (cand_eval and ref_eval) or episodes is not None:
                raise BundleError(
                    "cannot judge quality: " + ("--episodes asks for a fresh evaluation" if episodes is not None
                                                else "a bundle carries no evaluation") +
                    ", and no run config.yaml sits beside either bundle to build the task from; pass --config "
                    "<run_dir>/config.yaml of the run that trained them")
            ref_returns, cand_returns = ref_eval["episode_returns"], cand_eval["episode_returns"]
            threshold = ref_eval.get("solved_threshold")
            paired, how = False, "recorded evaluations on different seeds, unpaired (Welch)"
        else:
            if episodes is None and ref_eval and ref_eval.get("seeds"):
                seeds = [int(s) for s in ref_eval["seeds"]]
            else:
                seeds = evaluation_seeds(0, 1_000_000, episodes or 10)
            returns = {}
            for name, bundle_dir, record in (("reference", ref_dir, ref_eval), ("candidate", cand_dir, cand_eval)):
                if record and record.get("seeds") == seeds:
                    returns[name] = record["episode_returns"]
                else:
                    log.info("evaluating the %s bundle on %d seeds", name, len(seeds))
                    returns[name] = episode_returns(task, EdgePolicy.load(bundle_dir).act, seeds)
            ref_returns, cand_returns = returns["reference"], returns["candidate"]
            threshold = task.solved_threshold
            paired, how = True, f"evaluated on the same {len(seeds)} seeds in the task's simulator"
    return {"gate": quality_drop_gate(ref_returns, cand_returns, threshold, limit, paired=paired, how=how),
            "how": how, "solved_threshold": threshold, "reference_mean_return": float(np.mean(ref_returns)),
            "candidate_mean_return": float(np.mean(cand_returns))}


def _check_same_task(cand: dict, ref: dict) -> None:
    cand_env, ref_env = cand.get("provenance", {}).get("env_id"), ref.get("provenance", {}).get("env_id")
    if cand_env and ref_env and cand_env != ref_env:
        raise BundleError(f"the candidate was trained for {cand_env}, the reference for {ref_env}: a release gate "
                          f"compares two policies for one task")
    for space in ("observation_space", "action_space"):
        c, r = dict(cand.get(space) or {}), dict(ref.get(space) or {})
        c.pop("names", None), r.pop("names", None)
        if c != r:
            raise BundleError(f"the candidate's {space} differs from the reference's ({c} vs {r}): the two "
                              f"bundles do not drive the same robot interface")


def release_gates(candidate: str | Path, reference: str | Path, *, devices: Optional[Sequence[str]] = None,
                  control_rate_hz: Optional[float] = None, thresholds: Optional[Thresholds] = None,
                  iterations: int = 10000, warmup: int = 300, repeats: int = 3, episodes: Optional[int] = None,
                  run_config: Optional[str | Path] = None) -> dict[str, Any]:
    """Every gate of CANDIDATE against REFERENCE; ``passed`` is True only if all pass."""
    thresholds = thresholds or Thresholds.defaults()
    for field in dataclasses.fields(Thresholds):
        value = getattr(thresholds, field.name)
        in_range = value >= 0 if field.name == "quality_max_drop_points" else value > 0
        if field.type in ("float", float) and not in_range:
            raise ConfigError(f"gate threshold {field.name}={value} is out of range; give a positive number")
    if control_rate_hz is not None and not control_rate_hz > 0:
        raise ConfigError(f"--control-rate {control_rate_hz}: give the control loop's rate in Hz (> 0), e.g. 50")
    if iterations < 100:
        raise ConfigError(f"--iterations {iterations}: a p99 needs at least 100 timed calls (1000+ is stabler)")
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: measure at least once")
    keys = list(devices) if devices else packaged_device_keys()
    targets = {key: load_device(key) for key in keys}  # unknown names are refused before any work
    cand_dir, ref_dir = Path(candidate), Path(reference)
    cand_manifest, ref_manifest = verify_bundle(cand_dir), verify_bundle(ref_dir)
    _check_same_task(cand_manifest, ref_manifest)

    rate = control_rate_hz or cand_manifest.get("control_rate_hz")
    period_ms = 1e3 / rate if rate else None
    quality = compare_quality(cand_dir, ref_dir, cand_manifest, ref_manifest, episodes,
                              Path(run_config) if run_config else None, thresholds.quality_max_drop_points)
    gates = [quality.pop("gate")]

    timing = measure_side_by_side(lambda: EdgePolicy.load(cand_dir), lambda: EdgePolicy.load(ref_dir),
                                  iterations, warmup, repeats)
    cand_lat, ref_lat, ratio = timing["candidate"], timing["reference"], timing["p99_ratio"]
    gates.append(gate_row("p99_vs_reference", ratio, thresholds.reference_p99_max_ratio, "x",
                          ratio <= thresholds.reference_p99_max_ratio, modeled=False,
                          per_repeat=timing["p99_ratio_per_repeat"],
                          detail=f"batch-1 p99 {cand_lat['p99_ms']:.4g} ms vs {ref_lat['p99_ms']:.4g} ms; median of "
                                 f"{repeats} repeats ({', '.join(f'{r:.3g}' for r in timing['p99_ratio_per_repeat'])}) "
                                 f"of {iterations} interleaved calls each"))

    cand_costs = node_costs(cand_dir / POLICY_FILE, batch=1)
    ref_costs = node_costs(ref_dir / POLICY_FILE, batch=1)
    modeled = {key: {"candidate": model_device(cand_costs, device, rate),
                     "reference": model_device(ref_costs, device, rate)} for key, device in targets.items()}
    gates += latency_gates(cand_lat["p99_ms"], thresholds.latency_p99_max_ms, period_ms,
                           thresholds.latency_within_control_period,
                           {key: {"latency_ms": m["candidate"]["latency_ms"], "source": targets[key].source}
                            for key, m in modeled.items() if not targets[key].get("measured_host")},
                           unknown_rate_fix="pass --control-rate HZ")
    for key, m in modeled.items():
        cand_usd, ref_usd = m["candidate"]["usd_per_million_actions"], m["reference"]["usd_per_million_actions"]
        gates.append(gate_row(f"{key}_cost_vs_reference", cand_usd / ref_usd, thresholds.cost_max_ratio, "x",
                              cand_usd / ref_usd <= thresholds.cost_max_ratio, modeled=True,
                              source=targets[key].source,
                              detail=f"${cand_usd:.4g} vs ${ref_usd:.4g} per million actions"))

    gates += delay_check(cand_dir, cand_manifest, {key: m["candidate"]["latency_ms"] for key, m in modeled.items()},
                         {key: device.name for key, device in targets.items()}, period_ms, episodes,
                         Path(run_config) if run_config else None, thresholds.require_delay_eval)

    return {"passed": all(g["passed"] for g in gates), "gates": gates,
            "timing": {k: timing[k] for k in ("p99_ratio", "p99_ratio_per_repeat", "iterations_per_repeat", "repeats")},
            "candidate": {"bundle": str(cand_dir), "policy_sha256": cand_manifest["files"][POLICY_FILE]["sha256"],
                          "latency": cand_lat},
            "reference": {"bundle": str(ref_dir), "policy_sha256": ref_manifest["files"][POLICY_FILE]["sha256"],
                          "latency": ref_lat},
            "quality": quality, "devices": modeled, "thresholds": dataclasses.asdict(thresholds),
            "control_rate_hz": rate, "measured_on": host_description(1)}


def format_gate_table(result: dict[str, Any]) -> None:
    """Print the gate table (gate, value, threshold, unit, PASS/FAIL) with rich."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=180)
    table = Table(title=escape(f"release gates: {result['candidate']['bundle']} vs reference "
                               f"{result['reference']['bundle']}"))
    for column in ("gate", "value", "threshold", "unit", "result", "how"):
        table.add_column(column, overflow="fold")
    for gate in result["gates"]:
        status = escape(gate_result(gate))
        status = f"[green]{status}[/green]" if gate["passed"] else f"[bold red]{status}[/bold red]"
        how = {"evaluation": "closed-loop returns",
               "delay_eval": "closed-loop returns with the modeled delay"}.get(
            gate.get("basis"), "modeled" if gate.get("modeled") else "measured on this host")
        if gate.get("detail"):
            how += f"; {gate['detail']}"
        table.add_row(escape(gate["name"]), fmt(gate["value"], missing="unknown"),
                      fmt(gate["threshold"], missing="unknown"), gate["unit"], status,
                      escape(how))
    console.print(table)
    console.print("release: " + ("PASS" if result["passed"] else "FAIL (promotion refused)"), highlight=False)
