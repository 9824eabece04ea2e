"""The benchmark commands run end to end and print the figures their issues name (tiny budgets here)."""

from __future__ import annotations

import json

from conftest import run_cli


def test_bench_sim_reports_the_named_figures(tmp_path):
    result = run_cli(["bench", "sim", "--task", "cartpole_balance", "--envs", "1,4", "--threads", "1,2",
                      "--seconds", "0.05", "--ppo-timesteps", "0", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"steps_per_s", "ratio_vs_gymnasium_sync", "fraction_of_raw_rollout", "memory_per_env_bytes"} <= set(figures)
    assert len(figures["points"]) == 3 and all(p["physai_steps_per_s"] > 0 for p in figures["points"])
    # Effective threads: one env runs on one thread, so N=1 is measured once, not once per thread count.
    assert [(p["num_envs"], p["threads"]) for p in figures["points"]] == [(1, 1), (4, 1), (4, 2)]
    assert (tmp_path / "sim_scaling_cartpole_balance.png").stat().st_size > 1000


def test_bench_edge_reports_the_named_figures(smoke_run):
    result = run_cli(["bench", "edge", str(smoke_run / "bundle"), "--iterations", "200", "--rounds", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"runtime_p99_over_ort", "runtime_p99_over_torch", "host_model_error"} <= set(figures)
    # The host prediction is made before timing, from micro-benchmarked overheads, and compared with the runtime.
    assert figures["host_model"]["predicted_ms"] > 0 and figures["host_model"]["modeled"] is True
    assert abs(figures["host_model_error"]) < 1.0
    assert figures["latency"]["physai_runtime"]["n"] == 400
