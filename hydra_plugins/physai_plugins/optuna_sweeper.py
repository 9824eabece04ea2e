"""``hydra/sweeper=physai_optuna``: physai's own Hydra sweeper on optuna (>= 4), with pruning and resume.

One optuna study drives the sweep. The sweeper asks it for ``n_jobs`` trials at a time, runs them on the
configured launcher (basic, ``hydra/launcher=ray``, ``hydra/launcher=slurm``: in parallel where it can)
and tells the study each result: the evaluation mean return ``train.py`` returns, maximized.

- Search space: ``search_spaces.<algo.name>`` (``configs/hydra/sweeper/search_space/``) unless
  ``hydra.sweeper.params`` replaces it; swept command-line overrides (``seed=0,1,2``,
  ``algo.gamma=choice(0.99,0.999)``) join it. Hydra's sweep grammar: ``choice``/``a,b,c`` categorical,
  ``range`` integer steps, ``interval`` uniform, ``tag(log, interval(...))`` log-uniform, ``int(interval(...))``
  integers.
- Samplers (``hydra.sweeper.sampler``): ``tpe`` (multivariate), ``cmaes``, ``random``, ``grid``. Pruners
  (``hydra.sweeper.pruner``): ``median``, ``successive_halving``, ``hyperband``, ``none``; they judge the
  evaluations a trial makes during training (``evaluate.interval_steps``; a tenth of the budget when a
  pruner is on and it is 0). A pruned trial ends as ``pruned`` in its ``trial.json``.
- Storage: a journal file in the sweep directory (``optuna_journal.log``; works on a shared file system)
  unless ``hydra.sweeper.storage`` names a database URL. Every trial finds its optuna trial through the
  ``sweep`` node the sweeper sets in its config (study, storage, trial number), so trials running at once
  on Ray or SLURM report into the one study.
- Seeds: ``hydra.sweeper.seeds=[0,1,2]`` runs every configuration once per seed and tells optuna their
  mean (a failed seed fails the trial; the pruner sees the seeds' mean at each step); or leave it null
  and sweep ``seed=0,1,2`` as one more categorical axis.
- Resume: the same command with its ``hydra.sweep.dir`` (or ``physai sweep resume DIR``) reopens the study
  and runs only the missing trials. A trial a killed sweep left running is settled from its runs'
  ``trial.json`` when they all finished, else marked failed (``interrupted``) and its parameters requeued.
  The sampler of a resumed study is seeded with ``sampler_seed`` plus the trials it holds, so it does not
  replay the proposals it already made.

A trial's progress is logged per batch, not drawn as a live bar: trials train in this process on the
basic launcher, and their own progress bar would clash with a second live display.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from physai.core.errors import ConfigError, PhysaiError
from physai.core.io import write_json_atomic, write_text_atomic
from physai.run import sweeps
from physai.train import study as optuna_study

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
_ABSENT = object()


class SearchSpace:
    """optuna distributions by parameter name, the override prefix (``+``) each needs, and grid values.

    (A plain class: Hydra's plugin scan executes this module outside ``sys.modules``, where dataclasses fail.)
    """

    def __init__(self) -> None:
        self.distributions: Dict[str, Any] = {}
        self.prefixes: Dict[str, str] = {}
        self.grid: Dict[str, List[Any]] = {}     # discrete parameters' values
        self.sources: Dict[str, str] = {}        # how each was written, for the record

    def overrides(self, params: Dict[str, Any]) -> List[str]:
        return [f"{self.prefixes.get(name, '')}{name}={_override_value(value)}" for name, value in params.items()]


def _override_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _quoted(text: str) -> str:
    """A value Hydra's override grammar reads back verbatim (URLs carry ':', '?', '=')."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_search_space(entries: Dict[str, str]) -> SearchSpace:
    """Hydra sweep grammar (``key: "interval(0, 1)"``) -> optuna distributions."""
    import optuna.distributions as dist

    parser = OverridesParser.create()
    space = SearchSpace()
    for key, text in entries.items():
        try:
            override: Override = parser.parse_override(f"{key}={text}")
        except Exception as exc:  # Hydra's grammar errors
            raise ConfigError(f"search space entry {key}: {text!r} is not Hydra sweep grammar ({exc}); write e.g. "
                              f"choice(0.99,0.999), interval(0.1,0.3), tag(log, interval(1e-4,1e-3)) or "
                              f"int(interval(3,15))") from None
        name = override.get_key_element().lstrip("+~")
        value = override.value()
        space.prefixes[name] = "+" if override.get_key_element().startswith("+") else ""
        space.sources[name] = str(text)
        if isinstance(value, ChoiceSweep) or isinstance(value, RangeSweep) and (
                value.shuffle or any(isinstance(v, float) for v in (value.start, value.stop, value.step))):
            raw = list(value.list) if isinstance(value, ChoiceSweep) else list(override.sweep_iterator())
            choices = [v if v is None or isinstance(v, (str, int, float, bool)) else s
                       for v, s in zip(raw, override.sweep_string_iterator())]
            space.distributions[name] = dist.CategoricalDistribution(choices)
            space.grid[name] = choices
        elif isinstance(value, RangeSweep):
            values = [int(v) for v in override.sweep_iterator()]
            if not values:
                raise ConfigError(f"search space entry {key}: {text} holds no value; widen the range")
            space.distributions[name] = dist.IntDistribution(values[0], values[-1], step=int(value.step))
            space.grid[name] = values
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space.distributions[name] = dist.IntDistribution(value.start, value.end, log=log_scale)
            else:
                space.distributions[name] = dist.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:  # a single value: fixed for every trial
            space.distributions[name] = dist.CategoricalDistribution([value if isinstance(
                value, (str, int, float, bool)) else str(text)])
            space.grid[name] = list(space.distributions[name].choices)
    return space


def check_keys_exist(space: SearchSpace, config: DictConfig) -> None:
    """Every swept key is in the composed config (or added with ``+``), so a typo fails before any trial."""
    for name in space.distributions:
        if space.prefixes.get(name) == "+" or OmegaConf.select(config, name, default=_ABSENT) is not _ABSENT:
            continue
        parent = name.rpartition(".")[0]
        node = OmegaConf.select(config, parent, default=None) if parent else config
        siblings = [f"{parent}.{k}" if parent else str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(name, siblings, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"the search space sweeps {name}, which is not a key of the composed config "
                          f"(algo={OmegaConf.select(config, 'algo.name')}); {hint}fix hydra.sweeper.params or the "
                          f"search space file, or write +{name} to add a key the config lacks")


def fold_seed_returns(values: Sequence[Optional[float]]) -> Optional[float]:
    """A configuration's value over its seeds: their mean; None (failed) when any seed failed."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def job_value(ret: JobReturn) -> Optional[float]:
    """A job's return as a finite float, or None (failed or no evaluation)."""
    if ret.status != JobStatus.COMPLETED:
        return None
    try:
        value = float(ret._return_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PhysaiOptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", study_name: str = "physai", storage: Optional[str] = None,
                 n_trials: int = 20, n_jobs: int = 1, sampler: str = "tpe", sampler_seed: Optional[int] = 0,
                 sampler_kwargs: Optional[DictConfig] = None, pruner: str = "median",
                 pruner_kwargs: Optional[DictConfig] = None, search_spaces: Optional[DictConfig] = None,
                 params: Optional[DictConfig] = None, seeds: Optional[List[int]] = None) -> None:
        self.direction, self.study_name, self.storage = str(direction), str(study_name), storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.sampler_name, self.sampler_seed = str(sampler), sampler_seed
        self.sampler_kwargs = _plain(sampler_kwargs)
        self.pruner_name, self.pruner_kwargs = str(pruner), _plain(pruner_kwargs)
        self.search_spaces = _plain(search_spaces)
        self.params = _plain(params)
        self.seeds = [int(s) for s in seeds] if seeds else []
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                               task_function=task_function, config=config)

    # ----- before any trial: every input checked ----------------------------------------------
    def plan(self, arguments: List[str]) -> tuple[SearchSpace, List[str]]:
        """The search space and the overrides every trial shares; a ``ConfigError`` for any bad input."""
        assert self.config is not None
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={self.direction!r}: use maximize (the evaluation return) "
                              f"or minimize")
        optuna_study.check_choice("sampler", self.sampler_name, optuna_study.SAMPLERS)
        optuna_study.check_choice("pruner", self.pruner_name, optuna_study.PRUNERS)
        algo = OmegaConf.select(self.config, "algo.name")
        entries = dict(self.params or {})
        if not entries:
            if algo not in self.search_spaces:
                raise ConfigError(f"hydra/sweeper=physai_optuna has no search space for algo={algo} (known: "
                                  f"{sorted(self.search_spaces)}); give one with hydra.sweeper.params="
                                  f"'{{algo.gamma: \"choice(0.99,0.999)\"}}'")
            entries = dict(self.search_spaces[algo])
        fixed = []
        for override in OverridesParser.create().parse_overrides(arguments):
            if override.is_sweep_override():
                entries[override.get_key_element()] = override.input_line.split("=", 1)[1]
            else:
                fixed.append(override.input_line)
        if self.seeds and any(key.lstrip("+~") == "seed" for key in entries):
            raise ConfigError("the seed is swept (seed=...) and repeated (hydra.sweeper.seeds) at once; keep one: "
                              "hydra.sweeper.seeds=[0,1,2] for the mean over seeds, or seed=0,1,2 as a swept axis")
        space = parse_search_space({str(k): str(v) for k, v in entries.items()})
        check_keys_exist(space, self.config)
        if self.sampler_name == "grid":
            continuous = sorted(set(space.distributions) - set(space.grid))
            if continuous:
                raise ConfigError(f"hydra.sweeper.sampler=grid needs discrete values, but {continuous} are intervals; "
                                  f"write them as choice(...) or range(...), or use sampler=tpe")
        if self.pruner_name != "none" and not OmegaConf.select(self.config, "evaluate.interval_steps"):
            budget = int(OmegaConf.select(self.config, "algo.total_timesteps"))
            fixed.append(f"evaluate.interval_steps={max(1, budget // 10)}")
            log.info("pruner %s: trials evaluate every %d env steps (a tenth of algo.total_timesteps; set "
                     "evaluate.interval_steps to choose)", self.pruner_name, max(1, budget // 10))
        return space, fixed

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        try:
            space, fixed = self.plan(arguments)
            study, storage, storage_spec = self.open_study(space, sweep_dir)
        except PhysaiError as exc:  # before any trial: Hydra would bury it in a traceback
            print(f"physai: error: {exc}", file=sys.stderr)
            sys.exit(2)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.write_record(sweep_dir, space, fixed, storage_spec)
        settle_left_running(study, storage, sweep_dir, runs_per_trial=max(1, len(self.seeds)))
        done = count_done(study)
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, math.prod(len(v) for v in space.grid.values()))
        if done:
            log.info("optuna study %s: %d of %d trial(s) already done; running the other %d", self.study_name,
                     min(done, n_trials), n_trials, max(0, n_trials - done))
        next_job = next_job_number(sweep_dir)
        every_trial = [*fixed, f"sweep.study={_quoted(self.study_name)}", f"sweep.storage={_quoted(storage_spec)}"]
        if self.seeds:
            every_trial.append(f"sweep.seeds=[{','.join(str(s) for s in self.seeds)}]")
        while done < n_trials:
            batch = [study.ask(space.distributions) for _ in range(min(self.n_jobs, n_trials - done))]
            jobs, runs = [], {}
            for trial in batch:
                own = [*every_trial, *space.overrides(trial.params), f"sweep.trial={trial.number}"]
                seeded = [own + [f"seed={seed}"] for seed in self.seeds] or [own]
                runs[trial.number] = list(range(next_job + len(jobs), next_job + len(jobs) + len(seeded)))
                trial.set_user_attr("sweep_dir", str(sweep_dir))
                trial.set_user_attr("runs", runs[trial.number])
                jobs.extend(seeded)
            returns = self.launcher.launch(jobs, initial_job_idx=next_job)
            next_job += len(jobs)
            offset = 0
            for trial in batch:
                group = returns[offset:offset + len(runs[trial.number])]
                offset += len(group)
                tell(study, storage, trial.number, [job_value(r) for r in group])
            done += len(batch)
            log_progress(study, done, n_trials)
        return self.write_results(study, sweep_dir)

    # ----- the study --------------------------------------------------------------------------
    def open_study(self, space: SearchSpace, sweep_dir: Path) -> tuple[Any, Any, str]:
        """The study (created, or loaded to resume), its storage and the storage as trials open it."""
        import optuna

        spec = optuna_study.storage_spec(self.storage, sweep_dir)
        storage = optuna_study.open_storage(spec)
        sampler = optuna_study.make_sampler(self.sampler_name, self.sampler_seed, self.sampler_kwargs, space.grid)
        pruner = optuna_study.make_pruner(self.pruner_name, self.pruner_kwargs)
        try:
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner,
                                        direction=self.direction, load_if_exists=True)
        except Exception as exc:  # the database refused the study (a read-only file, a schema it cannot migrate)
            raise ConfigError(f"hydra.sweeper.storage={spec!r} opened, but optuna could not create or load study "
                              f"{self.study_name!r} there ({type(exc).__name__}: {exc}); give another "
                              f"hydra.sweeper.study_name or storage") from exc
        others = sorted({t.user_attrs["sweep_dir"] for t in study.get_trials(deepcopy=False)
                         if t.user_attrs.get("sweep_dir") not in (None, str(sweep_dir))})
        if others:  # counting, settling and importances would mix another search's trials into this one
            raise ConfigError(f"study {self.study_name!r} in {spec} holds the trials of another sweep ({others[0]}); "
                              f"a study belongs to one sweep: give hydra.sweeper.study_name=<a new name> for a new "
                              f"search, or resume that sweep with hydra.sweep.dir={others[0]}")
        if study.direction.name.lower() != self.direction:
            raise ConfigError(f"study {self.study_name!r} in {spec} was made to {study.direction.name.lower()}; "
                              f"use that hydra.sweeper.direction, or another hydra.sweeper.study_name")
        if study.trials and self.sampler_seed is not None:
            # A resumed study: a sampler seeded as before would replay the proposals it already made.
            study.sampler = optuna_study.make_sampler(self.sampler_name, self.sampler_seed + len(study.trials),
                                                      self.sampler_kwargs, space.grid)
        study.set_user_attr(optuna_study.PRUNER_ATTR, {"name": self.pruner_name, "kwargs": self.pruner_kwargs})
        return study, storage, spec

    def write_record(self, sweep_dir: Path, space: SearchSpace, fixed: List[str], storage_spec: str) -> None:
        """``optuna_study.json``: what ``physai sweep-report`` and ``physai sweep resume`` reopen."""
        journal = Path(storage_spec)
        storage = (journal.name if "://" not in storage_spec and journal.parent == sweep_dir else storage_spec)
        write_json_atomic(sweep_dir / sweeps.STUDY_FILE, {
            "study_name": self.study_name, "storage": storage, "direction": self.direction,
            "n_trials": self.n_trials, "n_jobs": self.n_jobs, "seeds": self.seeds,
            "sampler": {"name": self.sampler_name, "seed": self.sampler_seed, "kwargs": self.sampler_kwargs},
            "pruner": {"name": self.pruner_name, "kwargs": self.pruner_kwargs},
            "search_space": space.sources, "fixed_overrides": fixed})

    def write_results(self, study: Any, sweep_dir: Path) -> Optional[dict]:
        try:
            best = study.best_trial
        except ValueError:
            log.error("optuna: no trial completed; the sweep summary lists every trial's status and error")
            return None
        results = {"name": "optuna", "study_name": self.study_name, "best_trial": best.number,
                   "best_params": dict(best.params), "best_value": best.value}
        write_text_atomic(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))
        log.info("optuna best: trial %d, value %.4g, %s", best.number, best.value, best.params)
        return results


# ----- the study's bookkeeping --------------------------------------------------------------------
def tell(study: Any, storage: Any, number: int, values: Sequence[Optional[float]]) -> None:
    """Tell the study how trial ``number`` ended: pruned (a run said so), failed, or the mean over its runs."""
    from optuna.trial import TrialState

    trial = storage.get_trial(_trial_id(storage, study, number))
    if optuna_study.PRUNED_AT_ATTR in trial.user_attrs:
        study.tell(number, state=TrialState.PRUNED)
        return
    value = fold_seed_returns(values)
    if value is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, value)


def _trial_id(storage: Any, study: Any, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def count_done(study: Any) -> int:
    """Trials that ended (completed, pruned, failed), not counting the ones a killed sweep left and requeued."""
    from optuna.trial import TrialState

    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(not t.user_attrs.get(optuna_study.INTERRUPTED_ATTR) for t in ended)


def settle_left_running(study: Any, storage: Any, sweep_dir: Path, runs_per_trial: int) -> None:
    """Trials of this sweep that a killed sweep left RUNNING: told from their runs' ``trial.json`` when every run
    finished, else failed as interrupted (their unfinished runs recorded so) and their parameters requeued."""
    from optuna.trial import TrialState

    records: Dict[int, List[dict]] = {}
    for record in sweeps.collect_trials(sweep_dir) if sweep_dir.is_dir() else []:
        if record.get("optuna_trial") is not None:
            records.setdefault(int(record["optuna_trial"]), []).append(record)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("sweep_dir") != str(sweep_dir):
            continue  # another sweep's trial in a shared database: not ours to settle
        runs = records.get(trial.number, [])
        if len(runs) == runs_per_trial and all(r["status"] in sweeps.FINAL_STATUSES for r in runs):
            if any(r["status"] == sweeps.PRUNED for r in runs):
                storage.set_trial_user_attr(_trial_id(storage, study, trial.number), optuna_study.PRUNED_AT_ATTR,
                                                   max(int(r["pruned"]["step"]) for r in runs if r.get("pruned")))
            tell(study, storage, trial.number, [r.get("objective") if r["status"] == sweeps.COMPLETED else None for r in runs])
            log.info("optuna trial %d: its runs had finished before the sweep stopped; told the study", trial.number)
            continue
        storage.set_trial_user_attr(_trial_id(storage, study, trial.number), optuna_study.INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={optuna_study.REQUEUED_FROM_ATTR: trial.number})
        for run in runs:
            if run["status"] not in sweeps.FINAL_STATUSES:
                record = dict(run, status=sweeps.INTERRUPTED, objective=None,
                              error=f"the sweep stopped while this run trained; optuna trial {trial.number} was "
                                    f"requeued and runs again under a new number")
                sweeps.write_trial(Path(run["run_dir"]), record)
        log.warning("optuna trial %d was left running by a stopped sweep: recorded as interrupted, its parameters "
                    "requeued", trial.number)


def next_job_number(sweep_dir: Path) -> int:
    """The first job number no run directory of this sweep uses yet (a resumed sweep never reuses one)."""
    used = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
    return max(used, default=-1) + 1


def log_progress(study: Any, done: int, n_trials: int) -> None:
    from optuna.trial import TrialState

    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    try:
        best = f"best {study.best_value:.4g} (trial {study.best_trial.number})"
    except ValueError:
        best = "none completed yet"
    log.info("optuna: %d/%d trials done (%s); %s", done, n_trials, json.dumps(counts), best)


def _plain(node: Any) -> Any:
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node
