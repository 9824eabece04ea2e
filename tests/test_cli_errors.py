"""Bad input through the real command line: one clear message, exit code 2, nothing written or lost."""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli, run_train


@pytest.mark.parametrize("override, needle", [
    ("algo.n_envs=0", "algo.n_envs=0 is out of range"),
    ("algo.learning_rate=-1", "algo.learning_rate=-1.0 is out of range"),
    ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0' is not a registered gymnasium environment"),
    ("algo=dqn", "Could not find 'algo/dqn'"),
    ("algo.not_a_key=1", "Key 'not_a_key' not in 'PPOConfig'"),
    ("+algo.not_a_key=1", "algo.not_a_key is not a setting of PPO"),
    ("pipeline.stages=[export,profile]", "needs checkpoints/final/model.zip"),
])
def test_bad_overrides_stop_before_the_run_directory_exists(tmp_path, override, needle):
    run_dir = tmp_path / "run"
    result = run_train(["experiment=smoke", "tracking=none", f"hydra.run.dir={run_dir}", override], timeout=120)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists(), "a refused config must not leave a run directory behind"


def test_unwritable_output_directory_is_refused(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("I am a file")
    result = run_train(["experiment=smoke", "tracking=none", f"hydra.run.dir={blocker / 'run'}"], timeout=120)
    assert result.returncode == 2
    assert str(blocker) in result.stderr and "choose another run directory" in result.stderr
    assert blocker.read_text() == "I am a file"


def test_rerun_of_a_stage_without_its_inputs_is_refused_and_keeps_the_directory(smoke_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(smoke_run, partial)
    shutil.rmtree(partial / "checkpoints")
    before = {p.relative_to(partial): p.read_bytes() for p in partial.rglob("*") if p.is_file()}
    result = run_cli(["run", str(partial), "--stages", "export,profile,gate"])
    assert result.returncode == 2
    assert "needs checkpoints/final/model.zip" in result.stderr and "['train']" in result.stderr
    after = {p.relative_to(partial): p.read_bytes() for p in partial.rglob("*") if p.is_file()}
    assert after == before


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overrides, needle", [
    (["--stages", "gate", "gate.latency_p99_max_ms=-5"], "gate.latency_p99_max_ms=-5.0 is out of range"),
    (["--stages", "export", "env.id=Hopper-v5"], "'env.id=Hopper-v5' would change what the run trained"),
    (["--stages", "export", "seed=7"], "'seed=7' would change what the run trained"),
    (["--stages", "export", "algo=sac"], "'algo=sac' would change what the run trained"),
    (["--stages", "gate", "tracking=nope"], "configs/tracking has no option 'nope'"),
    ([], "already holds checkpoints; pass resume=true"),
])
def test_rerun_with_a_bad_override_names_it_and_changes_nothing(smoke_run, overrides, needle):
    before = _snapshot(smoke_run)
    result = run_cli(["run", str(smoke_run), *overrides])
    assert result.returncode == 2, result.stderr[-2000:]
    assert needle in result.stderr
    assert _snapshot(smoke_run) == before


def test_training_into_an_existing_run_directory_is_refused(smoke_run):
    before = _snapshot(smoke_run)
    result = run_train(["experiment=smoke", "tracking=none", f"hydra.run.dir={smoke_run}"], timeout=120)
    assert result.returncode == 2
    assert "already holds checkpoints; pass resume=true" in result.stderr
    result = run_train(["experiment=smoke", "tracking=none", "seed=5", "resume=true",
                        f"hydra.run.dir={smoke_run}"], timeout=120)
    assert result.returncode == 2 and "was trained with another config (seed: 0 -> 5" in result.stderr
    assert _snapshot(smoke_run) == before  # not even Hydra's .hydra/ record is rewritten


def test_an_out_of_range_setting_is_refused_before_the_training_stack_loads(tmp_path):
    """A refusal is quick feedback: checking values and the task must not wait for torch and SB3 to import."""
    run_dir = tmp_path / "run"
    result = run_train(["experiment=smoke", "tracking=none", f"hydra.run.dir={run_dir}", "algo.n_envs=0"],
                       timeout=120, env_overrides={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 2 and "algo.n_envs=0 is out of range" in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hydra" in imported  # the import log was written
    assert not imported & {"torch", "stable_baselines3", "wandb"}, "a plain refusal loaded the training stack"
