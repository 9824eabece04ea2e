"""A NaN or infinity stops training naming where and when it appeared; the last good checkpoint stays intact.

Real runs throughout: ``tests/nonfinite_env.py`` is a gymnasium env that returns one NaN/inf at a chosen
step (through the real ``train.py`` and in-process through the pipeline), and a learning rate far too
large makes SAC's losses and weights blow up, and PPO's action distribution degenerate.
"""

from __future__ import annotations

import pytest

from conftest import compose_config, run_train
from physai.run.pipeline import run_pipeline
from physai.train.checkpoints import latest_checkpoint, list_checkpoints, verify_checkpoint
from physai.train.guards import NonFiniteError

NAN_ENV = ["env=gym", "env.id=physai_test/NonFinite-v0", "experiment=smoke", "tracking=none",
           "pipeline.stages=[train,evaluate]", "evaluate.video=false",
           "algo.n_envs=1", "algo.n_steps=256", "algo.checkpoint_every_steps=512", "algo.total_timesteps=3000"]


# The subprocess imports it from the repository root; pytest has tests/ itself on sys.path.
SUBPROCESS_TARGET = "env._target_=tests.nonfinite_env.NonFiniteTask"
IN_PROCESS_TARGET = "env._target_=nonfinite_env.NonFiniteTask"


def test_nan_reward_stops_the_real_command_naming_step_and_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train([*NAN_ENV, SUBPROCESS_TARGET, "+env.kwargs.bad=reward", "+env.kwargs.at=1500",
                        f"hydra.run.dir={run_dir}"], timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    last_good = run_dir / "checkpoints" / "step_0000001024"
    assert "non-finite reward (nan) in env(s) [0] at step 1500" in result.stderr
    assert f"the last good checkpoint, {last_good}, was left as it was" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was written after the NaN: no final checkpoint, no later step, and the last one verifies.
    assert latest_checkpoint(run_dir / "checkpoints") == last_good
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_0000000512", "step_0000001024"]
    verify_checkpoint(last_good)


@pytest.mark.parametrize("at, needle", [
    (710, "non-finite observation (-inf) in env 0 column obs[1] at step 710"),
    (700, "non-finite terminal observation of env 0 (-inf) in column obs[1] at step 700"),  # an episode's last step
])
def test_infinite_observation_names_its_column(tmp_path, at, needle):
    # Below VecNormalize: its clipping would turn the infinity into a finite +-10.
    cfg = compose_config([*NAN_ENV, IN_PROCESS_TARGET, "+env.kwargs.bad=observation", f"+env.kwargs.at={at}",
                          "+env.kwargs.value=-inf"])
    with pytest.raises(NonFiniteError) as info:
        run_pipeline(cfg, tmp_path / "run")
    message = str(info.value)
    assert needle in message
    assert "step_0000000512" in message
    verify_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000000512")


def test_exploding_sac_losses_and_weights_are_named_and_no_checkpoint_takes_them(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_config(["env=pendulum", "algo=sac", "tracking=none", "pipeline.stages=[train]",
                          "algo.learning_rate=1e30", "algo.learning_starts=300", "algo.total_timesteps=1000",
                          "algo.checkpoint_every_steps=100", "algo.batch_size=64", "algo.n_envs=1",
                          "algo.buffer_size=2000", "algo.net_arch=[32,32]"])
    with pytest.raises(NonFiniteError) as info:
        run_pipeline(cfg, run_dir)
    message = str(info.value)
    assert "non-finite loss train/" in message and "after the update before step 301" in message
    assert "non-finite parameter policy." in message
    last_good = run_dir / "checkpoints" / "step_0000000300"
    assert f"the last good checkpoint, {last_good}" in message
    assert latest_checkpoint(run_dir / "checkpoints") == last_good
    verify_checkpoint(last_good)


def test_a_degenerate_ppo_policy_is_reported_not_a_traceback(tmp_path):
    cfg = compose_config(["experiment=smoke", "tracking=none", "pipeline.stages=[train]", "algo.learning_rate=1e6",
                          "algo.checkpoint_every_steps=256"])
    with pytest.raises(NonFiniteError, match="invalid policy output .* in the update at step 256"):
        run_pipeline(cfg, tmp_path / "run")
