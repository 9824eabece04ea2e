"""The ``physai`` command and the glue between Hydra and the pipeline.

    physai train [overrides]                                              python train.py, for an installed physai
    physai run RUN_DIR [--stages export,profile,gate] [key=value ...]   rerun stages on an existing run
    physai verify BUNDLE                                                  check a bundle's checksums
    physai bench edge BUNDLE                                              edge runtime vs onnxruntime vs torch
    physai bench sim [--task quadruped_velocity]                          batched engine vs SyncVectorEnv vs rollout
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from physai.errors import PhysaiError

log = logging.getLogger("physai")

GATE_FAILED_EXIT = 3
USER_ERROR_EXIT = 2


def route_env_id(argv: list[str]) -> list[str]:
    """``env.id=X`` without ``env=...`` selects the env option made for X, or the generic ``gym`` one.

    Otherwise the default option's threshold and tuned preset would silently apply to another task.
    """
    overrides = argv[1:]
    ids = [a.split("=", 1)[1] for a in overrides if a.startswith("env.id=")]
    if not ids or any(a.startswith(("env=", "+env=", "~env")) for a in overrides):
        return argv
    from physai.envs.registry import packaged_env_configs

    options = {config.get("id"): name for name, config in packaged_env_configs().items()}
    return [argv[0], f"env={options.get(ids[-1], 'gym')}", *overrides]


def run_composed(cfg: DictConfig) -> dict:
    """Run the pipeline for a Hydra-composed config in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return _run_and_report(cfg, run_dir)


def _run_and_report(cfg: DictConfig, run_dir: Path) -> dict:
    from physai.pipeline import run_pipeline

    try:
        summary = run_pipeline(cfg, run_dir)
    except PhysaiError as exc:
        log.error("%s", exc)
        print(f"physai: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    gates = summary.get("gates")
    log.info("run directory: %s", run_dir)
    if gates is not None:
        log.info("release gates: %s", "PASS" if gates["passed"] else "FAIL")
        if cfg.gate.strict and not gates["passed"]:
            sys.exit(GATE_FAILED_EXIT)
    return summary


def _cmd_run(args: argparse.Namespace) -> int:
    from physai.pipeline import load_run_config

    run_dir = Path(args.run_dir)
    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"pipeline.stages=[{args.stages}]")
    cfg = load_run_config(run_dir, overrides)
    _run_and_report(cfg, run_dir)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """``physai train [overrides]``: ``train.py`` for an installed physai (configs from the package)."""
    import hydra

    from physai.config import register_configs

    register_configs()
    sys.argv = route_env_id([f"{sys.argv[0]} train", *args.overrides])

    @hydra.main(version_base="1.3", config_path="pkg://physai.configs", config_name="config")
    def _main(cfg: DictConfig) -> None:
        run_composed(cfg)

    _main()
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from physai.edge.bundle import verify_bundle

    manifest = verify_bundle(args.bundle)
    print(f"ok: {args.bundle} (format {manifest['format_version']}, {len(manifest['files'])} file(s) verified)")
    return 0


def _cmd_bench_edge(args: argparse.Namespace) -> int:
    from physai.bench.edge import bench_edge

    figures = bench_edge(Path(args.bundle), iterations=args.iterations, rounds=args.rounds)
    print(json.dumps(figures))
    return 0


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from physai.bench.sim import bench_sim

    result = bench_sim(args.task, [int(n) for n in args.envs.split(",")], [int(t) for t in args.threads.split(",")],
                       args.seconds, Path(args.out), args.ppo_timesteps)
    _save_benchmark(Path(args.out) / f"sim_{args.task}.json", result)
    print(json.dumps(result))
    return 0


def _save_benchmark(path: Path, result: dict) -> None:
    """Keep a measured run with the command and the machine it came from, next to its plot."""
    import os
    import platform

    from physai.io import write_json_atomic

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    record = {"command": "physai " + " ".join(sys.argv[1:]),
              "machine": f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}", **result}
    write_json_atomic(path, record)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physai", description="physai: train, export and profile robot policies")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="rerun stages on an existing run directory with its saved config")
    run.add_argument("run_dir")
    run.add_argument("--stages", help="comma-separated stages, e.g. export,profile,gate")
    run.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    run.set_defaults(func=_cmd_run)
    train = sub.add_parser("train", help="compose configs and run the pipeline (like python train.py)",
                           add_help=False)
    train.add_argument("overrides", nargs=argparse.REMAINDER)
    train.set_defaults(func=_cmd_train)
    verify = sub.add_parser("verify", help="check every checksum of a bundle")
    verify.add_argument("bundle")
    verify.set_defaults(func=_cmd_verify)
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    edge = bench_sub.add_parser("edge", help="edge runtime vs bare onnxruntime vs torch eager, side by side")
    edge.add_argument("bundle", help="a bundle directory inside a run directory (its checkpoint gives the torch net)")
    edge.add_argument("--iterations", type=int, default=2000, help="timed calls per round and contender")
    edge.add_argument("--rounds", type=int, default=5, help="interleaved rounds, to spread machine noise evenly")
    edge.set_defaults(func=_cmd_bench_edge)
    sim = bench_sub.add_parser("sim", help="batched engine vs gymnasium SyncVectorEnv vs bare mujoco.rollout")
    sim.add_argument("--task", default="quadruped_velocity", help="a physai env option (configs/env/<task>.yaml)")
    sim.add_argument("--envs", default="1,16,64,256", help="comma-separated numbers of parallel envs")
    sim.add_argument("--threads", default="1,2", help="comma-separated engine thread counts")
    sim.add_argument("--seconds", type=float, default=1.0, help="timed seconds per contender and point")
    sim.add_argument("--out", default="benchmarks/results", help="where the scaling plot goes")
    sim.add_argument("--ppo-timesteps", type=int, default=20000,
                     help="PPO steps for the training-throughput comparison (0 skips it)")
    sim.set_defaults(func=_cmd_bench_sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command not in ("run", "train") or any("=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except PhysaiError as exc:
        print(f"physai: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
