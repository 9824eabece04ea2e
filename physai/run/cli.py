"""The ``physai`` command and the glue between Hydra and the pipeline.

    physai train [overrides]                                              python train.py, for an installed physai
    physai run RUN_DIR [--stages export,profile,gate] [key=value ...]   rerun stages on an existing run
    physai verify BUNDLE                                                  check a bundle's checksums
    physai profile BUNDLE [--iterations N | --duration S] [--batch 1,8]  trtexec-style latency of the edge runtime
    physai profile --onnx MODEL.onnx [--precision fp16] [--device KEY]  any ONNX file: measured here, modeled everywhere
    physai gate CANDIDATE --reference BUNDLE [--device KEY]              release gates; exit 3 when one fails
    physai bench edge [BUNDLE] [--out benchmarks/results]                 edge runtime vs onnxruntime (IOBinding) vs torch
    physai bench conv [--out benchmarks/results]                          host model vs measured on three conv nets
    physai bench sim [--task cartpole_balance]                            batched engine vs EnvPool, gymnasium, rollout
    physai bench synthetic [--tasks pendulum,cartpole_balance]            MBPO vs SAC real steps; generation rate
    physai bench return [--arms zoo,physai] [--seed 1]                    wall-clock to the zoo's HalfCheetah return
    physai bench robustness [--scenarios cartpole_balance/heavy_pole_push] prompted synthetic vs nominal vs DR
    physai bench trainers [--tasks cartpole_balance,quadruped_velocity]   rsl-rl's PPO vs SB3's, same engine and settings
    physai data info PATH                                                 a dataset's spaces, counts and provenance
    physai data export PATH --format lerobot OUT [--fps N] [--frames]     a dataset as a LeRobot v3.0 dataset
    physai sweep-report MULTIRUN_DIR [--preset NAME]                      IQM and mean per configuration, 95% bootstrap CIs,
                                                                          importances, the best configuration as a preset
    physai sweep resume MULTIRUN_DIR                                      finish a stopped optuna sweep: only missing trials
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from physai.core.errors import ConfigError, PhysaiError
from physai.core.io import write_json_atomic
from physai.core.manifest import read_json_object
from physai.deploy.devices.host import machine_description

# Each subcommand imports its implementation when it runs (see tests/test_layers.py), so `physai --help`,
# `physai verify` and `physai data info` load no trainer, torch or Hydra.
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
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from physai.run.pipeline import run_pipeline
        from physai.run.sweeps import run_trial

        # A failed trial is recorded in trial.json; the sweep goes on.
        return run_trial(cfg, run_dir, run_pipeline)
    return _run_and_report(cfg, run_dir)


def _run_and_report(cfg: DictConfig, run_dir: Path) -> dict:
    from physai.run.pipeline import run_pipeline

    try:
        summary = run_pipeline(cfg, run_dir)
    except PhysaiError as exc:
        log.error("%s", exc)
        print(f"physai: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", USER_ERROR_EXIT))  # 128 + signal for a stopped training run
    gates = summary.get("gates")
    log.info("run directory: %s", run_dir)
    if gates is not None:
        log.info("release gates: %s", "PASS" if gates["passed"] else "FAIL")
        if cfg.gate.strict and not gates["passed"]:
            sys.exit(GATE_FAILED_EXIT)
    return summary


def _cmd_run(args: argparse.Namespace) -> int:
    from physai.run.pipeline import load_run_config

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
    def _main(cfg: DictConfig) -> Optional[float]:
        from physai.run.sweeps import objective

        return objective(run_composed(cfg))  # what Hydra sweepers (optuna) maximize

    _main()
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from physai.edge.bundle import verify_bundle

    manifest = verify_bundle(args.bundle)
    print(f"ok: {args.bundle} (format {manifest['format_version']}, {len(manifest['files'])} file(s) verified)")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from physai.synthetic.dataset import dataset_info, format_dataset_info

    info = dataset_info(args.path)
    print(json.dumps(info, indent=2, default=str) if args.json else format_dataset_info(info))
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from physai.synthetic.dataset import read_dataset, read_metadata
    from physai.synthetic.dataset.lerobot import export_lerobot, refuse_export_target

    path, out = Path(args.path), Path(args.out)
    refuse_export_target(out)  # before anything is read or built
    task_id = read_metadata(path)["task_id"]
    task = None
    if args.fps is None or args.frames:
        try:
            task = _dataset_task(path, task_id)
        except PhysaiError as exc:
            raise ConfigError(f"cannot build the dataset's task {task_id!r} ({exc}); pass the rate as --fps N "
                              f"(--frames needs the task)") from exc
    fps = args.fps if args.fps is not None else _control_rate(task, task_id)
    images = None
    if args.frames:
        from physai.report.video import NoVideo, open_render_env, replayed_frames

        try:  # rendering must work before the first episode is replayed
            env, _, _ = open_render_env(task, 0)
            env.close()
        except NoVideo as exc:
            raise ConfigError(f"--frames renders each episode by replaying it, and this machine cannot render: {exc}; "
                              f"export without --frames") from exc
        spec = getattr(task, "task_spec", None)
        camera = (spec.camera if spec is not None else None) or "render"
        images = replayed_frames(task, read_dataset(path), camera)
    export_lerobot(path, out, fps=fps, images=images)
    print(f"wrote {out} (LeRobot v3.0, {fps:g} fps{', camera frames rendered by replay' if images else ''}); load "
          f"it with lerobot.datasets.lerobot_dataset.LeRobotDataset(repo_id, root='{out}')")
    return 0


def _dataset_task(dataset: Path, task_id: str):
    """The dataset's task: its run's configured task (``<run>/datasets/<name>``), since a run may change the
    task's settings, else the task id's registered definition."""
    from omegaconf import OmegaConf

    from physai.config.compose import CONFIG_FILE, build_task
    from physai.envs.gym_task import GymTask

    run_config = dataset.resolve().parent.parent / CONFIG_FILE
    return build_task(OmegaConf.load(run_config).env) if run_config.is_file() else GymTask(task_id)


def _control_rate(task, task_id: str) -> float:
    """The rate the dataset's task acts at."""
    try:
        rate = task.control_rate_hz()
    except PhysaiError as exc:
        raise ConfigError(f"cannot tell the control rate of the dataset's task {task_id!r} ({exc}); "
                          f"pass it as --fps N") from exc
    if not rate:
        raise ConfigError(f"task {task_id!r} does not say its control rate; pass it as --fps N")
    return rate


def _cmd_profile(args: argparse.Namespace) -> int:
    from physai.deploy import profiling

    if (args.bundle is None) == (args.onnx is None):  # checked before a bundle is read
        raise ConfigError("give a bundle directory or --onnx MODEL.onnx (one of them), e.g. physai profile "
                          "outputs/.../bundle, or physai profile --onnx encoder.onnx --batch 1,8")
    if args.onnx is not None:
        if args.variant is not None:
            raise ConfigError("--variant picks one of a bundle's graphs; with --onnx give --precision fp16|int8")
        devices = [d.strip() for item in (args.device or []) for d in item.split(",") if d.strip()]
        result = profiling.profile_onnx(
            args.onnx, precision=args.precision or "fp32",
            batches=profiling.parse_batches(args.batch) if args.batch is not None else None,
            devices=devices or None, iterations=args.iterations, duration_s=args.duration,
            warmup=profiling.ONNX_WARMUP_CALLS if args.warmup is None else args.warmup, threads=args.threads,
            out_dir=args.out)
        profiling.print_onnx_profile(result)
        return 0
    for flag, value in (("--precision", args.precision), ("--device", args.device)):
        if value is not None:
            raise ConfigError(f"{flag} applies to --onnx MODEL.onnx; for a bundle, --variant fp32|fp16|int8 picks "
                              f"the graph and `physai gate --device` models the targets")
    result = profiling.profile_bundle(
        Path(args.bundle), iterations=args.iterations, duration_s=args.duration,
        warmup=200 if args.warmup is None else args.warmup,
        batches=profiling.parse_batches("1,8,64,256" if args.batch is None else args.batch), threads=args.threads,
        variant=args.variant or "fp32", out_dir=args.out)
    profiling.print_profile(result)
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from physai.deploy.release import Thresholds, format_gate_table, release_gates

    thresholds = Thresholds.defaults()
    for name in ("quality_max_drop_points", "reference_p99_max_ratio", "latency_p99_max_ms", "cost_max_ratio"):
        if getattr(args, name) is not None:
            setattr(thresholds, name, getattr(args, name))
    thresholds.require_delay_eval = thresholds.require_delay_eval and args.require_delay_eval
    devices = [d.strip() for item in (args.device or []) for d in item.split(",") if d.strip()]
    result = release_gates(args.candidate, args.reference, devices=devices or None,
                           control_rate_hz=args.control_rate, thresholds=thresholds, iterations=args.iterations,
                           repeats=args.repeats, episodes=args.episodes, run_config=args.config)
    format_gate_table(result)
    if args.json:
        write_json_atomic(args.json, result)
    return 0 if result["passed"] else GATE_FAILED_EXIT


def _cmd_sweep_report(args: argparse.Namespace) -> int:
    from physai.run.sweeps import format_report, sweep_report

    report = sweep_report(Path(args.sweep_dir), out_dir=args.out, resamples=args.resamples, seed=args.seed,
                          preset_name=args.preset)
    print("\n".join(format_report(report)))
    return 0


def _cmd_sweep_resume(args: argparse.Namespace) -> int:
    """``physai sweep resume DIR``: the sweep's own command line again, in its directory (only missing trials run)."""
    from physai.run.sweeps import resume_arguments

    args.overrides = resume_arguments(Path(args.sweep_dir))
    print(f"physai: resuming: physai train {shlex.join(args.overrides)}", flush=True)
    return _cmd_train(args)


def _cmd_bench_edge(args: argparse.Namespace) -> int:
    from physai.bench.edge import bench_edge

    figures = bench_edge(Path(args.bundle) if args.bundle else None, iterations=args.iterations, rounds=args.rounds,
                         warmup=args.warmup, out_dir=Path(args.out) if args.out else None,
                         command="physai " + " ".join(sys.argv[1:]))
    print(json.dumps(figures, default=str))
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_arg(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a whole number; give comma-separated integers, "
                          f"e.g. 100,101") from None


def _print_markdown(path: str, tables, result_file: str) -> int:
    """``--markdown JSON``: print the README's tables from a benchmark's saved result; train nothing."""
    fix = f"give the {result_file} a benchmark wrote"
    print(tables(read_json_object(Path(path), error=ConfigError, fix=fix,
                                  missing=f"--markdown {path} does not exist; {fix}")))
    return 0


def _cmd_bench_conv(args: argparse.Namespace) -> int:
    from physai.bench.conv_model import bench_conv, summary_lines

    result = bench_conv(Path(args.out) if args.out else None, rounds=args.rounds, round_s=args.seconds,
                        command="physai " + " ".join(sys.argv[1:]),
                        onnx_dir=Path(args.onnx_dir) if args.onnx_dir else None)
    print("\n".join(summary_lines(result)))
    print(f"host model within +-{100 * result['target']['abs_error_max']:.0f}% on every net: "
          f"{'met' if result['target']['met'] else 'MISSED'} (worst {100 * result['target']['worst_abs_error']:.1f}%)")
    return 0


def _cmd_bench_synthetic(args: argparse.Namespace) -> int:
    from physai.bench.synthetic import RESULT_FILE, bench_synthetic, markdown_tables

    if args.markdown:
        return _print_markdown(args.markdown, markdown_tables, RESULT_FILE)
    bench_synthetic(_csv(args.tasks), [_int_arg("--seeds", s) for s in _csv(args.seeds)], Path(args.out),
                    workers=args.workers, command="physai " + " ".join(sys.argv[1:]),
                    work_dir=Path(args.work) if args.work else None)
    return 0


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    if args.camera:
        from physai.bench.camera import bench_camera, print_camera_table

        result = bench_camera(args.task, args.camera, _int_arg("--size", args.size),
                              [_int_arg("--envs", n) for n in _csv(args.envs)],
                              [_int_arg("--threads", t) for t in _csv(args.threads)], args.seconds, args.rounds)
        print_camera_table(result)
        _save_benchmark(Path(args.out) / f"sim_camera_{args.task}.json", result)
        print(json.dumps(result))
        return 0
    from physai.bench.sim import bench_sim, markdown_table

    if args.markdown:
        return _print_markdown(args.markdown, markdown_table, "sim_<task>.json")
    result = bench_sim(args.task, [_int_arg("--envs", n) for n in _csv(args.envs)],
                       [_int_arg("--threads", t) for t in _csv(args.threads)], args.seconds, args.rounds, Path(args.out), args.ppo_timesteps, args.ppo_repeats,
                       use_envpool=args.envpool, backend=args.backend)
    _save_benchmark(Path(args.out) / f"sim_{args.task}{'_warp' if args.backend == 'warp' else ''}.json", result)
    print(json.dumps(result))
    return 0


def _cmd_bench_robustness(args: argparse.Namespace) -> int:
    from physai.bench.robustness import RESULT_FILE, bench_robustness, markdown_tables

    if args.markdown:
        return _print_markdown(args.markdown, markdown_tables, RESULT_FILE)
    bench_robustness(_csv(args.scenarios), [_int_arg("--seeds", s) for s in _csv(args.seeds)],
                     Path(args.out) if args.out else None, workers=args.workers,
                     command="physai " + " ".join(sys.argv[1:]), work_dir=Path(args.work) if args.work else None,
                     arms=_csv(args.arms))
    return 0


def _cmd_bench_trainers(args: argparse.Namespace) -> int:
    from physai.bench.trainers import RESULT_FILE, bench_trainers, markdown_table

    if args.markdown:
        return _print_markdown(args.markdown, markdown_table, RESULT_FILE)
    result = bench_trainers(_csv(args.tasks), _int_arg("--timesteps", args.timesteps),
                            _int_arg("--repeats", args.repeats), _int_arg("--episodes", args.episodes))
    _save_benchmark(Path(args.out) / RESULT_FILE, result)
    print(markdown_table(result))
    return 0


def _cmd_bench_return(args: argparse.Namespace) -> int:
    from physai.bench.time_to_return import ARMS, bench_time_to_return

    overrides: dict[str, list[str]] = {}
    for item in args.set or []:
        arm, _, override = item.partition(":")
        if arm not in ARMS or "=" not in override:
            raise ConfigError(f"--set {item!r}: write ARM:key=value with ARM one of {', '.join(ARMS)}, "
                              f"e.g. --set physai:algo.learning_rate=1e-4")
        overrides.setdefault(arm, []).append(override)
    result = bench_time_to_return(_csv(args.arms), args.seed, args.budget, args.eval_every, args.episodes, args.target,
                                  Path(args.out) if args.out else None, stop_at_target=args.stop_at_target,
                                  overrides=overrides, command="physai " + " ".join(sys.argv[1:]))
    print(json.dumps({k: v for k, v in result.items() if k != "arms"}))
    return 0


def _save_benchmark(path: Path, result: dict) -> None:
    """Keep a measured run with the command and the machine it came from, next to its plot."""
    record = {"command": "physai " + " ".join(sys.argv[1:]), "machine": machine_description(), **result}
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
    data = sub.add_parser("data", help="transition datasets (real and synthetic)")
    data_sub = data.add_subparsers(dest="data", required=True)
    info = data_sub.add_parser("info", help="what a dataset holds: spaces, counts, provenance, checksum")
    info.add_argument("path", help="a dataset directory, e.g. <run_dir>/datasets/synthetic")
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    info.set_defaults(func=_cmd_data_info)
    export = data_sub.add_parser("export", help="write a dataset in another format: LeRobot v3.0 (Parquet, MP4, "
                                                "meta/) for robot-learning tools")
    export.add_argument("path", help="a dataset directory, e.g. <run_dir>/datasets/real")
    export.add_argument("--format", required=True, choices=["lerobot"], help="the output format")
    export.add_argument("out", help="a new (or empty) directory for the exported dataset")
    export.add_argument("--fps", type=float, help="frames per second (default: the task's control rate)")
    export.add_argument("--frames", action="store_true",
                        help="add camera frames (observation.images.<camera>): each real episode replayed in its "
                             "task from its reset seed, checked against the recorded observations, and rendered")
    export.set_defaults(func=_cmd_data_export)
    profile = sub.add_parser("profile", help="trtexec-style latency of a bundle in the edge runtime, or of any "
                                             "ONNX file (--onnx): measured on this host, modeled on every device")
    profile.add_argument("bundle", nargs="?", help="a bundle directory (holds manifest.json and policy.onnx)")
    profile.add_argument("--onnx", metavar="MODEL.onnx", help="instead of a bundle: any ONNX file, as trtexec "
                                                              "--onnx; also modeled on every device")
    amount = profile.add_mutually_exclusive_group()
    amount.add_argument("--iterations", type=int, help="timed calls per batch size (default: 1000 for a bundle; "
                                                       "--onnx times for 3 s, as trtexec)")
    amount.add_argument("--duration", type=float, help="or: seconds of timed calls per batch size")
    profile.add_argument("--warmup", type=int, help="untimed calls before each batch size (default 200; --onnx 10)")
    profile.add_argument("--batch", help="comma-separated batch sizes (default 1,8,64,256; --onnx: the model's "
                                         "fixed batch, and required where its batch axis is dynamic)")
    profile.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    profile.add_argument("--variant", choices=["fp32", "fp16", "int8"],
                         help="which of the bundle's graphs to time (default fp32)")
    profile.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                         help="--onnx: the precision to time on the host (the file converted, as trtexec "
                              "--fp16/--int8) and to headline on the devices (default fp32)")
    profile.add_argument("--device", action="append", help="--onnx: target(s) from configs/device to model "
                                                           "(repeat or comma-separate; default: all)")
    profile.add_argument("--out", help="where profile.json and the histogram go (default: the run's "
                                       "report/profile/, or ./physai-profile)")
    profile.set_defaults(func=_cmd_profile)
    gate = sub.add_parser("gate", help="may CANDIDATE replace REFERENCE? quality, p99, latency and cost gates")
    gate.add_argument("candidate", help="the bundle directory to promote")
    gate.add_argument("--reference", required=True, help="the bundle directory now deployed")
    gate.add_argument("--device", action="append", help="target(s) from configs/device for the modeled gates "
                                                        "(repeat or comma-separate; default: all)")
    gate.add_argument("--control-rate", type=float, help="control loop rate in Hz (default: the candidate's manifest)")
    gate.add_argument("--episodes", type=int, help="evaluate both bundles afresh on this many shared seeds")
    gate.add_argument("--config", help="the run config.yaml that builds the task (default: beside each bundle)")
    gate.add_argument("--iterations", type=int, default=10000, help="interleaved timed calls per bundle and repeat")
    gate.add_argument("--repeats", type=int, default=3, help="latency repeats on fresh sessions (median p99 ratio)")
    gate.add_argument("--max-quality-drop", dest="quality_max_drop_points", type=float,
                      help="score points (default gate.quality_max_drop_points = 2)")
    gate.add_argument("--max-p99-ratio", dest="reference_p99_max_ratio", type=float,
                      help="candidate p99 / reference p99 (default 1.2)")
    gate.add_argument("--max-latency-ms", dest="latency_p99_max_ms", type=float, help="absolute p99 cap (default 50)")
    gate.add_argument("--max-cost-ratio", dest="cost_max_ratio", type=float,
                      help="candidate / reference modeled cost per action (default 1.2)")
    gate.add_argument("--no-require-delay-eval", dest="require_delay_eval", action="store_false", default=True,
                      help="let the release pass when the solves-under-delay check could not be run (it still "
                           "reads NOT RUN); by default an unchecked target fails")
    gate.add_argument("--json", help="also write every figure to this JSON file")
    gate.set_defaults(func=_cmd_gate)
    report = sub.add_parser("sweep-report", help="aggregate a multirun directory: IQM and mean return per "
                                                 "configuration across seeds, 95%% bootstrap CIs, plot, best bundle")
    report.add_argument("sweep_dir", help="a multirun directory, e.g. multirun/2026-11-23/16-02-00")
    report.add_argument("--out", help="where sweep_report.{md,json,png} go (default: the sweep directory)")
    report.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    report.add_argument("--preset", metavar="NAME", help="also install the best configuration as "
                                                         "configs/preset/NAME.yaml, for preset=NAME")
    report.set_defaults(func=_cmd_sweep_report)
    sweep = sub.add_parser("sweep", help="optuna sweeps (hydra/sweeper=physai_optuna)")
    sweep_sub = sweep.add_subparsers(dest="sweep", required=True)
    resume = sweep_sub.add_parser("resume", help="finish a stopped optuna sweep in its directory: its own command "
                                                 "line again, running only the missing trials")
    resume.add_argument("sweep_dir", help="the sweep's directory, e.g. multirun/2026-11-23/16-02-00")
    resume.set_defaults(func=_cmd_sweep_resume)
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    edge = bench_sub.add_parser("edge", help="edge runtime vs bare onnxruntime (IOBinding, run) vs torch eager, "
                                             "calls interleaved one by one")
    edge.add_argument("bundle", nargs="?", help="a bundle directory, ideally inside a run directory (its checkpoint "
                                                "gives the torch net); default: train one first (experiment=smoke)")
    edge.add_argument("--iterations", type=int, default=10000, help="timed calls per round and contender")
    edge.add_argument("--rounds", type=int, default=10, help="rounds, for the spread (at least 5 recommended)")
    edge.add_argument("--warmup", type=int, default=1000, help="untimed interleaved calls before each round")
    edge.add_argument("--out", help="where edge.json and edge.png go, e.g. benchmarks/results (default: print only)")
    edge.set_defaults(func=_cmd_bench_edge)
    conv = bench_sub.add_parser("conv", help="host model vs measured p50 on three conv nets (64x64 NatureCNN, "
                                             "96x96 IMPALA, 224x224 ResNet-18), predicted before timing")
    conv.add_argument("--rounds", type=int, default=5, help="rounds that time every net in turn")
    conv.add_argument("--seconds", type=float, default=1.0, help="timed seconds per net and round")
    conv.add_argument("--out", help="where conv_host_model.json goes, e.g. benchmarks/results (default: print only)")
    conv.add_argument("--onnx-dir", help="also keep the three exported ONNX files here (for physai profile --onnx)")
    conv.set_defaults(func=_cmd_bench_conv)
    sim = bench_sub.add_parser("sim", help="batched engine vs EnvPool, gymnasium Sync/Async and bare mujoco.rollout")
    sim.add_argument("--task", default="cartpole_balance",
                     help="a physai env option (configs/env/<task>.yaml), e.g. physai_half_cheetah")
    sim.add_argument("--envs", default="16,64,256,1024", help="comma-separated numbers of parallel envs")
    sim.add_argument("--threads", default="1,2", help="comma-separated thread counts (physai, rollout, EnvPool)")
    sim.add_argument("--seconds", type=float, default=2.0, help="timed seconds per contender and point")
    sim.add_argument("--rounds", type=int, default=5, help="interleaved rounds the seconds are split into")
    sim.add_argument("--out", default="benchmarks/results", help="where the JSON and the scaling plot go")
    sim.add_argument("--ppo-timesteps", type=int, default=20000,
                     help="PPO steps per training-throughput run (0: skip)")
    sim.add_argument("--ppo-repeats", type=int, default=3, help="alternating repeats of the PPO contenders")
    sim.add_argument("--no-envpool", dest="envpool", action="store_false",
                     help="measure without EnvPool (it comes with the bench extra)")
    sim.add_argument("--backend", choices=("rollout", "warp"), default="rollout",
                     help="warp: also the engine on the MuJoCo Warp backend (the warp extra; GPU when present)")
    sim.add_argument("--camera", help="measure rendered env-steps/s from this MJCF camera instead (e.g. side), "
                                      "against gymnasium's rgb_array rendering")
    sim.add_argument("--markdown", metavar="JSON", default=None,
                     help="print the README's table from a saved sim_<task>.json and measure nothing")
    sim.add_argument("--size", default="64", help="camera frame height and width with --camera")
    sim.set_defaults(func=_cmd_bench_sim)
    synthetic = bench_sub.add_parser("synthetic", help="real steps MBPO needs to reach SAC's return; generation rate")
    synthetic.add_argument("--tasks", default="pendulum,cartpole_balance", help="comma-separated env options")
    synthetic.add_argument("--seeds", default="100,101,102,103,104",
                           help="comma-separated training seeds, the same for every arm (>= 2 for a CI); the "
                                "default five were never used to choose a setting")
    synthetic.add_argument("--markdown", metavar="JSON", default=None,
                           help="print the README's tables from a synthetic.json already written; train nothing")
    synthetic.add_argument("--workers", type=int, default=None, help="training processes (default: one per core)")
    synthetic.add_argument("--out", default="benchmarks/results", help="where synthetic.json and the plot go")
    synthetic.add_argument("--work", default="benchmarks/work/synthetic",
                           help="where each finished run is kept: the same command run again trains only the runs it "
                                "lacks (clear it after changing the code; '' keeps nothing)")
    synthetic.set_defaults(func=_cmd_bench_synthetic)
    robust = bench_sub.add_parser("robustness", help="edge-case and nominal return of SAC on nominal data, MBPO "
                                                     "with prompted synthetic data, and SAC with the scenario as DR")
    robust.add_argument("--scenarios", default="cartpole_balance/heavy_pole_push,car_lane/low_friction_push",
                        help="comma-separated scenario options with a benchmark plan")
    robust.add_argument("--seeds", default="100,101,102,103,104",
                        help="comma-separated training seeds (>= 2); the default five were never used for tuning")
    robust.add_argument("--workers", type=int, default=None, help="training processes (default: one per core)")
    robust.add_argument("--arms", default="nominal,prompted,randomized,unprompted",
                        help="comma-separated arms to train; fewer than all keeps their runs in --work and analyzes "
                             "nothing (train the cheap SAC arms first, then run without --arms)")
    robust.add_argument("--markdown", metavar="JSON", default=None,
                        help="print the README's tables from a robustness.json already written; train nothing")
    robust.add_argument("--out", default="benchmarks/results", help="where robustness.json and the plot go")
    robust.add_argument("--work", default="benchmarks/work/robustness",
                        help="where each finished run is kept: the same command run again trains only the runs it "
                             "lacks (runs are keyed by their plan, arm and seed: clear it after changing the code, a "
                             "preset or a scenario file; '' keeps nothing)")
    robust.set_defaults(func=_cmd_bench_robustness)
    ret = bench_sub.add_parser("return", help="training wall-clock to a fixed deterministic HalfCheetah return: "
                                              "physai's preset vs the stock RL Zoo recipe")
    ret.add_argument("--arms", default="zoo,physai", help="comma-separated arms: zoo, physai")
    ret.add_argument("--seed", type=int, default=1, help="training seed of every arm (0 was used for tuning)")
    ret.add_argument("--budget", type=int, default=4_000_000, help="env steps an arm may take at most")
    ret.add_argument("--eval-every", type=int, default=50_000, help="env steps between evaluations")
    ret.add_argument("--episodes", type=int, default=5, help="deterministic evaluation episodes")
    ret.add_argument("--target", type=float, default=5819.0, help="return to reach (the zoo's published score)")
    ret.add_argument("--no-stop", dest="stop_at_target", action="store_false",
                     help="train every arm for its whole budget instead of stopping at the target")
    ret.add_argument("--set", action="append", metavar="ARM:KEY=VALUE",
                     help="a Hydra override for one arm, e.g. physai:algo.learning_rate=1e-4 (repeatable)")
    ret.add_argument("--out", default="benchmarks/results", help="where time_to_return.json and the plot go")
    ret.set_defaults(func=_cmd_bench_return)
    trainers = bench_sub.add_parser("trainers", help="PPO env-steps/s and final return: rsl-rl's (algo=rsl_ppo) vs "
                                                     "SB3's, on the same engine with the same settings")
    trainers.add_argument("--tasks", default="cartpole_balance,quadruped_velocity", help="comma-separated physai tasks")
    trainers.add_argument("--timesteps", default="200000", help="env steps each run trains")
    trainers.add_argument("--repeats", default="3", help="alternating runs per arm (seeds 0..repeats-1)")
    trainers.add_argument("--episodes", default="10", help="deterministic evaluation episodes per final policy")
    trainers.add_argument("--markdown", metavar="JSON", default=None,
                          help="print the README's table from a trainers.json already written; train nothing")
    trainers.add_argument("--out", default="benchmarks/results", help="where trainers.json goes")
    trainers.set_defaults(func=_cmd_bench_trainers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `physai train` passes Hydra's own flags through (-m/--multirun, --cfg job, ...).
        if args.command not in ("run", "train") or (args.command == "run" and any("=" not in i for i in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*extra, *args.overrides] if args.command == "train" else [*args.overrides, *extra]
    try:
        return args.func(args)
    except PhysaiError as exc:
        print(f"physai: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", USER_ERROR_EXIT)


if __name__ == "__main__":
    sys.exit(main())
