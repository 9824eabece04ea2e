"""`physai gate CANDIDATE --reference BUNDLE`: a bundle passes against itself; a worse one is refused with a table."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from conftest import run_cli


def _row(stdout: str, gate: str) -> str:
    return next(line for line in stdout.splitlines() if gate in line)


def _negated_candidate(smoke_run, tmp_path):
    """The reference's policy with its action sign flipped: same network and cost, much worse behaviour."""
    import onnx
    from onnx import helper

    target = tmp_path / "candidate" / "bundle"
    shutil.copytree(smoke_run / "bundle", target)
    model = onnx.load(str(target / "policy.onnx"))
    last = next(node for node in model.graph.node if "action" in node.output)
    last.output[list(last.output).index("action")] = "action_unflipped"
    model.graph.node.append(helper.make_node("Neg", ["action_unflipped"], ["action"], name="flip"))
    onnx.save(model, str(target / "policy.onnx"))
    manifest = json.loads((target / "manifest.json").read_text())
    for name in [n for n in manifest["files"] if n != "policy.onnx"]:
        (target / name).unlink()
        del manifest["files"][name]
    manifest.pop("evaluation", None)  # its recorded returns were the reference's
    manifest.pop("variants", None)
    data = (target / "policy.onnx").read_bytes()
    manifest["files"]["policy.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _candidate_with_delay_eval(smoke_run, tmp_path, delayed, zero, config=False):
    """The run's bundle in a run directory whose summary holds a delay_eval with known host_cpu returns."""
    run_dir = tmp_path / "candidate_run"
    shutil.copytree(smoke_run / "bundle", run_dir / "bundle")
    section = json.loads((smoke_run / "summary.json").read_text())["delay_eval"]
    section["solved_threshold"] = 450.0
    section["zero_delay"].update({"mean_return": sum(zero) / len(zero), "episode_returns": zero})
    section["devices"]["host_cpu"].update({"mean_return": sum(delayed) / len(delayed), "ci95_low": min(delayed),
                                           "ci95_high": max(delayed), "n_episodes": len(delayed),
                                           "episode_returns": delayed})
    (run_dir / "summary.json").write_text(json.dumps({"delay_eval": section}))
    if config:
        shutil.copy(smoke_run / "config.yaml", run_dir / "config.yaml")
    return run_dir / "bundle"


def test_a_bundle_passes_against_itself(smoke_run, tmp_path):
    candidate = _candidate_with_delay_eval(smoke_run, tmp_path, delayed=[460.0, 470.0, 480.0], zero=[490.0] * 3)
    bundle = str(smoke_run / "bundle")
    result = run_cli(["gate", str(candidate), "--reference", bundle, "--device", "host_cpu", "--json",
                      str(tmp_path / "gates.json")])
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((tmp_path / "gates.json").read_text())
    names = [g["name"] for g in figures["gates"]]
    # The same names as the pipeline's gate for the same checks (physai.deploy.gates builds both).
    assert names == ["quality_drop", "p99_vs_reference", "host_latency_p99", "host_latency_p99_within_control_period",
                     "host_cpu_cost_vs_reference", "host_cpu_solves_under_delay"]
    gates = {g["name"]: g for g in figures["gates"]}
    assert gates["quality_drop"]["value"] == 0.0
    assert gates["host_cpu_cost_vs_reference"]["value"] == pytest.approx(1.0)
    assert gates["host_cpu_cost_vs_reference"]["modeled"] and not gates["p99_vs_reference"]["modeled"]
    assert figures["thresholds"] == {"quality_max_drop_points": 2.0, "reference_p99_max_ratio": 1.2,
                                     "latency_p99_max_ms": 50.0, "latency_within_control_period": True,
                                     "cost_max_ratio": 1.2, "require_delay_eval": True}
    assert gates["host_cpu_solves_under_delay"]["value"] == pytest.approx(470.0)
    assert "recorded by delay_eval" in gates["host_cpu_solves_under_delay"]["detail"]
    assert "FAIL" not in result.stdout and "release: PASS" in result.stdout


def test_stricter_thresholds_fail_with_exit_3_and_a_table(smoke_run):
    bundle = str(smoke_run / "bundle")
    result = run_cli(["gate", bundle, "--reference", bundle, "--device", "host_cpu", "--max-latency-ms", "1e-6",
                      "--max-cost-ratio", "0.5", "--control-rate", "1e9"])
    assert result.returncode == 3, result.stdout + result.stderr
    for gate in ("host_latency_p99", "host_latency_p99_within_control_period", "host_cpu_cost_vs_reference"):
        assert "FAIL" in _row(result.stdout, gate), result.stdout
    assert "PASS" in _row(result.stdout, "quality_drop")
    assert "promotion refused" in result.stdout


def test_a_degraded_candidate_fails_the_quality_gate(smoke_run, tmp_path):
    candidate = _negated_candidate(smoke_run, tmp_path)
    result = run_cli(["gate", str(candidate), "--reference", str(smoke_run / "bundle"), "--device", "host_cpu",
                      "--episodes", "10", "--json", str(tmp_path / "gates.json")])
    assert result.returncode == 3, result.stdout + result.stderr
    row = _row(result.stdout, "quality_drop")
    quality = json.loads((tmp_path / "gates.json").read_text())["gates"][0]
    assert "FAIL" in row and "10 seeds" in quality["detail"]  # the table may fold the text across lines
    assert "PASS" in _row(result.stdout, "host_cpu_cost_vs_reference")  # same network, same modeled cost


def test_an_unknown_device_is_refused_with_the_known_ones(smoke_run):
    bundle = str(smoke_run / "bundle")
    result = run_cli(["gate", bundle, "--reference", bundle, "--device", "jetson_nano_9000"])
    assert result.returncode == 2
    assert "unknown device 'jetson_nano_9000'" in result.stderr and "host_cpu" in result.stderr


def test_a_tampered_candidate_is_refused_before_any_gate(smoke_run, tmp_path):
    candidate = tmp_path / "bundle"
    shutil.copytree(smoke_run / "bundle", candidate)
    data = bytearray((candidate / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (candidate / "policy.onnx").write_bytes(bytes(data))
    result = run_cli(["gate", str(candidate), "--reference", str(smoke_run / "bundle"), "--device", "host_cpu"])
    assert result.returncode == 2 and "does not match its manifest checksum" in result.stderr


def test_a_candidate_that_does_not_solve_under_a_targets_delay_is_refused(smoke_run, tmp_path):
    candidate = _candidate_with_delay_eval(smoke_run, tmp_path, delayed=[300.0, 310.0, 320.0], zero=[480.0] * 3)
    result = run_cli(["gate", str(candidate), "--reference", str(smoke_run / "bundle"), "--device", "host_cpu",
                      "--iterations", "1000", "--repeats", "1", "--json", str(tmp_path / "gates.json")])
    assert result.returncode == 3, result.stdout + result.stderr
    assert "FAIL" in _row(result.stdout, "host_cpu_solves_under_delay") and "promotion refused" in result.stdout
    gate = {g["name"]: g for g in json.loads((tmp_path / "gates.json").read_text())["gates"]}
    row = gate["host_cpu_solves_under_delay"]
    assert row["value"] == pytest.approx(310.0) and row["threshold"] == 450.0 and row["ci95"] == [300.0, 320.0]
    for text in ("host CPU", "return 310 [300, 320]", "threshold 450", "solves only without delay"):
        assert text in row["detail"], row["detail"]


def test_without_a_recorded_delay_eval_the_gate_evaluates_the_candidate_as_the_pipeline_did(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "bundle", run_dir / "bundle")
    shutil.copy(smoke_run / "config.yaml", run_dir / "config.yaml")
    result = run_cli(["gate", str(run_dir / "bundle"), "--reference", str(smoke_run / "bundle"), "--device",
                      "host_cpu", "--iterations", "1000", "--repeats", "1", "--json", str(tmp_path / "gates.json")])
    assert result.returncode in (0, 3), result.stdout + result.stderr
    row = {g["name"]: g for g in json.loads((tmp_path / "gates.json").read_text())["gates"]}[
        "host_cpu_solves_under_delay"]
    recorded = json.loads((smoke_run / "summary.json").read_text())["delay_eval"]["devices"]["host_cpu"]
    # A fast board is one step late with or without jitter: the same episodes as the pipeline's delay_eval.
    assert "evaluated here on 5 seeds" in row["detail"]
    assert row["value"] == pytest.approx(recorded["mean_return"]) and row["passed"] == recorded["solves_task"]


def test_an_unchecked_target_reads_not_run_and_fails_unless_waived(smoke_run, tmp_path):
    alone = tmp_path / "bundle"
    shutil.copytree(smoke_run / "bundle", alone)  # no summary, no config beside it: nothing to evaluate with
    args = ["gate", str(alone), "--reference", str(smoke_run / "bundle"), "--device", "host_cpu"]
    result = run_cli(args + ["--iterations", "1000", "--repeats", "1", "--json", str(tmp_path / "unchecked.json")])
    assert result.returncode == 3, result.stdout + result.stderr
    assert "NOT RUN (FAIL)" in _row(result.stdout, "host_cpu_solves_under_delay")
    row = {g["name"]: g for g in json.loads((tmp_path / "unchecked.json").read_text())["gates"]}[
        "host_cpu_solves_under_delay"]
    assert not row["passed"] and "pass --config" in row["detail"]
    waived = run_cli(args + ["--no-require-delay-eval", "--json", str(tmp_path / "gates.json")])
    row = {g["name"]: g for g in json.loads((tmp_path / "gates.json").read_text())["gates"]}[
        "host_cpu_solves_under_delay"]
    assert row["status"] == "not run" and row["passed"] is True, waived.stdout
