"""Bad input across every config group is refused at composition or preflight, naming the key.

Each case is composed through Hydra for real (``compose``, then ``physai.run.pipeline.prepare``: the checks
``train.py`` runs before it creates the run directory); the ones that concern Hydra's own settings go
through the real ``train.py``. Every case must fail with a message that names the offending key (or
config group and option), and must leave no run directory behind. The count is printed at the end.

Then the safety audit: nothing in physai unpickles, and every ``torch.load`` uses ``weights_only=True``.
"""

from __future__ import annotations

import re

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from conftest import REPO, compose_config, run_train
from physai.core.errors import PhysaiError
from physai.run.pipeline import prepare

# (overrides, text the error must contain: the key, or group/option, it is about)
CASES = [
    # env
    (["env.max_episode_steps=0"], "env.max_episode_steps=0"),
    (["env.nthread=0"], "env.nthread=0"),
    (["env.control_rate_hz=-5"], "env.control_rate_hz=-5"),
    (["env.backend=no.such.Backend"], "env.backend='no.such.Backend'"),
    (["env.backend=wrap"], "name one of ['rollout', 'warp', 'warp_cuda']"),
    (["env.task.rewards.upright.weight=nan"], "env.task.rewards.upright.weight=nan is not a finite number"),
    (["env=gym", "env.id=NoSuchEnv-v0"], "env.id='NoSuchEnv-v0'"),
    (["env.kwargs.bogus=1"], "env.kwargs.bogus"),
    (["+env.kwargs.bogus=1"], "env.kwargs"),
    (["env.task.frame_skip=0"], "frame_skip"),
    (["env.task.events.pole_mass.params.scale_range=[1.3,0.7]"], "events.pole_mass"),
    (["env=reach2d_delay", "env.train_events.action_delay.params.steps=[-1,2]"], "events.action_delay"),
    (["+env.train_events.action_delay={fn:randomize_action_delay,mode:reset}"], "events.action_delay"),
    (["env.solved_threshold=abc"], "env.solved_threshold"),
    (["env=walker9000"], "env/walker9000"),
    # algo
    (["algo.n_envs=0"], "algo.n_envs=0"),
    (["algo.n_envs=four"], "algo.n_envs"),
    (["algo.learning_rate=inf"], "algo.learning_rate=inf is not a finite number"),
    (["algo.gamma=1.5"], "algo.gamma=1.5"),
    (["algo.net_arch=[0,64]"], "algo.net_arch=[0, 64]"),
    (["algo.activation=swish"], "algo.activation='swish'"),
    (["algo.checkpoint_every_steps=0"], "algo.checkpoint_every_steps=0"),
    (["algo.keep_checkpoints=0"], "algo.keep_checkpoints=0"),
    (["algo.batch_size=1"], "algo.batch_size=1"),
    (["algo.batch_size=100000"], "algo.batch_size=100000"),
    (["algo.n_env=4"], "n_env"),
    (["+algo.not_a_key=1"], "algo.not_a_key"),
    (["algo=dqn"], "algo/dqn"),
    (["algo=sac", "algo.tau=2"], "algo.tau=2.0"),
    (["algo=sac", "algo.learning_starts=5000", "algo.total_timesteps=2000"], "algo.learning_starts=5000"),
    (["algo=rsl_ppo", "algo.device=gpu"], "algo.device='gpu'"),
    (["algo=mbpo", "synthetic.world_model.elites=9"], "synthetic.world_model.elites=9"),
    (["algo=mbpo", "algo.rollout_length=[1,2,3]"], "algo.rollout_length=[1, 2, 3]"),
    (["algo=mbpo", "algo.real_ratio=1.5"], "algo.real_ratio=1.5"),
    (["algo=mbpo", "algo.prompt_share=2"], "algo.prompt_share=2"),
    (["algo=mbpo", "algo.prompt_share=0.5"], "pipeline.stages runs 'train with algo.prompt_share=0.5' but no "
                                             "scenario is chosen"),
    (["algo=mbpo", "algo.prompt_share=0.5", "scenario=cartpole_balance/heavy_pole_push",
      "synthetic.world_model.use_context=false"], "set it true so the world model can be prompted"),
    # preset: a preset made for another env
    (["preset=ppo_hopper"], "algo.tuned_for"),
    # pipeline: unknown stage, wrong order, and stages whose inputs no earlier stage produces
    (["pipeline.stages=[train,deploy]"], "pipeline.stages names an unknown stage 'deploy'"),
    (["pipeline.stages=[export,train]"], "runs 'export' before 'train', but 'train' produces "
                                         "['checkpoints/final/model.zip'], which 'export' reads"),
    (["pipeline.stages=[report,evaluate]"], "runs 'report' before 'evaluate'"),
    (["pipeline.stages=[evaluate]"], "pipeline.stages runs 'evaluate', which needs checkpoints/final/model.zip"),
    (["pipeline.stages=[world_model,train]"], "pipeline.stages runs 'world_model', which needs datasets/real"),
    (["pipeline.stages=[synthesize,train]"], "pipeline.stages runs 'synthesize' but no scenario is chosen"),
    (["pipeline.stages=[train,scenario_eval]"], "pipeline.stages runs 'scenario_eval' but no scenario is chosen"),
    (["synthetic.synthesize.trust_steps=10"], "synthetic.synthesize.trust_steps=10 is too few real steps"),
    (["pipeline.stages=[train,scenario_eval]", "scenario=cartpole_balance/heavy_pole_push",
      "scenario.perturbations.0.observations=[cart_pos]"],
     "perturbations.pole_shove on 'cart_pos': the simulator can push only joint-velocity columns"),
    (["pipeline=nope"], "pipeline/nope"),
    # tracking
    (["tracking.mode=sometimes"], "tracking.mode='sometimes'"),
    (["tracking=nope"], "tracking/nope"),
    (["tracking.project=[1,2]"], "tracking.project"),
    # device
    (["device=[nope]"], "device/nope"),
    (["device=[]"], "pipeline.stages runs 'profile' but device is empty"),
    (["device.host_cpu.cpu_peak_gflops=-1"], "device.host_cpu.cpu_peak_gflops=-1.0"),
    (["device.jetson_orin_nano.default_power_mode=turbo"], "device.jetson_orin_nano.default_power_mode='turbo'"),
    (["device.host_cpu.kind=tpu"], "device.host_cpu.kind='tpu'"),
    (["device.jetson_orin_nano.power_modes.0.gpu_peak_scale=2"],
     "device.jetson_orin_nano.power_modes.0.gpu_peak_scale"),
    # experiment
    (["experiment=nope"], "experiment/nope"),
    # scenario
    (["scenario=cartpole_balance/nope"], "scenario/cartpole_balance/nope"),
    (["pipeline=synthetic", "scenario=car_lane/obstacle_late"], "scenario 'obstacle_late' is written for task"),
    (["scenario=cartpole_balance/nominal", "scenario.horizon=0"], "scenario.horizon=0"),
    (["pipeline=synthetic", "scenario=cartpole_balance/nominal", "+scenario.context.bogus=[1,2]"], "context.bogus"),
    # synthetic
    (["synthetic.collect.steps=0"], "synthetic.collect.steps=0"),
    (["synthetic.collect.policy=bundle"], "synthetic.collect.bundle"),
    (["synthetic.collect.policy=bundle", "synthetic.collect.bundle=/nonexistent/bundle"], "synthetic.collect.bundle="),
    (["synthetic.world_model.elites=9"], "synthetic.world_model.elites=9"),
    (["synthetic.world_model.open_loop_horizons=[0]"], "synthetic.world_model.open_loop_horizons=[0]"),
    (["synthetic.synthesize.policy=expert"], "synthetic.synthesize.policy='expert'"),
    # evaluate, export, profile, gate, guard, delay_eval
    (["evaluate.n_episodes=1"], "evaluate.n_episodes=1"),
    (["evaluate.seed_offset=-1"], "evaluate.seed_offset=-1"),
    (["export.opset=5"], "export.opset=5"),
    (["export.parity_tolerance=0"], "export.parity_tolerance=0.0"),
    (["export.int8_method=fancy"], "export.int8_method='fancy'"),
    (["profile.iterations=10"], "profile.iterations=10"),
    (["profile.warmup=-1"], "profile.warmup=-1"),
    (["gate.latency_p99_max_ms=0"], "gate.latency_p99_max_ms=0.0"),
    (["gate.strict=maybe"], "gate.strict"),
    (["guard.ood_threshold=0"], "guard.ood_threshold=0.0"),
    (["guard.fallback._target_=os.system"], "guard.fallback._target_='os.system'"),
    (["delay_eval.controller=sometimes"], "delay_eval.controller='sometimes'"),
    (["delay_eval.n_episodes=1"], "delay_eval.n_episodes=1"),
    # top level
    (["seed=-1"], "seed=-1"),
    (["seed=abc"], "seed"),
    (["resume=maybe"], "resume"),
    (["not_a_group.x=1"], "not_a_group"),
]

# Through the real command line: Hydra's own settings.
CLI_CASES = [
    (["hydra/launcher=nope"], "hydra/launcher/nope"),
    (["hydra.job.chdir=maybe"], "hydra.job.chdir"),
    # Optional groups: Hydra would apply nothing for a missing option; physai's preflight refuses it.
    (["preset=nope"], "configs/preset has no option 'nope'"),
    (["guard=car_lan"], "configs/guard has no option 'car_lan'"),
    # The cart-pole fallback reads its masses and gear from the MJCF: a part it does not have fails now.
    (["guard.fallback.from_model.cart_body=trolley"], "guard.fallback.from_model.cart_body='trolley'"),
]

REFUSED = (PhysaiError, HydraException, OmegaConfBaseException)


@pytest.mark.parametrize("overrides, needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_override_is_refused_naming_the_key(tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    with pytest.raises(REFUSED) as info:
        prepare(compose_config(overrides), run_dir)
    message = f"{info.value} {info.value.__cause__ or ''}"
    assert needle in message, message
    assert not run_dir.exists()


@pytest.mark.parametrize("overrides, needle", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_bad_hydra_override_is_refused_by_the_real_command(tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    result = run_train(["experiment=smoke", "tracking=none", f"hydra.run.dir={run_dir}", *overrides], timeout=120)
    assert result.returncode != 0 and needle in result.stderr, result.stderr[-2000:]
    assert not run_dir.exists()


def test_count_of_bad_inputs_tried():
    groups = {re.split(r"[.=/\[]", override.lstrip("+"))[0] for overrides, _ in CASES + CLI_CASES
              for override in overrides[-1:]}
    total = len(CASES) + len(CLI_CASES)
    print(f"\nbad inputs tried: {total} ({len(CASES)} composed in-process, {len(CLI_CASES)} through train.py) "
          f"across {len(groups)} groups: {sorted(groups)}")
    assert total >= 30
    assert {"env", "algo", "pipeline", "tracking", "device", "experiment", "scenario", "synthetic", "evaluate",
            "export", "profile", "gate", "guard", "delay_eval", "hydra", "seed", "resume", "preset"} <= groups


# ----- pickles and torch.load ----------------------------------------------------------------------
SOURCES = [p for folder in ("physai", "envs", "synthetic") for p in (REPO / folder).rglob("*.py")] + [
    REPO / "train.py"]


def test_no_physai_code_unpickles_and_torch_load_is_weights_only():
    offenders = []
    for path in SOURCES:
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            where = f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            if re.search(r"\b(c?pickle|cloudpickle|joblib|dill)\.loads?\(", code):
                offenders.append(where)
            if "allow_pickle=True" in code or re.search(r"(?<!super\(\))\.load_replay_buffer\(|load_from_pkl\(", code):
                offenders.append(where)
            if re.search(r"\b(torch|th)\.load\(", code):
                call = text[text.index(line):][:400]
                if "weights_only=True" not in call.split(")\n", 1)[0] + ")":
                    offenders.append(where)
            # SB3's Algorithm.load unpickles its archive's data: checkpoints go through load_checkpoint instead.
            if re.search(r"(PPO|SAC|MBPO|algorithm_class|get_class\([^)]*\))\.load\(", code):
                offenders.append(where)
    assert not offenders, "code that unpickles or loads torch files unsafely:\n" + "\n".join(offenders)


def test_checkpoints_hold_no_pickle_files(smoke_run):
    """model.zip's weights are torch tensors read with weights_only=True; everything else is npz/JSON/CSV."""
    import zipfile

    import numpy as np

    final = smoke_run / "checkpoints" / "final"
    suffixes = {p.suffix for p in final.iterdir()}
    assert suffixes <= {".zip", ".npz", ".json", ".csv", ".pt"}, suffixes
    for npz in final.glob("*.npz"):
        with np.load(npz, allow_pickle=False) as data:
            [data[name] for name in data.files]  # raises if any array needed pickling
    with zipfile.ZipFile(final / "model.zip") as archive:
        assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle"))]
