"""Sweeps: Hydra multiruns that record failed trials and go on, their summary, and sweep-report."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.core.utils import JobStatus

from conftest import REPO, run_cli, run_train
from test_tracking import runs_by_job_type

from physai.run import sweeps

def _plugin(name: str):
    """A module of hydra_plugins/physai_plugins, also when the editable install predates it."""
    import importlib
    import sys

    dotted = f"hydra_plugins.physai_plugins.{name}"
    try:
        return importlib.import_module(dotted)
    except ImportError:
        spec = importlib.util.spec_from_file_location(dotted, REPO / "hydra_plugins" / "physai_plugins" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[dotted] = module
        spec.loader.exec_module(module)
        return module


# Small trials: 1024 PPO steps, two evaluation episodes (no video), a bundle without precision variants.
TINY = ["experiment=smoke", "algo.total_timesteps=1024", "pipeline.stages=[train,evaluate,export,report]",
        "export.fp16_variant=false", "export.int8_variant=false", "evaluate.n_episodes=2", "evaluate.video=false",
        "guard.evaluate_episodes=0"]


# ----- statistics ---------------------------------------------------------------------------
def test_iqm_is_the_mean_of_the_middle_half():
    assert sweeps.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5            # mean of 3, 4, 5, 6
    assert sweeps.iqm([1, 2, 3, 4, 100]) == 3.0                  # one trimmed from each end
    assert sweeps.iqm([5, 1, 3]) == 3.0                          # n=3: int(0.75) = 0 trimmed (as scipy)
    assert math.isnan(sweeps.iqm([]))
    # scipy.stats.trim_mean(x, 0.25)'s convention: int(0.25 * 37) = 9 values trimmed from each end.
    x = np.random.default_rng(1).normal(size=37)
    assert sweeps.iqm(x) == pytest.approx(np.sort(x)[9:28].mean())


def test_bootstrap_ci_on_known_numbers():
    # Two runs {0, 10}: resampled means are 0, 5 or 10 with probability 1/4, 1/2, 1/4 -> 95% CI [0, 10].
    assert sweeps.stratified_bootstrap_ci([0.0, 10.0], "mean", 4000, seed=3) == (0.0, 10.0)
    assert sweeps.stratified_bootstrap_ci([7.0, 7.0, 7.0], "iqm", 2000) == (7.0, 7.0)
    # Stratified: each task (column) is resampled within itself, so this mean never moves.
    scores = np.array([[0.0, 100.0], [0.0, 100.0]])
    assert sweeps.stratified_bootstrap_ci(scores, "mean", 2000) == (50.0, 50.0)
    low, high = sweeps.stratified_bootstrap_ci(np.arange(20.0), "iqm", 5000, seed=0)
    assert low < sweeps.iqm(np.arange(20.0)) < high and 5 < low and high < 14
    assert sweeps.stratified_bootstrap_ci([1.0, 2.0, 9.0], "iqm", 2000, seed=5) == \
        sweeps.stratified_bootstrap_ci([1.0, 2.0, 9.0], "iqm", 2000, seed=5)


def test_objective_configuration_and_common_overrides():
    assert sweeps.objective({"eval": {"mean_return": 12.5}}) == 12.5
    assert sweeps.objective({"eval": {"mean_return": float("nan")}}) is None
    assert sweeps.objective({}) is None
    assert sweeps.configuration_of(["seed=3", "algo.gamma=0.9"]) == "algo.gamma=0.9"
    assert sweeps.configuration_of(["+seed=3"]) == "(defaults)"
    common, own = sweeps.split_overrides([["a=1", "seed=0"], ["a=1", "seed=1"]])
    assert common == ["a=1"] and own == [["seed=0"], ["seed=1"]]


def _trial(sweep: Path, num: int, overrides: list[str], value, status="completed") -> None:
    run_dir = sweep / str(num)
    run_dir.mkdir(parents=True)
    summary = {"eval": {"mean_return": value}} if value is not None else {}
    sweeps.write_trial(run_dir, sweeps.trial_record(run_dir, num=num, overrides=overrides, status=status,
                                                    sweep_dir=str(sweep), summary=summary,
                                                    error=None if status == "completed" else "boom"))


def test_sweep_report_groups_seeds_by_configuration(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (lr, seed, value) in enumerate([(1, 0, 10.0), (1, 1, 20.0), (1, 2, 30.0), (1, 3, 1000.0),
                                             (2, 0, 5.0), (2, 1, None)]):
        _trial(sweep, num, [f"algo.learning_rate={lr}", f"seed={seed}"], value,
               status="completed" if value is not None else "failed")
    report = sweeps.sweep_report(sweep, resamples=2000)
    rows = {r["label"]: r for r in report["configurations"]}
    one, two = rows["algo.learning_rate=1"], rows["algo.learning_rate=2"]
    assert one["n"] == 4 and one["iqm"] == 25.0 and one["mean"] == 265.0 and one["seeds"] == [0, 1, 2, 3]
    # Resampling {10, 20, 30, 1000} four times: the IQM (middle two of four) is 10 whenever three or more draws
    # are 10, with probability (4 x 3 + 1) / 4^4 = 5.1% > 2.5%, and likewise 1000: the 95% CI is [10, 1000].
    assert one["iqm_ci95"] == [10.0, 1000.0]
    assert two["n"] == 1 and two["n_failed"] == 1 and two["iqm_ci95"] == [5.0, 5.0]
    assert report["best_configuration_label"] == "algo.learning_rate=1"
    assert report["best_trial"]["num"] == 3 and report["best_trial"]["objective"] == 1000.0
    assert (sweep / "sweep_report.png").stat().st_size > 0
    assert "| algo.learning_rate=1 | 4/4 | 25 [" in (sweep / "sweep_report.md").read_text()


# ----- configs ------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["hydra/launcher=ray", "hydra/launcher=slurm", "hydra/sweeper=physai_optuna"])
def test_sweep_configs_compose(override):
    group = override.split("=")[0].split("/")[1]
    if override.endswith("slurm") and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher not installed (pip install '.[sweep]')")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[override, "algo=sac"], return_hydra_config=True)
    node = cfg.hydra[group]
    assert node._target_.startswith("hydra_plugins.")
    if group == "sweeper":
        assert node.direction == "maximize" and "algo.tau" in node.search_spaces.sac
        assert (node.sampler, node.pruner, node.storage) == ("tpe", "median", None)
    GlobalHydra.instance().clear()


# ----- a real multirun ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """``seed=0,1`` x two parity tolerances: 1e-15 passes validation and fails at run time, in the export stage."""
    sweep = tmp_path_factory.mktemp("multirun") / "sweep"
    result = run_train(["-m", *TINY, "seed=0,1", "export.parity_tolerance=1e-5,1e-15", f"hydra.sweep.dir={sweep}"])
    return sweep, result


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(multirun):
    sweep, result = multirun
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["counts"] == {"completed": 2, "failed": 2, "pruned": 0, "interrupted": 0,
                                                          "incomplete": 0}
    by_num = {t["num"]: t for t in summary["trials"]}
    for num in (1, 3):   # export.parity_tolerance=1e-15
        assert by_num[num]["status"] == "failed" and "parity" in by_num[num]["error"]
        assert by_num[num]["objective"] is None and by_num[num]["eval"]["mean_return"] is not None
        assert "Traceback" in json.loads((sweep / str(num) / "trial.json").read_text())["traceback"]
    for num, seed in ((0, 0), (2, 1)):
        trial = by_num[num]
        assert trial["status"] == "completed" and trial["seed"] == seed and trial["error"] is None
        assert trial["objective"] == json.loads((sweep / str(num) / "summary.json").read_text())["eval"]["mean_return"]
        assert Path(trial["bundle"], "manifest.json").exists()
    assert summary["best"]["num"] in (0, 2)
    # The table at the end of the sweep lists every trial.
    assert "4 trial(s): 2 completed, 2 failed" in result.stdout
    assert "| 1 | seed=0 export.parity_tolerance=1e-15 | failed |" in result.stdout
    assert (sweep / "sweep_summary.md").exists()


def test_the_same_multirun_again_keeps_every_finished_run_and_its_record(multirun, tmp_path):
    """Rerunning a sweep's command into its directory retrains nothing and rewrites no record: each run there
    refuses to be overwritten, the record it finished with stands, and the sweep reports them all again."""
    sweep = tmp_path / "sweep"
    shutil.copytree(multirun[0], sweep)
    before = {num: (sweep / str(num) / "trial.json").read_text() for num in range(4)}
    result = run_train(["-m", *TINY, "seed=0,1", "export.parity_tolerance=1e-5,1e-15", f"hydra.sweep.dir={sweep}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {num: (sweep / str(num) / "trial.json").read_text() for num in range(4)} == before
    output = result.stdout + result.stderr
    assert "already holds checkpoints" in output and "the run there keeps its record (completed)" in output
    assert "4 trial(s): 2 completed, 2 failed" in result.stdout
    # Another sweep pointed at the same directory is refused run by run, and says so in each record.
    run_train(["-m", *TINY, "seed=2", f"hydra.sweep.dir={sweep}"])
    record = json.loads((sweep / "0" / "trial.json").read_text())
    assert record["status"] == "failed" and record["seed"] == 2
    assert "was trained with another config" in record["error"]


def test_sweep_report_on_the_multirun(multirun):
    sweep, _ = multirun
    out = run_cli(["sweep-report", str(sweep), "--resamples", "2000"])
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((sweep / "sweep_report.json").read_text())
    rows = {r["label"]: r for r in report["configurations"]}
    ok, bad = rows["export.parity_tolerance=1e-05"], rows["export.parity_tolerance=1e-15"]
    assert ok["n"] == 2 and sorted(ok["seeds"]) == [0, 1] and bad["n"] == 0 and bad["n_failed"] == 2
    # The two seeds' returns as their own runs wrote them (trials 0 and 2 in the sweep directory).
    returns = [json.loads((sweep / str(num) / "summary.json").read_text())["eval"]["mean_return"] for num in (0, 2)]
    assert sorted(ok["returns"]) == sorted(returns)
    # Two runs: the IQM trims none (int(0.25 x 2) = 0), so it is their mean; resampled means are the lower one,
    # the mean or the higher one (1/4, 1/2, 1/4), so the 95% CI runs from the lower return to the higher.
    assert ok["mean"] == pytest.approx((returns[0] + returns[1]) / 2) and ok["iqm"] == pytest.approx(ok["mean"])
    assert ok["iqm_ci95"] == pytest.approx([min(returns), max(returns)])
    assert ok["mean_ci95"] == pytest.approx([min(returns), max(returns)])
    best = report["best_trial"]
    assert Path(best["bundle"], "policy.onnx").exists()
    assert f"Best trial's bundle: {best['bundle']}" in out.stdout
    assert "| export.parity_tolerance=1e-05 | 2/2 |" in out.stdout
    assert (sweep / "sweep_report.png").stat().st_size > 0


def test_sweep_wandb_runs_are_grouped_per_sweep_with_a_job_type_per_stage(multirun):
    sweep, _ = multirun
    trial = runs_by_job_type(sweep / "0")
    assert set(trial) == {"train", "evaluate", "export", "report"}
    groups = {r["group"] for r in trial.values()} | {r["group"] for r in runs_by_job_type(sweep / "2").values()}
    assert groups == {f"sweep-{sweep.parent.name}_{sweep.name}"}
    assert trial["train"]["name"].startswith("t0-") and "train/episode_return" in trial["train"]["history_keys"]
    assert "eval/mean_return" in trial["evaluate"]["summary_keys"]
    bundle = [a for a in trial["export"]["artifacts"] if a["type"] == "model"]
    assert bundle and "policy.onnx" in bundle[0]["files"] and "trial-0" in bundle[0]["aliases"]
    assert "report/learning_curve/_type" in trial["report"]["history_keys"]
    failed = runs_by_job_type(sweep / "1")   # failed in its export stage
    assert failed["train"]["exit_code"] == 0 and failed["export"]["exit_code"] == 1
    assert failed["export"]["group"] in groups and "report" not in failed


# ----- Ray ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_launcher_runs_trials_in_parallel_locally(tmp_path):
    pytest.importorskip("ray")
    sweep = tmp_path / "ray"
    result = run_train(["-m", "experiment=smoke", "pipeline.stages=[train,evaluate]", "evaluate.n_episodes=2",
                        "evaluate.video=false", "seed=0,1", "hydra/launcher=ray", f"hydra.sweep.dir={sweep}"],
                       timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["counts"]["completed"] == 2
    assert "starting a local Ray instance" in result.stdout + result.stderr
    groups = {r["group"] for n in (0, 1) for r in runs_by_job_type(sweep / str(n)).values()}
    assert len(groups) == 1


def test_ray_launcher_records_a_trial_whose_worker_died(tmp_path):
    plugin = _plugin("ray_launcher")
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path), "subdir": "${hydra.job.num}"},
                                      "job": {"num": 4, "name": "train"}}})
    ret = plugin._failed_return(cfg, ["seed=2"], RuntimeError("worker died"))
    assert ret.status == JobStatus.COMPLETED and ret.return_value is None
    record = json.loads((tmp_path / "4" / "trial.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: worker died" and record["seed"] == 2



def test_a_stop_signal_ends_the_sweep_after_recording_the_trial(tmp_path):
    from omegaconf import OmegaConf

    from physai.train.guards import TrainingInterrupted

    def stopped(cfg, run_dir):
        raise TrainingInterrupted("SIGTERM during training; checkpoint written", 15)

    cfg = OmegaConf.create({"seed": 4, "gate": {"strict": False}})
    with pytest.raises(SystemExit) as exit_info:
        sweeps.run_trial(cfg, tmp_path, runner=stopped)
    assert exit_info.value.code == 143
    record = json.loads((tmp_path / "trial.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("TrainingInterrupted: SIGTERM")


def test_a_trial_that_raises_is_recorded_and_returns_no_objective(tmp_path):
    from omegaconf import OmegaConf

    def broken(cfg, run_dir):
        raise ValueError("diverged")

    cfg = OmegaConf.create({"seed": 4, "gate": {"strict": False}})
    assert sweeps.run_trial(cfg, tmp_path, runner=broken) == {}
    record = json.loads((tmp_path / "trial.json").read_text())
    assert record["status"] == "failed" and record["error"] == "ValueError: diverged" and record["seed"] == 4
    assert "Traceback" in record["traceback"] and record["objective"] is None
