"""The wandb tracker, offline: one run per stage (job_type), grouped by sweep or run, outputs logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wandb_records import _payloads

from physai.run.tracking import NullTracker, WandbTracker


def read_run_records(path: Path) -> dict:
    """What an offline run file holds: group, job_type, name, history keys, artifacts, exit code."""
    from wandb.proto import wandb_internal_pb2

    out = {"group": None, "job_type": None, "name": None, "history_keys": set(), "artifacts": [],
           "summary_keys": set(), "exit_code": None}
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(group=record.run.run_group, job_type=record.run.job_type, name=record.run.display_name)
        elif kind == "history":
            out["history_keys"].update("/".join(item.nested_key) if item.nested_key else item.key
                                       for item in record.history.item)
        elif kind == "summary":
            out["summary_keys"].update("/".join(item.nested_key) if item.nested_key else item.key
                                       for item in record.summary.update)
        elif kind == "artifact":
            out["artifacts"].append({"type": record.artifact.type, "name": record.artifact.name,
                                     "files": sorted(m.path for m in record.artifact.manifest.contents),
                                     "aliases": list(record.artifact.aliases)})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def runs_by_job_type(run_dir: Path) -> dict[str, dict]:
    import wandb

    wandb.teardown()  # in-process runs: the wandb service writes the files; let it flush them
    runs = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        recorded = read_run_records(path)
        recorded["files"] = path.parent / "files"
        runs[recorded["job_type"]] = recorded
    return runs


def _fake_outputs(run_dir: Path) -> None:
    """A bundle, a plot and a video, as the export, report and evaluate stages write them."""
    import imageio.v2 as imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bundle = run_dir / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "policy.onnx").write_bytes(b"onnx")
    (bundle / "manifest.json").write_text(json.dumps({"format_version": 1, "provenance": {
        "seed": 3, "env_id": "physai/CartpoleBalance-v0", "algo": "ppo"}}))
    report = run_dir / "report"
    report.mkdir()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(report / "plot.png")
    plt.close(fig)
    frames = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    imageio.mimwrite(report / "episode.mp4", frames, fps=5)


def _tracker(run_dir: Path, **kwargs) -> WandbTracker:
    return WandbTracker(run_dir=run_dir, run_config={"env": {"id": "physai/CartpoleBalance-v0"}, "seed": 3},
                        name="unit-ppo-s3", mode="offline", **kwargs)


def test_one_run_per_stage_with_outputs_logged(tmp_path):
    run_dir = tmp_path / "2026-01-02" / "03-04-05"
    run_dir.mkdir(parents=True)
    tracker = _tracker(run_dir)
    with tracker.stage("train"):
        tracker.log({"train/episode_return": 1.0})
        tracker.summary("train", {"timesteps": 10, "eval": {"mean": 1.5, "n": 4}, "note": "ok"})
    with tracker.stage("export"):
        _fake_outputs(run_dir)
    tracker.finish()
    runs = runs_by_job_type(run_dir)
    assert set(runs) == {"train", "export"}
    # The installed packages are recorded once per pipeline, with its first stage's run.
    requirements = (runs["train"]["files"] / "requirements.txt").read_text()
    assert "stable_baselines3" in requirements.replace("-", "_") and "mujoco==" in requirements
    assert {r["group"] for r in runs.values()} == {"run-2026-01-02_03-04-05"}
    assert runs["train"]["name"] == "unit-ppo-s3-train"
    assert "train/episode_return" in runs["train"]["history_keys"]
    assert {"train/timesteps", "train/eval/mean", "train/eval/n", "train/note"} <= runs["train"]["summary_keys"]
    export = runs["export"]
    assert [a["type"] for a in export["artifacts"]] == ["model"]
    assert export["artifacts"][0]["name"] == "bundle-physai-CartpoleBalance-v0-ppo"
    assert export["artifacts"][0]["files"] == ["manifest.json", "policy.onnx"]
    assert "seed-3" in export["artifacts"][0]["aliases"]
    assert "report/plot/_type" in export["history_keys"]        # wandb.Image
    assert "report/episode/_type" in export["history_keys"]     # wandb.Video, from the MP4 file
    media = list((run_dir / "wandb").glob("offline-run-*/files/media/videos/report/episode*.mp4"))
    assert media, "the video should be copied into the offline run for `wandb sync`"


def test_a_failed_stage_is_a_failed_run_and_outputs_are_logged_once(tmp_path):
    tracker = _tracker(tmp_path)
    with pytest.raises(RuntimeError):
        with tracker.stage("evaluate"):
            (tmp_path / "report").mkdir()
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(2, 2))
            fig.savefig(tmp_path / "report" / "curve.png")
            plt.close(fig)
            tracker.log_image("report/curve", tmp_path / "report" / "curve.png")
            raise RuntimeError("boom")
    with tracker.stage("report"):
        pass  # curve.png is not logged again
    tracker.finish()
    runs = runs_by_job_type(tmp_path)
    assert runs["evaluate"]["exit_code"] == 1 and runs["report"]["exit_code"] == 0
    assert "report/curve/_type" in runs["evaluate"]["history_keys"]
    assert not any(k.startswith("report/curve") for k in runs["report"]["history_keys"])


def test_a_sweep_trial_is_grouped_by_its_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "2026-01-02" / "03-04-05"
    trial = sweep / "7"
    trial.mkdir(parents=True)
    (trial / "trial.json").write_text(json.dumps({"sweep_dir": str(sweep), "num": 7, "overrides": ["seed=1"]}))
    tracker = _tracker(trial)
    with tracker.stage("gate"):
        pass
    tracker.finish()
    runs = runs_by_job_type(trial)
    assert runs["gate"]["group"] == "sweep-2026-01-02_03-04-05"
    assert runs["gate"]["name"] == "t7-unit-ppo-s3-gate"


def test_null_tracker_has_the_stage_scope():
    tracker = NullTracker()
    with tracker.stage("train"):
        tracker.log({"x": 1.0})
    tracker.finish()
