"""The schema of the Hydra tree in ``configs/``.

Each dataclass is registered in Hydra's ConfigStore, and the YAML files of a group list
the matching schema first in their defaults, so a typo'd key or a wrong type is refused at
composition. Ranges live in field metadata (``bounds``/``choices``); a rule that ties several
fields of one section together lives in that section's ``check(node, prefix)``, the way each SB3
algorithm validates its own arguments. ``physai.config.validate`` applies both, with the full key in
the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from physai.core.errors import ConfigError
from physai.edge.fallback import FALLBACK_MODULE, FALLBACKS
from physai.envs.spec import backend_class


def bounded(default: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, hint: str = "") -> Any:
    """A field whose value must lie in [low, high] (or (low, high] with ``low_open``)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "hint": hint})


def one_of(default: Any, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


STAGE_NAMES = ("collect", "world_model", "synthesize", "train", "evaluate", "export", "profile", "delay_eval", "gate",
               "report")

# Config keys that steer physai itself; every other algo key is a keyword of the SB3 class.
ALGO_FRAMEWORK_KEYS = frozenset({
    "_target_", "name", "total_timesteps", "n_envs", "normalize_obs", "normalize_reward", "clip_obs", "net_arch",
    "activation", "log_std_init", "ortho_init", "checkpoint_every_steps", "keep_checkpoints", "torch_threads",
    "tuned_for"})
# Distillation settings physai resolves into a teacher policy before training (physai.train.distill).
TEACHER_KEYS = frozenset({"teacher_run", "teacher_preset", "teacher_timesteps"})
# SAC-family settings physai turns into the critic network (physai.train.critics), not SB3 keywords.
SAC_CRITIC_KEYS = frozenset({"critic_dropout", "critic_layer_norm"})
# rsl-rl's PPO settings without an SB3 counterpart (physai.train.rsl_ppo).
RSL_PPO_KEYS = frozenset({"schedule", "desired_kl", "device"})

# Keys that change how a run is executed or judged, not which policy it trains. Everything
# else is the run's training identity: hashed into the bundle's provenance, and frozen once
# a run directory exists (reruns and resumes may change only these).
NON_IDENTITY_KEYS = ("pipeline", "tracking", "resume", "evaluate", "export", "guard", "profile", "delay_eval", "gate",
                     "device", "experiment", "sweep", "algo.total_timesteps", "algo.checkpoint_every_steps",
                     "algo.keep_checkpoints", "algo.torch_threads", "algo.device", "env.nthread", "env.backend",
                     # the dream video and the trust report come after the synthetic dataset is written: reports, not data
                     "synthetic.synthesize.dream_video", "synthetic.synthesize.dream_steps",
                     "synthetic.synthesize.trust_steps")


@dataclass
class EnvConfig:
    """A task: any gymnasium id, built by the factory named in ``_target_``."""

    _target_: str = "physai.envs.gym_task.GymTask"
    id: str = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)
    max_episode_steps: Optional[int] = bounded(None, low=1)
    # None: use the gymnasium spec's reward_threshold.
    solved_threshold: Optional[float] = None
    # None: derive from the simulator (1 / env.dt).
    control_rate_hz: Optional[float] = bounded(None, low=0.0, low_open=True)
    # A physai task's declarative definition (MJCF + terms); see configs/env/cartpole_balance.yaml.
    task: Dict[str, Any] = field(default_factory=dict)
    # The gymnasium id a physai task re-declares (physai/HalfCheetah-v5 -> HalfCheetah-v5): presets
    # tuned for that id (algo.tuned_for) apply to the twin too.
    twin_of: Optional[str] = None
    # Event terms added to a physai task in the training batch only (e.g. randomize_action_delay), so
    # evaluation, parity and delay_eval run the nominal task; see configs/preset/ppo_reach2d_delay.yaml.
    train_events: Dict[str, Any] = field(default_factory=dict)
    # Threads of the batched engine (None: all cores).
    nthread: Optional[int] = bounded(None, low=1)
    # The physics backend of physai tasks: a name in physai.envs.spec.BACKENDS (rollout: MuJoCo's C engine on
    # CPU threads; warp, warp_cuda: MuJoCo Warp) or a dotted path to a backend class.
    backend: Optional[str] = None  # None: rollout

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        backend = node.get("backend")
        if backend:
            backend_class(str(backend))  # refuses, naming env.backend and the short names


@dataclass
class AlgoConfig:
    """What every algorithm shares: budget, parallel envs, normalization, checkpoints, network."""

    _target_: str = MISSING
    name: str = MISSING
    total_timesteps: int = bounded(100_000, low=1)
    n_envs: int = bounded(1, low=1, hint="one or more parallel environments")
    normalize_obs: bool = True
    normalize_reward: bool = False
    clip_obs: float = bounded(10.0, low=0.0, low_open=True)
    learning_rate: float = bounded(3e-4, low=0.0, low_open=True, hint="a positive step size such as 3e-4")
    gamma: float = bounded(0.99, low=0.0, high=1.0)
    batch_size: int = bounded(64, low=1)
    net_arch: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = one_of("tanh", "tanh", "relu", "elu")
    log_std_init: float = 0.0
    checkpoint_every_steps: int = bounded(10_000, low=1)
    keep_checkpoints: int = bounded(3, low=1)
    torch_threads: int = bounded(1, low=1)
    # Set by presets: the env id their hyperparameters were tuned for.
    tuned_for: Optional[str] = None

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        widths = list(node.net_arch)
        if any(int(width) < 1 for width in widths):
            raise ConfigError(f"{prefix}net_arch={widths} has a layer of width < 1; every hidden layer needs at least "
                              f"one unit, e.g. {prefix}net_arch=[64,64] (or {prefix}net_arch=[] for a linear policy)")


@dataclass
class PPOConfig(AlgoConfig):
    _target_: str = "stable_baselines3.PPO"
    name: str = "ppo"
    # PPO normalizes advantages per minibatch: a minibatch of one has no spread.
    batch_size: int = bounded(64, low=2, hint="PPO normalizes advantages per minibatch, so at least 2")
    n_steps: int = bounded(2048, low=2)
    n_epochs: int = bounded(10, low=1)
    gae_lambda: float = bounded(0.95, low=0.0, high=1.0)
    clip_range: float = bounded(0.2, low=0.0, low_open=True)
    ent_coef: float = bounded(0.0, low=0.0)
    vf_coef: float = bounded(0.5, low=0.0)
    max_grad_norm: float = bounded(0.5, low=0.0, low_open=True)
    ortho_init: bool = True

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        AlgoConfig.check(node, prefix)
        rollout = node.n_steps * node.n_envs
        if node.batch_size > rollout:
            raise ConfigError(f"{prefix}batch_size={node.batch_size} is larger than one rollout ({prefix}n_steps x "
                              f"{prefix}n_envs = {rollout}); lower {prefix}batch_size or raise {prefix}n_steps")


@dataclass
class RslPPOConfig(PPOConfig):
    """PPO from rsl-rl-lib on the batched engine (physai.train.rsl_ppo): PPO's keys keep their meaning
    (``batch_size`` is the minibatch, so a rollout splits into n_steps x n_envs / batch_size of them); the
    defaults are rsl-rl's own, as Isaac Lab and mjlab train with them."""

    _target_: str = "physai.train.rsl_ppo.RslPPO"
    name: str = "rsl_ppo"
    n_envs: int = bounded(64, low=1)
    n_steps: int = bounded(24, low=2)
    batch_size: int = bounded(384, low=2, hint="the minibatch; at least 2 to normalize advantages")
    n_epochs: int = bounded(5, low=1)
    learning_rate: float = bounded(1e-3, low=0.0, low_open=True, hint="a positive step size such as 1e-3")
    ent_coef: float = bounded(0.01, low=0.0)
    vf_coef: float = bounded(1.0, low=0.0)
    max_grad_norm: float = bounded(1.0, low=0.0, low_open=True)
    activation: str = one_of("elu", "tanh", "relu", "elu")
    net_arch: List[int] = field(default_factory=lambda: [128, 128])
    # "adaptive": the learning rate follows the KL divergence of each minibatch towards desired_kl; "fixed": not.
    schedule: str = one_of("adaptive", "adaptive", "fixed")
    desired_kl: float = bounded(0.01, low=0.0, low_open=True)
    # Where rsl-rl's networks and rollout storage live: "cuda" keeps a GPU simulator's batches on the GPU
    # (env.backend=warp); on the CPU engine the small default networks run faster on the CPU.
    device: str = one_of("cpu", "cpu", "cuda")


@dataclass
class SACConfig(AlgoConfig):
    _target_: str = "stable_baselines3.SAC"
    name: str = "sac"
    normalize_obs: bool = False
    batch_size: int = bounded(256, low=1)
    net_arch: List[int] = field(default_factory=lambda: [256, 256])
    activation: str = one_of("relu", "tanh", "relu", "elu")
    log_std_init: float = -3.0
    buffer_size: int = bounded(1_000_000, low=1)
    learning_starts: int = bounded(10_000, low=0)
    tau: float = bounded(0.005, low=0.0, high=1.0, low_open=True)
    train_freq: int = bounded(1, low=1)
    gradient_steps: int = bounded(1, low=-1)
    ent_coef: str = "auto"
    # DroQ-style critic regularization for high gradient_steps (physai.train.critics); off = stock SB3.
    critic_dropout: float = bounded(0.0, low=0.0, high=0.9, hint="DroQ uses 0.01")
    critic_layer_norm: bool = False

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        AlgoConfig.check(node, prefix)
        if node.learning_starts >= node.total_timesteps:
            raise ConfigError(
                f"{prefix}learning_starts={node.learning_starts} >= {prefix}total_timesteps={node.total_timesteps}: "
                f"the policy would never be updated; lower {prefix}learning_starts (e.g. {prefix}learning_starts="
                f"{max(1, node.total_timesteps // 10)})")


@dataclass
class MBPOConfig(SACConfig):
    """Model-based SAC (MBPO): SAC's settings plus the ensemble world model and its rollouts.

    See physai.synthetic.mbpo; ``gradient_steps`` is MBPO's updates per real env step.
    """

    _target_: str = "physai.synthetic.mbpo.MBPO"
    name: str = "mbpo"
    learning_starts: int = bounded(1_000, low=0)
    gradient_steps: int = bounded(20, low=1, hint="gradient updates per real env step; MBPO uses 20")
    real_ratio: float = bounded(0.05, low=0.0, high=1.0)
    model_train_every: int = bounded(250, low=1)
    rollout_batch: int = bounded(20_000, low=1)
    # [start_step, end_step, min_len, max_len]: rollout length, linear in real env steps.
    rollout_length: List[int] = field(default_factory=lambda: [1_000, 10_000, 1, 5])
    max_disagreement: float = bounded(1.0, low=0.0, low_open=True)
    model_retain_rounds: int = bounded(4, low=1)
    # Share of every round's branches started from the run's scenario prompt (0: none).
    prompt_share: float = bounded(0.0, low=0.0, high=1.0)
    # The ensemble itself (members, width, fitting) is synthetic.world_model's: one world-model config.

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        SACConfig.check(node, prefix)
        schedule = list(node.rollout_length)
        if len(schedule) != 4 or min(schedule[2:], default=0) < 1 or schedule[1] < schedule[0]:
            raise ConfigError(f"{prefix}rollout_length={schedule} must be [start_step, end_step, min_len, max_len] "
                              f"with end_step >= start_step and lengths >= 1, e.g. {prefix}rollout_length="
                              f"[1000,10000,1,5]")


@dataclass
class DistillConfig(AlgoConfig):
    """Teacher-student distillation (DAgger) of a state policy into a camera policy; see physai.train.distill."""

    _target_: str = "physai.train.distill.DAggerDistill"
    name: str = "distill"
    normalize_obs: bool = False  # images are scaled in the network; a kept state part is small and bounded
    total_timesteps: int = bounded(50_000, low=1)
    n_envs: int = bounded(16, low=1)
    batch_size: int = bounded(256, low=1)
    activation: str = one_of("relu", "tanh", "relu", "elu")
    n_steps: int = bounded(256, low=1, hint="env steps per env in each DAgger round")
    n_epochs: int = bounded(4, low=1, hint="passes over the aggregated dataset after each round")
    beta_decay: float = bounded(0.5, low=0.0, high=1.0, hint="the teacher drives beta_decay**round of the steps")
    max_dataset: int = bounded(100_000, low=1, hint="labelled frames kept (the oldest go first)")
    max_grad_norm: float = bounded(1.0, low=0.0, low_open=True)
    image_shift: int = bounded(0, low=0, hint="DrQ's random shift in pixels, e.g. 4 for 64x64 frames; 0: off")
    # The teacher: a trained state policy's run directory, or a preset trained first on the task's state twin.
    teacher_run: Optional[str] = None
    teacher_preset: Optional[str] = None
    teacher_timesteps: Optional[int] = bounded(None, low=1)

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        AlgoConfig.check(node, prefix)
        if node.normalize_obs or node.normalize_reward:
            raise ConfigError(f"{prefix}normalize_obs and {prefix}normalize_reward must be false for distillation: "
                              f"images are scaled inside the network and there is no reward to learn from")


@dataclass
class PipelineConfig:
    stages: List[str] = field(default_factory=lambda: list(STAGE_NAMES))


@dataclass
class TrackingConfig:
    _target_: str = "physai.run.tracking.WandbTracker"
    mode: str = one_of("offline", "offline", "online", "disabled")
    project: str = "physai"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class PowerModeConfig:
    """One power mode of a board (nvpmodel on Jetson): its budget and its clocks relative to the published peaks."""

    name: str = MISSING
    power_w: float = bounded(MISSING, low=0.0, low_open=True)
    # Scales on the published figures: CPU clock (also scales the CPU-side overheads), GPU peak
    # (clock x share of active TPCs) and memory bandwidth (EMC clock).
    cpu_clock_scale: float = bounded(1.0, low=0.0, high=1.0, low_open=True)
    gpu_peak_scale: float = bounded(1.0, low=0.0, high=1.0, low_open=True)
    memory_scale: float = bounded(1.0, low=0.0, high=1.0, low_open=True)


@dataclass
class DeviceConfig:
    """Published figures of one compute target; every modeled number cites ``source``."""

    name: str = MISSING
    kind: str = one_of("cpu", "cpu", "gpu", "soc")
    source: str = MISSING
    # The machine the pipeline runs on: its modeled latency is printed beside the measured one.
    measured_host: bool = False
    # Where the CPU path's fixed overheads come from: the two fields below, or a micro-benchmark of
    # tiny ONNX graphs (not the policy) run by the profile stage on this machine (measured hosts only).
    overheads_from: str = one_of("config", "config", "microbenchmark")
    # The path that runs a small policy: peak FP32 FLOP/s of one core and bandwidth in SI units.
    cpu_peak_gflops: float = bounded(MISSING, low=0.0, low_open=True)
    # Measured hosts: read clock, per-core cache and SIMD width from this machine (physai.deploy.devices.host);
    # the figures in the file are then the fallback for what the machine does not expose.
    read_host: bool = False
    # The basis of the file's CPU figures: the clock they assume, FP32 lanes per vector and FMA pipes per
    # core (peak = clock x lanes x 2 x pipes). With read_host the clock and lanes come from the machine.
    cpu_clock_ghz: Optional[float] = bounded(None, low=0.0, low_open=True)
    cpu_simd_fp32_lanes: Optional[int] = bounded(None, low=1)
    cpu_fma_units: Optional[int] = bounded(None, low=1)
    cpu_memory_bandwidth_gbs: float = bounded(MISSING, low=0.0, low_open=True)
    # A policy whose bytes fit in this per-core cache streams at cpu_cache_bandwidth_gbs instead.
    cpu_cache_kb: Optional[float] = bounded(None, low=0.0, low_open=True)
    cpu_cache_bandwidth_gbs: Optional[float] = bounded(None, low=0.0, low_open=True)
    # Beyond it, the shared last-level cache (read from the machine on a host with read_host).
    cpu_llc_kb: Optional[float] = bounded(None, low=0.0, low_open=True)
    cpu_llc_bandwidth_gbs: Optional[float] = bounded(None, low=0.0, low_open=True)
    cpu_cores: Optional[int] = bounded(None, low=1)
    cpu_op_overhead_us: float = bounded(2.0, low=0.0)
    # Fixed cost of one runtime call (binding, input checks, output allocation).
    runtime_call_overhead_us: float = bounded(10.0, low=0.0)
    # Published GPU peaks in TFLOP/s (TOPS for int8), keyed <precision>_<dense|sparse>, e.g. int8_sparse.
    gpu_peak_tflops: Dict[str, float] = field(default_factory=dict)
    # The precision the GPU path is modeled at (the bundle is float32); a sparse-only figure counts half.
    precision: str = one_of("fp32", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "fp4")
    gpu_memory_bandwidth_gbs: Optional[float] = bounded(None, low=0.0, low_open=True)
    gpu_kernel_launch_us: Optional[float] = bounded(None, low=0.0)
    gpu_transfer_overhead_us: Optional[float] = bounded(None, low=0.0)
    # Where the two GPU figures above were measured (a run, a URL); empty: they are assumptions, and
    # the device tables mark every figure that rests on them.
    gpu_overheads_measured: str = ""
    # Board power at the published figures; power_modes (if any) list every mode, and
    # default_power_mode (None: the first) is the one the verdict and the gates use.
    power_w: float = bounded(MISSING, low=0.0, low_open=True)
    power_modes: List[PowerModeConfig] = field(default_factory=list)
    default_power_mode: Optional[str] = None
    price_usd: Optional[float] = bounded(None, low=0.0)
    # Rented compute: dollars per hour instead of a purchase price.
    cloud_usd_per_hour: Optional[float] = bounded(None, low=0.0)
    service_life_years: float = bounded(3.0, low=0.0, low_open=True)
    energy_usd_per_kwh: float = bounded(0.15, low=0.0)
    # What the price is (dev kit, module, an assumed cloud rate): shown beside the cost figures.
    cost_basis: str = ""
    notes: str = ""


@dataclass
class EvaluateConfig:
    n_episodes: int = bounded(10, low=2, hint="at least 2 episodes for a confidence interval")
    # Evaluation seeds start here so they never coincide with training seeds.
    seed_offset: int = bounded(1_000_000, low=0)
    # An MP4 of the first evaluation episode in report/ (needs an off-screen GL backend).
    video: bool = True
    video_max_frames: int = bounded(150, low=1)
    # scenario_eval: another run's directory whose final policy plays the same episodes, for comparison.
    scenario_reference: Optional[str] = None
    # Evaluations during training (physai.train.periodic_eval), what a sweep's pruner judges trials by: every
    # this many env steps (0: none), the first interval_episodes of the evaluation seeds, deterministic.
    interval_steps: int = bounded(0, low=0, hint="0 turns evaluations during training off")
    interval_episodes: int = bounded(3, low=1)


@dataclass
class SweepConfig:
    """Set per trial by ``hydra/sweeper=physai_optuna``: the optuna trial this run belongs to, so training can
    report its evaluations and be pruned (physai.train.study). Left null outside such a sweep."""

    study: Optional[str] = None
    storage: Optional[str] = None      # a database URL, or the journal file's path
    trial: Optional[int] = bounded(None, low=0)
    # With seeds repeated (hydra.sweeper.seeds): the trial's seeds, whose mean return the pruner judges.
    seeds: List[int] = field(default_factory=list)

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        if node.trial is not None and not (node.study and node.storage):
            raise ConfigError(f"{prefix}trial={node.trial} needs {prefix}study and {prefix}storage too; these keys "
                              f"are set by hydra/sweeper=physai_optuna, so leave all three unset outside it")


@dataclass
class ExportConfig:
    opset: int = bounded(18, low=13)
    parity_samples: int = bounded(1000, low=1)
    parity_tolerance: float = bounded(1e-5, low=0.0, low_open=True)
    # Reduced-precision variants beside policy.onnx (physai.deploy.precision): policy_fp16.onnx, policy_int8.onnx.
    # Each is kept only if its max action error vs FP32, on the observations it meets driving the task on
    # the evaluation seeds, is within its tolerance (a share of the action range).
    fp16_variant: bool = True
    int8_variant: bool = True
    # dynamic: activation scales per call; static: fixed scales calibrated on FP32 rollouts (as TensorRT does).
    int8_method: str = one_of("dynamic", "dynamic", "static")
    int8_calibration_episodes: int = bounded(5, low=1)
    fp16_tolerance: float = bounded(0.01, low=0.0, low_open=True)
    int8_tolerance: float = bounded(0.05, low=0.0, low_open=True)


@dataclass
class ProfileConfig:
    warmup: int = bounded(200, low=0)
    iterations: int = bounded(2000, low=1000, hint="at least 1000 timed calls for a stable p99")
    intra_op_threads: int = bounded(1, low=1)


@dataclass
class DelayEvalConfig:
    """Closed-loop return with the action delay each device's modeled latency would impose."""

    n_episodes: int = bounded(5, low=2, hint="at least 2 episodes for a confidence interval")
    # synchronous: sensors are read and commands written on control ticks, so an action computed from
    # the observation of tick t applies at tick t + ceil(latency / period) (one step even for a fast
    # board); asynchronous: it applies as soon as it is ready, modeled as t + floor(latency / period).
    controller: str = one_of("synchronous", "synchronous", "asynchronous")
    # Per-step latency = modeled latency x (a measured host sample / the measured host median).
    jitter: bool = True
    # Also run fixed delays 0..sweep_max_steps for the return-vs-delay plot.
    sweep_max_steps: int = bounded(8, low=0)


@dataclass
class GateConfig:
    # Quality is the evaluation return in score points: 100 x return / solved threshold.
    quality_max_drop_points: float = bounded(2.0, low=0.0)
    latency_p99_max_ms: float = bounded(50.0, low=0.0, low_open=True)
    latency_within_control_period: bool = True
    # Candidate vs reference bundle (`physai gate CANDIDATE --reference BUNDLE`): measured batch-1 p99 side by
    # side, and modeled cost per action on the same target, each at most this multiple of the reference's.
    reference_p99_max_ratio: float = bounded(1.2, low=0.0, low_open=True)
    cost_max_ratio: float = bounded(1.2, low=0.0, low_open=True)
    # Each target's gate also asks delay_eval whether the policy solves its task with that target's delay.
    # When that was not evaluated (delay_eval switched off), the check reads "not run" and fails the gate;
    # false keeps the "not run" row but lets the release pass without it.
    require_delay_eval: bool = True
    # Fail the command (exit code 3) when a gate fails, for CI release jobs.
    strict: bool = False


@dataclass
class PolicySourceConfig:
    """Who acts while data is generated: uniform random actions, or an exported policy's bundle."""

    policy: str = one_of("random", "random", "bundle")
    bundle: Optional[str] = None  # with policy=bundle: a run's bundle/ directory

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        if node.policy != "bundle":
            return
        if not node.bundle:
            raise ConfigError(f"{prefix}policy=bundle needs {prefix}bundle=<a run's bundle directory>; or use "
                              f"{prefix}policy=random")
        if not (Path(node.bundle) / "manifest.json").is_file():
            raise ConfigError(f"{prefix}bundle={node.bundle!r} is not a bundle directory (it has no manifest.json); "
                              f"point it at a run's bundle/ folder")


@dataclass
class CollectConfig(PolicySourceConfig):
    """Real transitions for the world model, from the simulator (a bundle's actions get Gaussian noise)."""

    steps: int = bounded(10_000, low=1)
    action_noise: float = bounded(0.0, low=0.0)


@dataclass
class WorldModelConfig:
    """The probabilistic ensemble (see physai.synthetic.world_model): the world_model stage's and MBPO's."""

    members: int = bounded(7, low=2)
    elites: int = bounded(5, low=1)
    hidden: int = bounded(200, low=8)
    layers: int = bounded(4, low=1)
    learning_rate: float = bounded(1e-3, low=0.0, low_open=True)
    batch_size: int = bounded(256, low=1)
    holdout_fraction: float = bounded(0.2, low=0.0, high=1.0, low_open=True)
    max_epochs: int = bounded(200, low=1)
    max_seconds: Optional[float] = bounded(None, low=0.0, low_open=True)
    patience: int = bounded(5, low=1)
    # Condition on the task's domain-randomization draws (physics context) when it has any.
    use_context: bool = True
    # Held-out episodes for the open-loop error report (a share of the collected episodes).
    report_episode_fraction: float = bounded(0.2, low=0.0, high=1.0, low_open=True)
    open_loop_horizons: List[int] = field(default_factory=lambda: [1, 5, 10, 25, 50])

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        if node.elites > node.members:
            raise ConfigError(f"{prefix}elites={node.elites} is more than {prefix}members={node.members}; elites are "
                              f"chosen among the members, so lower elites or raise members")
        horizons = list(node.open_loop_horizons)
        if not horizons or min(horizons) < 1:
            raise ConfigError(f"{prefix}open_loop_horizons={horizons} must list model steps >= 1, e.g. "
                              f"[1,5,10,25,50]")


@dataclass
class SynthesizeConfig(PolicySourceConfig):
    """How scenario rollouts are generated through the ensemble."""

    # Rows of one model call; larger is faster until memory runs out.
    batch_rows: int = bounded(65_536, low=1)
    # A "dream vs real" MP4 (simulator and model from the same start and actions) in report/.
    dream_video: bool = True
    dream_steps: int = bounded(100, low=2)
    # Real steps collected under the scenario staged in the simulator, to report how far the model holds
    # there before its dreams train anything (0: skip; a scenario the simulator cannot stage is skipped).
    trust_steps: int = bounded(2000, low=0)

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        PolicySourceConfig.check(node, prefix)
        if 0 < node.trust_steps < 100:
            raise ConfigError(f"{prefix}trust_steps={node.trust_steps} is too few real steps to judge a model; "
                              f"use {prefix}trust_steps=0 to skip the trust report, or at least 100")


@dataclass
class SyntheticConfig:
    collect: CollectConfig = field(default_factory=CollectConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)


@dataclass
class PerturbationConfig:
    """A kick during a branch: add a random delta to some observation columns at a random step."""

    name: str = MISSING
    observations: List[str] = MISSING       # observation column names, e.g. ["velocities[0]"]
    delta_range: List[float] = MISSING      # [low, high] added to each named column
    at_steps: List[int] = field(default_factory=lambda: [1, 1])  # [first, last] branch step it may happen at


@dataclass
class ScenarioConfig:
    """A prompt for the world model: which starts, which physics, which kicks, how long."""

    name: str = MISSING
    task: str = MISSING                     # the env id it is written for
    description: str = ""
    edge_case: bool = False                 # a condition the real data holds rarely or never
    start: str = one_of("real", "real", "ranges")
    # start=ranges: observation column -> [low, high]; start=real: columns overridden after sampling.
    start_ranges: Dict[str, List[float]] = field(default_factory=dict)
    # physics context name (see the task's domain randomization) -> [low, high]; others keep the real draw.
    context: Dict[str, List[float]] = field(default_factory=dict)
    perturbations: List[PerturbationConfig] = field(default_factory=list)
    horizon: int = bounded(10, low=1)
    branches: int = bounded(4096, low=1)
    # A branch stops when ensemble disagreement (normalized units) passes this.
    max_disagreement: float = bounded(1.0, low=0.0, low_open=True)


@dataclass
class GuardConfig:
    """The dual-stack guard written into the bundle (physai.edge.guard): monitors and a classical fallback.

    Per-task fallbacks live in ``configs/guard/<task>.yaml``; the export stage writes this section
    into the manifest, so the robot needs no Hydra to build the guard.
    """

    enabled: bool = True
    # Out of distribution: max over columns of |obs - mean| / std (std units) beyond this; the
    # statistics are gathered by the export stage's closed-loop evaluation.
    ood_threshold: float = bounded(6.0, low=0.0, low_open=True, hint="a distance in std units such as 6.0")
    # Floor of each column's std (observation units): constant columns would otherwise flag any change.
    min_std: float = bounded(1e-3, low=0.0, low_open=True)
    # Actions beyond the bounds by more than this share of the half range count as out of range.
    action_tolerance: float = bounded(1e-4, low=0.0)
    # Bundle the run's world model (world_model.onnx) for the disagreement monitor, when there is one.
    world_model: bool = True
    # Ensemble disagreement (normalized units) beyond which the fallback acts; None: calibrated as
    # disagreement_margin x the largest value seen in the export stage's closed-loop evaluation.
    max_disagreement: Optional[float] = bounded(None, low=0.0, low_open=True)
    disagreement_margin: float = bounded(1.5, low=1.0)
    # After a monitor fires, the fallback keeps control for this many more calls.
    hold_steps: int = bounded(0, low=0)
    # Guarded closed-loop episodes (fresh seeds) run by the export stage to report the fallback rate;
    # None: evaluate.n_episodes, 0: skip.
    evaluate_episodes: Optional[int] = bounded(None, low=0)
    # The fallback controller: a class of physai.edge.fallback and its parameters.
    fallback: Dict[str, Any] = field(default_factory=lambda: {"_target_": f"{FALLBACK_MODULE}.ZeroAction"})

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        if not node.enabled:
            return
        target = str((node.fallback or {}).get("_target_", f"{FALLBACK_MODULE}.ZeroAction"))
        module_name, _, name = target.rpartition(".")
        if (module_name or FALLBACK_MODULE) != FALLBACK_MODULE or name not in FALLBACKS:
            raise ConfigError(f"{prefix}fallback._target_={target!r} is not a physai fallback controller; use one of "
                              f"{[f'{FALLBACK_MODULE}.{n}' for n in FALLBACKS]}")


@dataclass
class PhysaiConfig:
    env: EnvConfig = MISSING
    algo: Any = MISSING
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: Dict[str, DeviceConfig] = field(default_factory=dict)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    delay_eval: DelayEvalConfig = field(default_factory=DelayEvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    scenario: Optional[ScenarioConfig] = None
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = bounded(0, low=0)
    resume: bool = False
    # Set by experiment presets so runs can be grouped by what they were for.
    experiment: str = "default"

    @staticmethod
    def check(node: DictConfig, prefix: str) -> None:
        """A preset's hyperparameters apply only to the env id (or its batched twin) they were tuned for; an
        evaluation interval must fall within the training budget."""
        interval, budget = node.evaluate.interval_steps, node.algo.total_timesteps
        if interval and interval >= budget:
            raise ConfigError(f"evaluate.interval_steps={interval} is not below algo.total_timesteps={budget}: no "
                              f"evaluation would run during training; lower it (e.g. evaluate.interval_steps="
                              f"{max(1, budget // 10)}) or set 0 to turn them off")
        tuned_for = node.algo.get("tuned_for")
        if tuned_for and tuned_for not in (node.env.id, node.env.get("twin_of")):
            raise ConfigError(
                f"env.id={node.env.id} runs with hyperparameters tuned for {tuned_for} (algo.tuned_for); pick the env "
                f"option made for {node.env.id} (env=<name>), or env=gym env.id={node.env.id} for untuned defaults")


def algo_schema_for(target: str) -> type:
    """The schema dataclass of the algorithm whose ``_target_`` is ``target``."""
    for schema in (PPOConfig, RslPPOConfig, SACConfig, MBPOConfig, DistillConfig):
        if schema._target_ == target:
            return schema
    raise KeyError(target)


ALL_DEVICES = "all"  # the device option that profiles every file of configs/device/ (the default)


def packaged_device_keys() -> list[str]:
    """Every target in ``configs/device/`` (one YAML file each): measured hosts first, then by name."""
    folder = files("physai.configs") / "device"
    keys = sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    hosts = [k for k in keys if (yaml.safe_load((folder / f"{k}.yaml").read_text()) or {}).get("measured_host")]
    return hosts + [k for k in keys if k not in hosts]


def register_configs() -> None:
    """Put the schemas where the YAML files of ``configs/`` name them in their defaults, and ``device=all``:
    every device file, so a new target is one file dropped into ``configs/device/``."""
    store = ConfigStore.instance()
    store.store(group="device", name=ALL_DEVICES, node={"defaults": packaged_device_keys()})
    store.store(name="physai_schema", node=PhysaiConfig)
    store.store(group="env", name="env_schema", node=EnvConfig)
    store.store(group="algo", name="ppo_schema", node=PPOConfig)
    store.store(group="algo", name="rsl_ppo_schema", node=RslPPOConfig)
    store.store(group="algo", name="sac_schema", node=SACConfig)
    store.store(group="algo", name="mbpo_schema", node=MBPOConfig)
    store.store(group="algo", name="distill_schema", node=DistillConfig)
    store.store(group="pipeline", name="pipeline_schema", node=PipelineConfig)
    store.store(group="tracking", name="tracking_schema", node=TrackingConfig)
    store.store(group="scenario", name="scenario_schema", node=ScenarioConfig)
