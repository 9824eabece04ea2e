"""The schema of the Hydra tree in ``configs/``.

Each dataclass is registered in Hydra's ConfigStore, and the YAML files of a group list
the matching schema first in their defaults, so a typo'd key or a wrong type is refused at
composition. Ranges live in field metadata (``bounds``/``choices``) and are checked by
``physai.config.validate`` with the full key in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def bounded(default: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, hint: str = "") -> Any:
    """A field whose value must lie in [low, high] (or (low, high] with ``low_open``)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "hint": hint})


def one_of(default: Any, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


STAGE_NAMES = ("train", "evaluate", "export", "profile", "gate", "report")

# Config keys that steer physai itself; every other algo key is a keyword of the SB3 class.
ALGO_FRAMEWORK_KEYS = frozenset({
    "_target_", "name", "total_timesteps", "n_envs", "normalize_obs", "normalize_reward", "clip_obs", "net_arch",
    "activation", "log_std_init", "ortho_init", "checkpoint_every_steps", "keep_checkpoints", "torch_threads",
    "tuned_for"})

# Keys that change how a run is executed or judged, not which policy it trains. Everything
# else is the run's training identity: hashed into the bundle's provenance, and frozen once
# a run directory exists (reruns and resumes may change only these).
NON_IDENTITY_KEYS = ("pipeline", "tracking", "resume", "evaluate", "export", "profile", "gate", "device",
                     "experiment", "algo.total_timesteps", "algo.checkpoint_every_steps", "algo.keep_checkpoints",
                     "algo.torch_threads", "env.nthread", "env.backend")


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
    # Threads of the batched engine (None: all cores).
    nthread: Optional[int] = bounded(None, low=1)
    # The physics backend of physai tasks: MuJoCo's rollout on CPU threads; a GPU one plugs in here.
    backend: Optional[str] = None  # None: physai.envs.spec.DEFAULT_BACKEND


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


@dataclass
class PPOConfig(AlgoConfig):
    _target_: str = "stable_baselines3.PPO"
    name: str = "ppo"
    n_steps: int = bounded(2048, low=2)
    n_epochs: int = bounded(10, low=1)
    gae_lambda: float = bounded(0.95, low=0.0, high=1.0)
    clip_range: float = bounded(0.2, low=0.0, low_open=True)
    ent_coef: float = bounded(0.0, low=0.0)
    vf_coef: float = bounded(0.5, low=0.0)
    max_grad_norm: float = bounded(0.5, low=0.0, low_open=True)
    ortho_init: bool = True


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


@dataclass
class PipelineConfig:
    stages: List[str] = field(default_factory=lambda: list(STAGE_NAMES))


@dataclass
class TrackingConfig:
    _target_: str = "physai.tracking.WandbTracker"
    mode: str = one_of("offline", "offline", "online", "disabled")
    project: str = "physai"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class DeviceConfig:
    """Published figures of one compute target; every modeled number cites ``source``."""

    name: str = MISSING
    kind: str = one_of("cpu", "cpu", "gpu", "soc")
    source: str = MISSING
    # The machine the pipeline runs on: its modeled latency is printed beside the measured one.
    measured_host: bool = False
    # The path that runs a small policy: peak FP32 FLOP/s and bandwidth in SI units.
    cpu_peak_gflops: float = bounded(MISSING, low=0.0, low_open=True)
    cpu_memory_bandwidth_gbs: float = bounded(MISSING, low=0.0, low_open=True)
    cpu_op_overhead_us: float = bounded(2.0, low=0.0)
    # Fixed cost of one runtime call (binding, input checks, output allocation).
    runtime_call_overhead_us: float = bounded(10.0, low=0.0)
    gpu_peak_gflops: Optional[float] = bounded(None, low=0.0, low_open=True)
    gpu_memory_bandwidth_gbs: Optional[float] = bounded(None, low=0.0, low_open=True)
    gpu_kernel_launch_us: Optional[float] = bounded(None, low=0.0)
    gpu_transfer_overhead_us: Optional[float] = bounded(None, low=0.0)
    power_w: float = bounded(MISSING, low=0.0, low_open=True)
    price_usd: Optional[float] = bounded(None, low=0.0)
    # Rented compute: dollars per hour instead of a purchase price.
    cloud_usd_per_hour: Optional[float] = bounded(None, low=0.0)
    service_life_years: float = bounded(3.0, low=0.0, low_open=True)
    energy_usd_per_kwh: float = bounded(0.15, low=0.0)
    notes: str = ""


@dataclass
class EvaluateConfig:
    n_episodes: int = bounded(10, low=2, hint="at least 2 episodes for a confidence interval")
    # Evaluation seeds start here so they never coincide with training seeds.
    seed_offset: int = bounded(1_000_000, low=0)
    # An MP4 of the first evaluation episode in report/ (needs an off-screen GL backend).
    video: bool = True
    video_max_frames: int = bounded(150, low=1)


@dataclass
class ExportConfig:
    opset: int = bounded(18, low=13)
    parity_samples: int = bounded(1000, low=1)
    parity_tolerance: float = bounded(1e-5, low=0.0, low_open=True)


@dataclass
class ProfileConfig:
    warmup: int = bounded(200, low=0)
    iterations: int = bounded(2000, low=1000, hint="at least 1000 timed calls for a stable p99")
    intra_op_threads: int = bounded(1, low=1)


@dataclass
class GateConfig:
    # Quality is the evaluation return in score points: 100 x return / solved threshold.
    quality_max_drop_points: float = bounded(2.0, low=0.0)
    latency_p99_max_ms: float = bounded(50.0, low=0.0, low_open=True)
    latency_within_control_period: bool = True
    # Fail the command (exit code 3) when a gate fails, for CI release jobs.
    strict: bool = False


@dataclass
class PhysaiConfig:
    env: EnvConfig = MISSING
    algo: Any = MISSING
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: Dict[str, DeviceConfig] = field(default_factory=dict)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    seed: int = bounded(0, low=0)
    resume: bool = False
    # Set by experiment presets so runs can be grouped by what they were for.
    experiment: str = "default"


def algo_schema_for(target: str) -> type:
    """The schema dataclass of the algorithm whose ``_target_`` is ``target``."""
    for schema in (PPOConfig, SACConfig):
        if schema._target_ == target:
            return schema
    raise KeyError(target)


def register_configs() -> None:
    """Put the schemas where the YAML files of ``configs/`` name them in their defaults."""
    store = ConfigStore.instance()
    store.store(name="physai_schema", node=PhysaiConfig)
    store.store(group="env", name="env_schema", node=EnvConfig)
    store.store(group="algo", name="ppo_schema", node=PPOConfig)
    store.store(group="algo", name="sac_schema", node=SACConfig)
    store.store(group="pipeline", name="pipeline_schema", node=PipelineConfig)
    store.store(group="tracking", name="tracking_schema", node=TrackingConfig)
