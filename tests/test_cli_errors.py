"""Bad input through the real command line: one clear message, exit code 2, nothing written or lost."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli, run_train


@pytest.mark.parametrize("override, needle", [
    ("algo.n_envs=0", "algo.n_envs=0 is out of range"),
    ("algo.learning_rate=-1", "algo.learning_rate=-1.0 is out of range"),
    ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0' is not a registered gymnasium environment"),
    ("algo=dqn", "algo"),
    ("algo.not_a_key=1", "not_a_key"),
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


def test_rerun_with_a_bad_override_names_it(smoke_run):
    result = run_cli(["run", str(smoke_run), "--stages", "gate", "gate.latency_p99_max_ms=-5"])
    assert result.returncode == 2
    assert "gate.latency_p99_max_ms" in result.stderr
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["gates"]["passed"] in (True, False)
