"""`physai profile` speaks trtexec's vocabulary: every percentile at every batch size, measured, with a histogram."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

TRTEXEC_FIELDS = ("Throughput:", "min =", "max =", "mean =", "median =", "percentile(90%) =", "percentile(95%) =",
                  "percentile(99%) =", "Total Host Walltime:")


def test_profile_reports_every_percentile_per_batch_and_writes_the_histogram(smoke_run, tmp_path):
    out = tmp_path / "profile"
    result = run_cli(["profile", str(smoke_run / "bundle"), "--iterations", "300", "--warmup", "20",
                      "--batch", "1,8,64", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    for batch in (1, 8, 64):
        lines = [line for line in result.stdout.splitlines() if line.startswith(f"[batch {batch}]")]
        text = " ".join(lines)
        for field in TRTEXEC_FIELDS:
            assert field in text, (batch, field, result.stdout)
    assert "measured on this host" in result.stdout
    assert (out / "latency_histogram_b1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((out / "profile.json").read_text())
    assert figures["measured"] is True and figures["host"]["cpu"]
    rows = {row["batch"]: row for row in figures["batches"]}
    assert set(rows) == {1, 8, 64}
    for batch, row in rows.items():
        assert row["n"] == 300
        # 300 timed calls of `batch` actions each, over the timed loop's wall time (trtexec's throughput).
        assert row["actions_per_s"] * row["total_host_wall_s"] == pytest.approx(300 * batch)
        # The per-call times sum to no more than that wall time, and the timer brackets nearly all of it.
        busy_s = row["mean_ms"] * 300 / 1e3
        assert 0.5 * row["total_host_wall_s"] <= busy_s <= row["total_host_wall_s"], (batch, row)
    # The percentile arithmetic itself is checked on samples with known answers in tests/test_stats.py.


def test_profile_runs_for_a_duration_on_a_variant(smoke_run, tmp_path):
    result = run_cli(["profile", str(smoke_run / "bundle"), "--duration", "0.2", "--warmup", "10", "--batch", "1",
                      "--variant", "int8", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "profile.json").read_text())
    row = figures["batches"][0]
    assert figures["variant"] == "int8" and figures["policy_file"] == "policy_int8.onnx"
    assert row["n"] > 10 and row["total_host_wall_s"] >= 0.2


@pytest.mark.parametrize("args,needle", [
    (["--batch", "1,x"], "--batch"),
    (["--batch", "0"], "positive"),
    (["--iterations", "0"], "--iterations"),
])
def test_profile_refuses_bad_arguments(smoke_run, args, needle):
    result = run_cli(["profile", str(smoke_run / "bundle"), *args])
    assert result.returncode == 2 and needle in result.stderr, result.stderr


def test_profile_of_a_missing_bundle_is_a_clear_error(tmp_path):
    result = run_cli(["profile", str(tmp_path / "nowhere")])
    assert result.returncode == 2 and "manifest.json does not exist" in result.stderr
