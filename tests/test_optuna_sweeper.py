"""hydra/sweeper=physai_optuna: search spaces, bad input refused before any trial, pruning fed by evaluations
during training, seeds' means, a study shared through its storage, a sweep killed for real and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from conftest import NO_VIDEO, REPO, compose_config, run_cli, run_train
from test_sweeps import _plugin

from physai.core.errors import ConfigError
from physai.run import cli, sweeps
from physai.run.pipeline import run_pipeline
from physai.train import study as optuna_study

plugin = _plugin("optuna_sweeper")

# Trials of a few seconds: 512 PPO steps, evaluated at step 256 during training, two final episodes.
QUICK = ["experiment=smoke", "algo.total_timesteps=512", "pipeline.stages=[train,evaluate]", "evaluate.n_episodes=2",
         "evaluate.interval_steps=256", "evaluate.interval_episodes=2", "tracking=none"]


def _study(sweep):
    """The sweep's study as ``physai sweep-report`` opens it (these sweeps keep it in a journal file, which
    holds no connection, so it can still be read after the context closes)."""
    with sweeps.loaded_study(sweep, sweeps.read_study_record(sweep)) as study:
        return study


def _journal_study(path: Path, pruner: dict, name: str = "physai") -> tuple[optuna.Study, object]:
    storage = optuna_study.open_storage(str(path))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(optuna_study.PRUNER_ATTR, pruner)
    return study, storage


def _sweeper(overrides: list[str], **settings):
    """The sweeper as Hydra sets it up for ``train.py -m`` with ``overrides``, before it runs anything."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        config = compose(config_name="config", overrides=["hydra/sweeper=physai_optuna", *overrides],
                         return_hydra_config=True)
    configured = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    configured.pop("_target_")
    sweeper = plugin.PhysaiOptunaSweeper(**{**configured, **settings})
    sweeper.config = config
    return sweeper


# ----- search spaces and seeds ------------------------------------------------------------------
def test_the_search_space_grammar_becomes_optuna_distributions():
    space = plugin.parse_search_space({"algo.learning_rate": "tag(log, interval(1e-4, 3e-3))",
                                       "algo.n_epochs": "int(interval(3, 15))", "algo.gamma": "choice(0.99, 0.999)",
                                       "algo.batch_size": "range(64, 257, 64)", "+algo.extra": "interval(0, 1)",
                                       "algo.net_arch": "[64,64],[32]"})
    d = space.distributions
    assert d["algo.learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True)
    assert d["algo.n_epochs"] == optuna.distributions.IntDistribution(3, 15)
    assert d["algo.gamma"].choices == (0.99, 0.999)
    assert d["algo.batch_size"] == optuna.distributions.IntDistribution(64, 256, step=64)  # range's stop is exclusive
    assert d["algo.net_arch"].choices == ("[64,64]", "[32]")
    assert space.grid["algo.batch_size"] == [64, 128, 192, 256] and "algo.learning_rate" not in space.grid
    assert space.overrides({"algo.gamma": 0.999, "algo.extra": 0.25}) == ["algo.gamma=0.999", "+algo.extra=0.25"]


def test_a_configuration_folds_its_seeds_into_their_mean():
    assert plugin.fold_seed_returns([1.0, 3.0]) == 2.0
    assert plugin.fold_seed_returns([1.0, None]) is None          # a failed seed fails the configuration
    assert sweeps.configuration_of(["algo.gamma=0.9", "seed=1", "sweep.trial=3", "sweep.seeds=[0,1]"]) == \
        "algo.gamma=0.9"


# ----- bad input, refused before any trial starts --------------------------------------------------
@pytest.mark.parametrize("setting, message", [
    ({"sampler": "bayes"}, "hydra.sweeper.sampler='bayes' is not a sampler physai knows; use one of ['cmaes', 'grid'"),
    ({"pruner": "patient"}, "hydra.sweeper.pruner='patient' is not a pruner physai knows; use one of ['hyperband'"),
    ({"params": {"algo.learning_rat": "interval(1e-4, 1e-3)"}},
     "sweeps algo.learning_rat, which is not a key of the composed config (algo=ppo); did you mean algo.learning_rate?"),
    ({"sampler": "grid"}, "sampler=grid needs discrete values, but ['algo.ent_coef', 'algo.learning_rate', "),
])
def test_bad_sweeper_settings_are_refused_with_the_fix(setting, message):
    with pytest.raises(ConfigError, match=".*" + message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        _sweeper(["experiment=smoke"], **setting).plan([])


def test_a_storage_that_cannot_be_opened_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"hydra.sweeper.storage='sqlite:////no/such/dir/x.db' cannot be opened "
                                          r"\(OperationalError.*or leave it null for a journal file"):
        optuna_study.open_storage(optuna_study.storage_spec("sqlite:////no/such/dir/x.db", tmp_path))
    assert optuna_study.storage_spec(None, tmp_path) == str(tmp_path / "optuna_journal.log")


def test_a_relative_sqlite_file_is_one_file_wherever_a_worker_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert optuna_study.storage_spec("sqlite:///optuna.db", tmp_path / "sweep") == f"sqlite:///{tmp_path}/optuna.db"
    assert optuna_study.storage_spec("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"


def test_a_study_that_holds_another_sweep_is_refused(tmp_path):
    """A second search pointed at the same database and study name would count the first one's trials as its own."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = _sweeper(["experiment=smoke", f"hydra.sweep.dir={tmp_path / 'first'}"], storage=storage)
    space, _ = first.plan([])
    study, _, _ = first.open_study(space, tmp_path / "first")
    study.ask().set_user_attr("sweep_dir", str(tmp_path / "first"))
    second = _sweeper(["experiment=smoke", f"hydra.sweep.dir={tmp_path / 'second'}"], storage=storage)
    with pytest.raises(ConfigError, match="holds the trials of another sweep .*hydra.sweeper.study_name"):
        second.open_study(space, tmp_path / "second")
    first.open_study(space, tmp_path / "first")   # the same sweep again (a resume) opens it


def test_a_finished_trials_run_trains_on_without_its_study(tmp_path):
    """Rerunning a trial's run directory after its sweep recorded the trial reports nothing to the study."""
    study, _ = _journal_study(tmp_path / "journal.log", {"name": "median", "kwargs": {}})
    trial = study.ask()
    node = OmegaConf.create({"study": "physai", "storage": str(tmp_path / "journal.log"), "trial": trial.number,
                             "seeds": []})
    optuna_study.running_trial(node, seed=0).close()
    study.tell(trial, 1.0)
    assert optuna_study.running_trial(node, seed=0) is None


def test_a_trial_gives_its_database_connections_back_when_it_stops_reporting(tmp_path):
    """A run must not hold a connection to the sweep's database server after training: workers x seeds add up."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="physai", storage=url, direction="maximize")
    number = study.ask().number
    node = OmegaConf.create({"study": "physai", "storage": url, "trial": number, "seeds": []})
    trial = optuna_study.running_trial(node, seed=0)
    assert trial.report(100, 1.0) is False
    assert trial.storage.engine.pool.checkedin() >= 1       # pooled connections the reports went through
    trial.close()
    assert trial.storage.engine.pool.checkedin() == 0
    assert study.trials[number].intermediate_values == {100: 1.0}


def test_the_sweep_stops_on_bad_input_before_any_trial(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweeper = _sweeper(["experiment=smoke", f"hydra.sweep.dir={sweep}"], pruner="patient")
    with pytest.raises(SystemExit) as exit_info:
        sweeper.sweep([])   # Hydra's call: the launcher is never reached
    assert exit_info.value.code == 2
    assert "physai: error: hydra.sweeper.pruner='patient' is not a pruner physai knows" in capsys.readouterr().err
    assert not sweep.exists()   # nothing was written, no trial ran
    assert cli.main(["sweep", "resume", str(tmp_path)]) == 2
    assert f"sweep resume: '{tmp_path}' holds no optuna study (optuna_study.json is missing" in capsys.readouterr().err


# ----- pruning -----------------------------------------------------------------------------------
def test_with_seeds_repeated_the_pruner_judges_their_mean_at_each_step(tmp_path):
    study, storage = _journal_study(tmp_path / "journal.log", {"name": "median", "kwargs": {"n_startup_trials": 1}})
    study.add_trial(optuna.trial.create_trial(value=10.0, intermediate_values={100: 10.0, 200: 10.0}))
    trial = study.ask()
    node = OmegaConf.create({"study": "physai", "storage": str(tmp_path / "journal.log"), "trial": trial.number,
                             "seeds": [0, 1]})
    first, second = optuna_study.StudyTrial(node, seed=0), optuna_study.StudyTrial(node, seed=1)
    assert first.report(100, 1.0) is False                 # seed 1 has not reached step 100: nothing judged yet
    assert storage.get_trial(trial._trial_id).intermediate_values == {}
    assert second.report(100, 3.0) is True                 # mean 2.0 < the median 10.0 of finished trials
    assert storage.get_trial(trial._trial_id).intermediate_values == {100: 2.0}
    assert first.report(200, 50.0) is True                 # its other seed stops at its next evaluation


def test_a_pruned_run_stops_training_and_records_what_did_not_run(tmp_path, one_torch_thread, monkeypatch):
    closed = []
    monkeypatch.setattr(optuna_study.StudyTrial, "close", lambda self: closed.append(self.number))
    study, storage = _journal_study(tmp_path / "journal.log", {"name": "median", "kwargs": {"n_startup_trials": 1}})
    study.add_trial(optuna.trial.create_trial(value=1e6, intermediate_values={256: 1e6}))
    trial = study.ask()
    cfg = compose_config([*QUICK, *NO_VIDEO, "seed=3", "sweep.study=physai",
                          f"sweep.storage={tmp_path / 'journal.log'}", f"sweep.trial={trial.number}"])
    run_dir = tmp_path / "run"
    assert sweeps.run_trial(cfg, run_dir, run_pipeline) == {}
    record = json.loads((run_dir / "trial.json").read_text())
    assert record["status"] == "pruned" and record["objective"] is None and record["error"] is None
    assert record["pruned"]["step"] == 256 and record["pruned"]["stages_not_run"] == ["evaluate"]
    assert record["pruned"]["last_evaluation"]["n_episodes"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"train"} and summary["train"]["pruned_at_step"] == 256
    # The final checkpoint holds the policy as of the rollout start it was judged at (two envs x 128 steps).
    assert summary["train"]["timesteps"] == 256 and (run_dir / "checkpoints" / "final" / "model.zip").exists()
    assert [e["step"] for e in summary["train"]["evaluations"]] == [256]
    frozen = storage.get_trial(trial._trial_id)
    assert frozen.intermediate_values == {256: record["pruned"]["last_evaluation"]["mean_return"]}
    assert frozen.user_attrs[optuna_study.PRUNED_AT_ATTR] == 256
    assert closed == [trial.number]   # the pruned run let go of the study's storage


def test_an_evaluation_interval_beyond_the_budget_is_refused():
    from physai.config.validate import validate_config

    with pytest.raises(ConfigError, match="evaluate.interval_steps=4096 is not below algo.total_timesteps=2048"):
        validate_config(compose_config(["experiment=smoke", "evaluate.interval_steps=4096"]))


# ----- a real sweep, killed and resumed -----------------------------------------------------------
SWEEP = ["-m", *QUICK, "hydra/sweeper=physai_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.seeds=[0,1]",
         "+hydra.sweeper.pruner_kwargs.n_startup_trials=1"]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Three configurations x seeds [0, 1]: SIGKILLed (for real) once the second configuration's first run has
    begun, then resumed with ``physai sweep resume``."""
    sweep = tmp_path_factory.mktemp("optuna") / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    log = open(sweep.parent / "first.log", "w")
    first = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SWEEP, *NO_VIDEO, f"hydra.sweep.dir={sweep}"],
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 240
    while not (sweep / "2" / ".hydra" / "overrides.yaml").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = sorted(p.name for p in sweep.iterdir())
    resumed = run_cli(["sweep", "resume", str(sweep)])
    return sweep, killed, resumed


def test_a_killed_sweep_resumes_and_runs_only_the_missing_trials(killed_and_resumed):
    sweep, killed, resumed = killed_and_resumed
    assert "2" in killed and "4" not in killed and "multirun.yaml" in killed
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    by_num = {t["num"]: t for t in summary["trials"]}
    # Runs 0 and 1 (configuration 0) finished before the kill and were not rerun; run 2 was cut off.
    assert by_num[2]["status"] == "interrupted" and "requeued" in by_num[2]["error"]
    assert by_num[0]["status"] in ("completed", "pruned") and by_num[0]["optuna_trial"] == 0
    study = _study(sweep)
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] in ("COMPLETE", "PRUNED") and states[1] == "FAIL"
    assert study.trials[1].user_attrs[optuna_study.INTERRUPTED_ATTR] is True
    requeued = [t for t in study.trials if t.user_attrs.get(optuna_study.REQUEUED_FROM_ATTR) == 1]
    assert len(requeued) == 1 and requeued[0].params == study.trials[1].params
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    # Every finished optuna trial ran once per seed, each run in its own directory, none twice.
    runs = [t for t in summary["trials"] if t["status"] != "interrupted"]
    assert sorted((t["optuna_trial"], t["seed"]) for t in runs) == sorted(
        (t.number, seed) for t in finished for seed in (0, 1))
    assert len({t["run_dir"] for t in summary["trials"]}) == len(summary["trials"]) == 7
    assert "7 trial(s)" in resumed.stdout


def test_optuna_is_told_the_mean_over_seeds(killed_and_resumed):
    sweep, _, _ = killed_and_resumed
    study = _study(sweep)
    runs = [t for t in sweeps.collect_trials(sweep) if t["status"] == "completed"]
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        mine = [r["objective"] for r in runs if r["optuna_trial"] == trial.number]
        assert len(mine) == 2 and trial.value == pytest.approx(sum(mine) / 2)
        attrs = trial.user_attrs   # the pruner's value at step 256: the seeds' mean
        assert trial.intermediate_values[256] == pytest.approx(
            (attrs[optuna_study.eval_attr(256, 0)] + attrs[optuna_study.eval_attr(256, 1)]) / 2)


def test_sweep_report_adds_importances_and_a_preset_ready_for_preset(killed_and_resumed):
    sweep, _, _ = killed_and_resumed
    name = "test_swept_preset"
    target = REPO / "configs" / "preset" / f"{name}.yaml"
    try:
        report = sweeps.sweep_report(sweep, resamples=500, preset_name=name)
        assert report == json.loads((sweep / "sweep_report.json").read_text())
        importances = report["importances"]
        assert importances["trials"]["fail"] == 1 and importances["study"] == "physai"
        assert importances["importances"] is None or set(importances["importances"]) <= set(
            json.loads((sweep / "optuna_study.json").read_text())["search_space"])
        assert "## Parameter importances" in (sweep / "sweep_report.md").read_text()
        assert report["preset"]["installed"] == str(target) and (sweep / "best_preset.yaml").exists()
        row = next(r for r in report["configurations"] if r["configuration"] == report["best_configuration"])
        best = next(t for t in sweeps.collect_trials(sweep) if t["num"] == row["best_trial"]["num"])
        assert report["preset"]["command"] == f"python train.py tracking=none preset={name}"
        cfg = compose_config([f"preset={name}"])
        trained = OmegaConf.load(Path(best["run_dir"]) / "config.yaml").algo
        for key in ("learning_rate", "n_epochs", "gamma", "gae_lambda", "clip_range", "ent_coef", "batch_size"):
            assert cfg.algo[key] == trained[key]
        assert cfg.algo.tuned_for == "physai/CartpoleBalance-v0"
    finally:
        target.unlink(missing_ok=True)


# ----- a shared study on Ray ------------------------------------------------------------------------
@pytest.mark.slow
def test_four_ray_workers_share_one_study(tmp_path):
    """8 trials, 4 at a time on 4 Ray workers, all reporting into one journal file: none lost, none run twice."""
    pytest.importorskip("ray")
    sweep = tmp_path / "ray"
    result = run_train(["-m", *QUICK, "hydra/sweeper=physai_optuna", "hydra.sweeper.n_trials=8",
                        "hydra.sweeper.n_jobs=4", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=4",
                        f"hydra.sweep.dir={sweep}"], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = _study(sweep)
    records = sweeps.collect_trials(sweep)
    assert len(study.trials) == len(records) == 8
    assert sorted(r["optuna_trial"] for r in records) == [t.number for t in study.trials] == list(range(8))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert all(t.user_attrs["runs"] == [r["num"] for r in records if r["optuna_trial"] == t.number]
               for t in study.trials)
    assert all(256 in t.intermediate_values for t in study.trials)   # every worker reported into the journal
    assert "starting a local Ray instance" in result.stdout + result.stderr


@pytest.mark.slow
def test_submitit_jobs_share_one_study(tmp_path):
    """The SLURM launcher's machinery (submitit) with its local executor: one process per trial, two at a time,
    every one reporting into the sweep's journal file, as jobs on a cluster's nodes do."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "submitit"
    result = run_train(["-m", *QUICK, "hydra/sweeper=physai_optuna", "hydra.sweeper.n_trials=4",
                        "hydra.sweeper.n_jobs=2", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"],
                       timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = _study(sweep)
    records = sweeps.collect_trials(sweep)
    assert len(study.trials) == len(records) == 4
    assert sorted(r["optuna_trial"] for r in records) == [t.number for t in study.trials] == list(range(4))
    assert all(t.state.name in ("COMPLETE", "PRUNED") and 256 in t.intermediate_values for t in study.trials)
    jobs = {log.parent.name for log in (sweep / ".submitit").glob("*/*_log.out")}
    assert len(jobs) == 4   # each trial ran as its own submitit job
