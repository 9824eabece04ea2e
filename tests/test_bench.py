"""The benchmark commands run end to end and print the figures their issues name (tiny budgets here)."""

from __future__ import annotations

import json

from conftest import run_cli


def test_bench_edge_reports_the_named_figures(smoke_run, tmp_path):
    result = run_cli(["bench", "edge", str(smoke_run / "bundle"), "--iterations", "200", "--rounds", "2",
                      "--warmup", "20", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"runtime_p99_over_ort_iobinding", "runtime_p99_over_ort_run", "runtime_p99_over_torch",
            "host_model_error", "target"} <= set(figures)
    # Every contender, bare onnxruntime with IOBinding among them, timed the same number of calls.
    assert {"physai_runtime", "onnxruntime_iobinding", "onnxruntime_run", "torch_eager"} <= set(figures["latency"])
    assert {fig["n"] for fig in figures["latency"].values()} == {400}
    runtime = figures["latency"]["physai_runtime"]
    assert len(runtime["rounds"]["p99_ms"]) == 2
    assert runtime["p99_over_rounds_ms"]["min"] <= runtime["p99_over_rounds_ms"]["max"]
    assert figures["target"]["runtime_p99_over_ort_iobinding_max"] == 1.1
    # The host prediction is made before timing, from micro-benchmarked overheads and this machine's clock.
    host = figures["host_model"]
    assert host["predicted_ms"] > 0 and host["modeled"] is True and host["host_facts"]["from_machine"]
    assert abs(figures["host_model_error"]) < 1.0
    saved = json.loads((tmp_path / "edge.json").read_text())
    assert saved["command"].startswith("physai bench edge") and saved["machine"]["onnxruntime"]
    assert saved["machine"]["numpy"] and saved["settings"]["n_per_contender"] == 400
    assert (tmp_path / "edge.png").stat().st_size > 1000


def test_interleaving_calls_every_contender_once_per_iteration_in_varied_order():
    from physai.deploy.latency import time_interleaved

    log: list[int] = []
    calls = [lambda i=i: log.append(i) for i in range(3)]
    samples = time_interleaved(calls, 300, seed=1)
    assert samples.shape == (3, 300) and (samples >= 0).all()
    passes = [tuple(log[i:i + 3]) for i in range(0, len(log), 3)]
    assert all(sorted(p) == [0, 1, 2] for p in passes)  # one call each per iteration
    # Every contender runs right after every other one: no fixed neighbour.
    followers = {(a, b) for p in passes for a, b in zip(p, p[1:])}
    assert followers == {(a, b) for a in range(3) for b in range(3) if a != b}
