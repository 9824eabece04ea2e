"""A training run's link to the optuna study of the sweep it belongs to (``hydra/sweeper=physai_optuna``).

The sweeper asks the study for trials and tells it their results; a trial's own process only reports the
evaluations it makes during training (``physai.train.periodic_eval``) and asks the study's pruner whether
to stop. Both sides open the one storage the sweep names (``sweep.storage``): a journal file in the sweep
directory by default (appends under a symlink lock, so it works on a shared file system), or a database
URL. The pruner's settings are kept in the study itself, so a trial needs only the study's name, the
storage and its trial number, which the sweeper puts into the trial's ``sweep`` config node.

With seeds repeated (``hydra.sweeper.seeds``) one optuna trial is several runs, one per seed. Each run
records its own evaluation at a step; the pruner is asked once every seed has reported that step, about
their mean, and a trial pruned there stops its other seeds at their next evaluation.

optuna is imported when a study is opened: it comes with the ``sweep`` extra.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from physai.core.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_FILE = "optuna_journal.log"   # the default storage, in the sweep directory
PRUNER_ATTR = "physai_pruner"         # study user attribute: {"name", "kwargs"} of the sweep's pruner
PRUNED_AT_ATTR = "pruned_at_step"     # trial user attribute: the step the pruner stopped the trial at
INTERRUPTED_ATTR = "interrupted"      # trial user attribute: the sweep was killed while it ran (requeued)
REQUEUED_FROM_ATTR = "requeued_from"  # trial user attribute: the interrupted trial it reruns


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("hydra/sweeper=physai_optuna needs optuna: pip install 'physai[sweep]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class TrialPruned(Exception):
    """A sweep's pruner stopped this run: its final checkpoint and train summary hold where it got to."""

    def __init__(self, step: int, evaluation: Optional[Mapping[str, Any]]) -> None:
        value = None if evaluation is None else round(float(evaluation["mean_return"]), 4)
        super().__init__(f"pruned at step {step}: the sweep's pruner judged the evaluation during training "
                         f"(mean return {value}) not worth training on")
        self.step = step
        self.evaluation = dict(evaluation) if evaluation is not None else None


# ----- samplers and pruners, by name ----------------------------------------------------------
def _tpe(optuna, seed, kwargs, space):
    # multivariate: TPE models the parameters jointly; constant_liar: trials running at once get spread out.
    return optuna.samplers.TPESampler(**{"seed": seed, "multivariate": True, "constant_liar": True, **kwargs})


def _cmaes(optuna, seed, kwargs, space):
    # CMA-ES samples floats and integers; categorical parameters go to its independent (random) sampler.
    return optuna.samplers.CmaEsSampler(**{"seed": seed, "warn_independent_sampling": False, **kwargs})


def _random(optuna, seed, kwargs, space):
    return optuna.samplers.RandomSampler(seed=seed, **kwargs)


def _grid(optuna, seed, kwargs, space):
    return optuna.samplers.GridSampler(space, seed=seed, **kwargs)


SAMPLERS: dict[str, Callable[..., Any]] = {"tpe": _tpe, "cmaes": _cmaes, "random": _random, "grid": _grid}
PRUNERS: dict[str, Callable[..., Any]] = {
    "median": lambda optuna, kwargs: optuna.pruners.MedianPruner(**kwargs),
    "successive_halving": lambda optuna, kwargs: optuna.pruners.SuccessiveHalvingPruner(**kwargs),
    "hyperband": lambda optuna, kwargs: optuna.pruners.HyperbandPruner(**kwargs),
    "none": lambda optuna, kwargs: optuna.pruners.NopPruner(**kwargs),
}


def check_choice(kind: str, name: str, known: Mapping[str, Any]) -> None:
    if name not in known:
        raise ConfigError(f"hydra.sweeper.{kind}={name!r} is not a {kind} physai knows; use one of {sorted(known)}, "
                          f"e.g. hydra.sweeper.{kind}={next(iter(known))}")


def make_sampler(name: str, seed: Optional[int], kwargs: Mapping[str, Any],
                 grid: Optional[Mapping[str, Sequence[Any]]] = None) -> Any:
    """``grid``: each parameter's values, needed by the grid sampler (and ignored by the others)."""
    check_choice("sampler", name, SAMPLERS)
    return _build("sampler", name, lambda optuna: SAMPLERS[name](optuna, seed, dict(kwargs), grid))


def make_pruner(name: str, kwargs: Mapping[str, Any]) -> Any:
    check_choice("pruner", name, PRUNERS)
    return _build("pruner", name, lambda optuna: PRUNERS[name](optuna, dict(kwargs)))


def _build(kind: str, name: str, build: Callable[[Any], Any]) -> Any:
    optuna = _optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar, for one
            return build(optuna)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.{kind}={name} refused hydra.sweeper.{kind}_kwargs ({exc}); pass only "
                          f"keyword arguments of optuna's {kind} for {name!r}") from exc


# ----- the storage ----------------------------------------------------------------------------
SQLITE_PREFIX = "sqlite:///"


def storage_spec(storage: Optional[str], sweep_dir: Path) -> str:
    """What ``hydra.sweeper.storage`` names, as every process opens it: a database URL as given (a relative
    SQLite file made absolute, so workers and later resumes started elsewhere open the same file), else the
    absolute path of a journal file (by default ``<sweep dir>/optuna_journal.log``)."""
    if storage and "://" in str(storage):
        storage = str(storage)
        if storage.startswith(SQLITE_PREFIX) and not storage[len(SQLITE_PREFIX):].startswith("/"):
            return SQLITE_PREFIX + str(Path(storage[len(SQLITE_PREFIX):]).absolute())
        return storage
    return str((Path(storage) if storage else Path(sweep_dir) / JOURNAL_FILE).absolute())


def open_storage(spec: str) -> Any:
    """The optuna storage ``spec`` names; a ``ConfigError`` saying how to fix it when it cannot be opened."""
    optuna = _optuna()
    try:
        if "://" in spec:
            return optuna.storages.RDBStorage(spec)
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))
    except Exception as exc:  # SQLAlchemy, a missing driver, the file system: all mean this storage cannot be used
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"hydra.sweeper.storage={spec!r} cannot be opened ({type(exc).__name__}: {detail}); give "
                          f"a database URL optuna can open with its driver installed (e.g. sqlite:///optuna.db or "
                          f"postgresql://user@host/db), or leave it null for a journal file in the sweep "
                          f"directory") from exc


# ----- a trial's side -------------------------------------------------------------------------
def eval_attr(step: int, seed: Any) -> str:
    """The trial user attribute holding one seed's evaluation at ``step``."""
    return f"eval:{int(step)}:seed={seed}"


def close_storage(storage: Any) -> None:
    """Give back a database storage's connections (a journal file holds none open): a trial's run must not keep
    a connection to the sweep's database once it stops reporting, or a server counts it until the process ends."""
    if isinstance(storage, _optuna().storages.RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


def running_trial(sweep: Any, seed: int) -> Optional["StudyTrial"]:
    """The optuna trial a run reports to, while that trial is still running; None when it has finished (a
    trial's run directory rerun or resumed on its own after its sweep recorded it trains without a pruner).
    The caller closes a trial it gets."""
    trial = StudyTrial(sweep, seed)
    state = trial.storage.get_trial(trial.trial_id).state
    if state == _optuna().trial.TrialState.RUNNING:
        return trial
    trial.close()
    log.info("optuna trial %d of study %s is %s already: this run trains without reporting to it",
             trial.number, sweep.study, state.name.lower())
    return None


class StudyTrial:
    """One run of an optuna trial: reports its evaluations and hears whether the pruner stops it.

    ``sweep`` is the run's ``sweep`` config node (study, storage, trial number, the trial's seeds);
    ``seed`` is this run's training seed.
    """

    def __init__(self, sweep: Any, seed: int) -> None:
        optuna = _optuna()
        self.storage = open_storage(str(sweep.storage))
        self.study = optuna.load_study(study_name=str(sweep.study), storage=self.storage)
        settings = self.study.user_attrs.get(PRUNER_ATTR) or {"name": "none", "kwargs": {}}
        self.pruner = make_pruner(settings["name"], settings.get("kwargs") or {})
        self.study.pruner = self.pruner  # a bracket pruner (hyperband) reads its own study's pruner
        study_id = self.storage.get_study_id_from_name(str(sweep.study))
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, int(sweep.trial))
        self.number = int(sweep.trial)
        self.seed = seed
        self.seeds = list(sweep.seeds or [])

    def report(self, step: int, value: float) -> bool:
        """Record this run's evaluation at ``step``; True when the trial is to stop here (pruned)."""
        trial = self.storage.get_trial(self.trial_id)
        if PRUNED_AT_ATTR in trial.user_attrs:  # another seed of this trial was pruned
            return True
        value = float(value) if math.isfinite(value) else -math.inf
        if self.seeds:
            self.storage.set_trial_user_attr(self.trial_id, eval_attr(step, self.seed), value)
            reported = self.storage.get_trial(self.trial_id).user_attrs
            values = [reported.get(eval_attr(step, s)) for s in self.seeds]
            if any(v is None for v in values):
                return False  # a seed has not reached this step yet: the pruner is asked about the mean later
            value = sum(values) / len(values)
        self.storage.set_trial_intermediate_value(self.trial_id, int(step), value)
        if not self.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            return False
        self.storage.set_trial_user_attr(self.trial_id, PRUNED_AT_ATTR, int(step))
        log.info("optuna trial %d pruned at step %d (intermediate value %.4g)", self.number, step, value)
        return True

    def close(self) -> None:
        """Stop reporting: the storage's connections go back (see ``close_storage``)."""
        close_storage(self.storage)
