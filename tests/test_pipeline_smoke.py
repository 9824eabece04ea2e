"""The smoke preset runs every stage for real and leaves the full artifact set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import require_rendering, run_cli
from wandb_records import read_offline_run
from physai.edge import EdgePolicy


def test_smoke_run_produces_every_artifact(smoke_run):
    for artifact in [".hydra/config.yaml", "config.yaml", "checkpoints/final/model.zip", "train_curve.csv",
                     "bundle/policy.onnx", "bundle/manifest.json", "summary.json", "report/report.md",
                     "report/learning_curve.png"]:
        assert (smoke_run / artifact).is_file(), artifact
    # Everything goes to the run directory: SB3's empty per-learn() log folders do not litter the temp dir.
    assert not list((smoke_run.parent / "tmp").glob("SB3-*"))


def test_summary_holds_every_stage_with_units(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert {"train", "eval", "bundle", "profile", "gates", "report", "timings_s"} <= set(summary)
    evaluation = summary["eval"]
    assert evaluation["n_episodes"] == 3 and len(evaluation["seeds"]) == 3
    assert evaluation["ci95_low"] <= evaluation["mean_return"] <= evaluation["ci95_high"]
    assert evaluation["solved_threshold"] == 450
    host = summary["profile"]["host"]
    assert host["n"] >= 1000 and host["modeled"] is False
    assert host["p50_ms"] <= host["p95_ms"] <= host["p99_ms"] <= host["max_ms"]
    for device in summary["profile"]["devices"].values():
        assert device["modeled"] is True and device["source"]
        assert device["latency_ms"] > 0 and device["usd_per_million_actions"] > 0
    assert summary["bundle"]["parity"]["max_abs_error"] < 1e-5
    assert summary["eval"]["checkpoint_timesteps"] == summary["bundle"]["timesteps"] == summary["train"]["timesteps"]
    assert summary["profile"]["devices"]["host_cpu"]["measured_host"] is True
    assert "error_vs_measured_p50" in summary["profile"]["devices"]["host_cpu"]
    names = {gate["name"] for gate in summary["gates"]["gates"]}
    assert {"quality_drop", "host_latency_p99", "host_latency_p99_within_control_period"} <= names
    for gate in summary["gates"]["gates"]:
        assert {"value", "threshold", "unit", "passed"} <= set(gate)


def test_report_shows_curves_video_and_gate_table(smoke_run):
    report = (smoke_run / "report" / "report.md").read_text()
    assert "![learning curve](learning_curve.png)" in report
    assert "![reward terms](reward_terms.png)" in report and (smoke_run / "report" / "reward_terms.png").is_file()
    summary = json.loads((smoke_run / "summary.json").read_text())
    require_rendering()
    import imageio.v2 as imageio

    assert summary["eval"]["video"] == "report/eval_episode.mp4" and summary["eval"]["video_missing"] is None
    reader = imageio.get_reader(str(smoke_run / "report" / "eval_episode.mp4"), format="FFMPEG")
    frames = [frame for frame in reader]  # not list(): the reader reports len() = inf
    assert len(frames) > 10 and frames[0].std() > 1.0  # a real picture, not a blank frame
    assert "eval_episode.mp4" in report
    assert "## Release gates" in report and "| quality_drop |" in report
    assert "Modeled" in report and "Jetson Orin Nano" in report


def test_manifest_describes_the_bundle(smoke_run):
    manifest = json.loads((smoke_run / "bundle" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["observation_space"]["shape"] == [5] and manifest["action_space"]["shape"] == [1]
    assert manifest["control_rate_hz"] == 50.0
    assert len(manifest["files"]["policy.onnx"]["sha256"]) == 64
    provenance = manifest["provenance"]
    assert {"git_commit", "config_sha256", "seed", "env_id", "algo"} <= set(provenance)
    assert provenance["seed"] == 0 and provenance["env_id"] == "physai/CartpoleBalance-v0"


def test_bundle_acts_in_env_units(smoke_run):
    policy = EdgePolicy.load(smoke_run / "bundle")
    actions = policy.act(np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32) * 100)
    assert actions.shape == (64, 1)
    assert np.all(actions >= -1.0) and np.all(actions <= 1.0)


def test_wandb_offline_runs_one_per_stage_in_one_group(smoke_run):
    runs = {r["job_type"]: r for r in map(read_offline_run, (smoke_run / "wandb").glob("offline-run-*/run-*.wandb"))}
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert set(runs) == set(summary["timings_s"]), "expected one wandb run per stage, job_type = stage"
    assert len({r["group"] for r in runs.values()}) == 1
    for recorded in runs.values():
        assert recorded["config"]["env"]["id"] == "physai/CartpoleBalance-v0"
        assert recorded["config"]["experiment"] == "smoke"
    assert runs["evaluate"]["summary"]["eval/mean_return"] == summary["eval"]["mean_return"]
    assert "profile/host/p99_ms" in runs["profile"]["summary"]
    assert "train/episode_return" in runs["train"]["history_keys"]


def test_manifest_is_standard_json(smoke_run):
    text = (smoke_run / "bundle" / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"manifest holds non-standard {name}"))
    manifest = json.loads(text)
    assert manifest["observation_space"]["low"] == [None] * 5  # unbounded, written as null


def test_a_failed_export_keeps_the_previous_bundle(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "failing_export"
    shutil.copytree(smoke_run, run_dir)
    bundle_before = {p.name: p.read_bytes() for p in (run_dir / "bundle").iterdir()}
    summary_before = (run_dir / "summary.json").read_text()
    result = run_cli(["run", str(run_dir), "--stages", "export", "tracking=none", "export.parity_tolerance=1e-15"])
    assert result.returncode == 2
    assert "the previous bundle was kept" in result.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / "bundle").iterdir()} == bundle_before
    assert (run_dir / "summary.json").read_text() == summary_before
    assert not list(run_dir.glob(".staging-*"))


def test_gate_refuses_figures_of_different_policies(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "stale"
    shutil.copytree(smoke_run, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["profile"]["policy_sha256"] = "0" * 64
    (run_dir / "summary.json").write_text(json.dumps(summary))
    result = run_cli(["run", str(run_dir), "--stages", "gate", "tracking=none"])
    assert result.returncode == 2 and "profile measured another bundle" in result.stderr


def test_stages_rerun_alone_on_an_existing_run(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "rerun"
    shutil.copytree(smoke_run, run_dir)
    checkpoint_before = (run_dir / "checkpoints/final/model.zip").read_bytes()
    result = run_cli(["run", str(run_dir), "--stages", "profile,gate", "tracking=none",
                      "gate.latency_p99_max_ms=0.000001"])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    latency_gate = next(g for g in summary["gates"]["gates"] if g["name"] == "host_latency_p99")
    assert latency_gate["passed"] is False and summary["gates"]["passed"] is False
    assert (run_dir / "checkpoints/final/model.zip").read_bytes() == checkpoint_before
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["gate"]["latency_p99_max_ms"] == 50.0
