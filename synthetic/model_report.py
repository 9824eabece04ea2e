"""How good is a world model? One-step accuracy, open-loop drift, calibration, against naive baselines.

A learned model is only worth its synthetic data if it beats what costs nothing: the
``identity`` model (the state does not change, reward is the training mean) and a
least-squares ``linear`` model. Every figure here is computed for the ensemble's elite mean
and for both baselines on the same held-out data, so the report says how much the network
adds, not just a loss value with no scale.

Units: MSEs are in raw units unless a key says ``normalized``; open-loop errors are squared
errors divided by the per-dimension state variance (so a velocity and an angle count alike);
NLLs are per target dimension in normalized target units (targets divided by the training
std of each delta / reward dimension), so they are comparable across tasks.

Columns the model predicts by an exact affine rule (zero variance; see
``EnsembleDynamicsModel.fit``) count in every MSE and open-loop error but not in the NLL or the
calibration figures, which describe the network's predictive distribution; the report lists them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

from physai.core.errors import PhysaiError
from physai.synthetic.world_model import EnsembleDynamicsModel, WorldModelError

DEFAULT_HORIZONS = (1, 5, 10, 25, 50)
CALIBRATION_LEVELS = (0.5, 0.9, 0.95)
# Expected calibration error averages |coverage - level| over this grid of central intervals.
ECE_GRID = tuple(round(p, 2) for p in np.arange(0.05, 1.0, 0.05))


# ---------------------------------------------------------------------------- predictors

def _context_rows(context, n: int) -> np.ndarray | None:
    if context is None:
        return None
    context = np.asarray(context, dtype=np.float64)
    if context.ndim == 1:
        context = np.broadcast_to(context, (n, context.shape[0]))
    return context


def _design(obs, act, context) -> np.ndarray:
    obs = np.asarray(obs, dtype=np.float64)
    parts = [obs, np.asarray(act, dtype=np.float64).reshape(obs.shape[0], -1)]
    context = _context_rows(context, obs.shape[0])
    if context is not None:
        parts.append(context)
    parts.append(np.ones((obs.shape[0], 1)))
    return np.concatenate(parts, axis=1)


class IdentityBaseline:
    """Next state = current state; reward = the training split's mean reward."""

    name = "identity"

    def __init__(self, mean_reward: float):
        self.mean_reward = float(mean_reward)

    @classmethod
    def fit(cls, split: Mapping[str, Any]) -> "IdentityBaseline":
        return cls(float(np.mean(split["reward"])))

    def predict_mean(self, obs, act, context=None) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float64)
        return obs.copy(), np.full(obs.shape[0], self.mean_reward)


class LinearBaseline:
    """Least-squares linear map from ``[obs, act, context, 1]`` to ``[next_obs - obs, reward]``."""

    name = "linear"

    def __init__(self, coefficients: np.ndarray, obs_dim: int):
        self.coefficients = coefficients
        self.obs_dim = obs_dim

    @classmethod
    def fit(cls, split: Mapping[str, Any]) -> "LinearBaseline":
        obs = np.asarray(split["obs"], dtype=np.float64)
        design = _design(obs, split["act"], split.get("context"))
        targets = np.concatenate([np.asarray(split["next_obs"], dtype=np.float64) - obs,
                                  np.asarray(split["reward"], dtype=np.float64).reshape(-1, 1)], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, targets, rcond=None)
        return cls(coefficients, obs.shape[1])

    def predict_mean(self, obs, act, context=None) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float64)
        out = _design(obs, act, context) @ self.coefficients
        return obs + out[:, : self.obs_dim], out[:, self.obs_dim]


class EliteMeanPredictor:
    """The ensemble used deterministically: the mean of the elites' predicted means."""

    name = "model"

    def __init__(self, model: EnsembleDynamicsModel):
        self.model = model

    def predict_mean(self, obs, act, context=None) -> tuple[np.ndarray, np.ndarray]:
        prediction = self.model.predict(obs, act, context)
        return (prediction["next_obs_mean"].astype(np.float64).mean(axis=0),
                prediction["reward_mean"].astype(np.float64).mean(axis=0))


# ---------------------------------------------------------------------------- one step

def _mse_figures(pred_next, pred_reward, next_obs, reward) -> dict:
    next_obs = np.asarray(next_obs, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64).reshape(-1)
    state_se = (pred_next - next_obs) ** 2
    return {
        "next_obs_mse": float(state_se.mean()),
        "next_obs_mse_per_dim": [float(v) for v in state_se.mean(axis=0)],
        "reward_mse": float(((pred_reward - reward) ** 2).mean()),
        "n": int(next_obs.shape[0]),
    }


def _elite_moments(model: EnsembleDynamicsModel, obs, act, context):
    """Elite-mean prediction and total (aleatoric + epistemic) variance of delta and reward, raw units."""
    prediction = model.predict(obs, act, context)
    obs = np.asarray(obs, dtype=np.float64)
    delta_means = prediction["next_obs_mean"].astype(np.float64) - obs[None]
    means = np.concatenate([delta_means, prediction["reward_mean"].astype(np.float64)[..., None]], axis=2)
    variances = np.concatenate([prediction["next_obs_var"], prediction["reward_var"][..., None]], axis=2)
    variances = variances.astype(np.float64)
    mean = means.mean(axis=0)
    total_var = variances.mean(axis=0) + means.var(axis=0)
    return mean, total_var


def _network_targets(model: EnsembleDynamicsModel) -> np.ndarray:
    """Mask over [delta, reward] of the targets with a predictive variance (not an exact rule)."""
    return ~model.exact_mask.detach().cpu().numpy().astype(bool)


def one_step_metrics(model: EnsembleDynamicsModel, obs, act, next_obs, reward, context=None) -> dict:
    """Elite-mean one-step accuracy on ``(obs, act) -> (next_obs, reward)``.

    ``next_obs_mse`` and ``reward_mse`` are raw-unit MSEs of the elite mean. ``nll_normalized_per_dim``
    is the Gaussian NLL of the true [delta, reward] under the moment-matched elite mixture (mean of
    the elite means, variance = mean aleatoric variance + variance of the elite means), per target
    dimension, in normalized target units (each dimension divided by its training std), over the
    targets the network predicts (``nll_dims`` of them; exact-rule columns have no density).
    """
    mean, total_var = _elite_moments(model, obs, act, context)
    obs64 = np.asarray(obs, dtype=np.float64)
    targets = np.concatenate([np.asarray(next_obs, dtype=np.float64) - obs64,
                              np.asarray(reward, dtype=np.float64).reshape(-1, 1)], axis=1)
    scale = model.target_std.detach().cpu().numpy().astype(np.float64)
    network = _network_targets(model)
    z_var = total_var[:, network] / scale[network] ** 2
    z_error = (targets - mean)[:, network] / scale[network]
    nll = 0.5 * (math.log(2 * math.pi) + np.log(z_var) + z_error ** 2 / z_var)
    figures = _mse_figures(obs64 + mean[:, :-1], mean[:, -1], next_obs, reward)
    figures["nll_normalized_per_dim"] = float(nll.mean())
    figures["nll_dims"] = int(network.sum())
    return figures


def baseline_one_step_metrics(baseline, obs, act, next_obs, reward, context=None) -> dict:
    """The same MSE figures as ``one_step_metrics`` for a baseline's point prediction."""
    pred_next, pred_reward = baseline.predict_mean(obs, act, context)
    return _mse_figures(pred_next, pred_reward, next_obs, reward)


# ---------------------------------------------------------------------------- open loop

def _episode_arrays(episode: Mapping[str, Any], index: int):
    obs = np.asarray(episode["obs"], dtype=np.float64)
    act = np.asarray(episode["act"], dtype=np.float64)
    if act.ndim == 1:
        act = act[:, None]
    if obs.ndim != 2 or act.ndim != 2 or obs.shape[0] != act.shape[0] + 1:
        raise PhysaiError(f"open-loop episode {index}: obs must be [T+1, obs_dim] and act [T, act_dim], got obs "
                          f"{list(obs.shape)} and act {list(act.shape)}; include the final observation")
    context = episode.get("context")
    if context is not None:
        context = np.asarray(context, dtype=np.float64)
        if context.ndim == 1:
            context = np.broadcast_to(context, (act.shape[0], context.shape[0]))
        if context.shape[0] != act.shape[0]:
            raise PhysaiError(f"open-loop episode {index}: context must be [context_dim] or [T, context_dim] with "
                              f"T={act.shape[0]}, got {list(context.shape)}")
    return obs, act, context


def open_loop_error(model: EnsembleDynamicsModel | None, episodes: Sequence[Mapping[str, Any]],
                    horizons: Sequence[int] = DEFAULT_HORIZONS, *, baselines: Sequence[Any] = (),
                    starts_per_episode: int = 8, state_std: np.ndarray | None = None,
                    drop_unreachable: bool = False) -> dict:
    """Open-loop state error vs horizon for the elite mean and each baseline.

    From up to ``starts_per_episode`` evenly spaced start indices per held-out episode, each
    predictor is fed its own predictions and the recorded actions (no sampling) and compared
    with the recorded states. The error at horizon ``h`` is the squared error divided by the
    per-dimension state variance (``state_std`` or, by default, the episodes' own), averaged
    over dimensions and over the starts whose episode lasts at least ``h`` more steps.
    ``state_error_median`` is the median over those starts: at long horizons on chaotic
    (contact-rich) tasks a few runaway starts set the mean, and the median shows the typical one.
    Non-finite errors (a predictor that blew up) are returned as they are.

    A horizon longer than every episode raises, unless ``drop_unreachable``: then it is left
    out and listed under ``unreachable_horizons`` (for reports on tasks whose episodes end early).
    """
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise PhysaiError(f"open-loop error: horizons must be positive integers, got {list(horizons)}")
    if not episodes:
        raise PhysaiError("open-loop error: no held-out episodes were given; keep some real episodes out of training")
    arrays = [_episode_arrays(episode, i) for i, episode in enumerate(episodes)]
    longest = max(act.shape[0] for _, act, _ in arrays)
    unreachable = [h for h in horizons if h > longest]
    if drop_unreachable and len(unreachable) < len(horizons):
        horizons = [h for h in horizons if h <= longest]
    elif unreachable:
        raise PhysaiError(f"open-loop error: horizon {horizons[-1]} needs an episode of at least {horizons[-1]} "
                          f"steps but the longest held-out episode has {longest}; collect longer episodes or pass "
                          f"horizons up to {longest}")
    max_h = horizons[-1]
    obs_dim, act_dim = arrays[0][0].shape[1], arrays[0][1].shape[1]
    context_dim = arrays[0][2].shape[1] if arrays[0][2] is not None else 0

    starts_true, starts_act, starts_ctx, starts_len = [], [], [], []
    for obs, act, context in arrays:
        length = act.shape[0]
        if length == 0:
            continue  # an episode that ended on its first observation has nothing to roll
        last_start = max(length - max_h, 0)
        for start in np.unique(np.round(np.linspace(0, last_start, max(int(starts_per_episode), 1))).astype(int)):
            steps = min(max_h, length - start)
            true = np.full((max_h + 1, obs_dim), np.nan)
            true[: steps + 1] = obs[start: start + steps + 1]
            acts = np.zeros((max_h, act_dim))
            acts[:steps] = act[start: start + steps]
            ctx = np.zeros((max_h, context_dim))
            if context is not None:
                ctx[:steps] = context[start: start + steps]
                ctx[steps:] = context[start + steps - 1]
            starts_true.append(true)
            starts_act.append(acts)
            starts_ctx.append(ctx)
            starts_len.append(steps)
    true = np.stack(starts_true)
    acts = np.stack(starts_act)
    ctx = np.stack(starts_ctx) if context_dim else None
    lengths = np.asarray(starts_len)

    if state_std is None:
        state_std = np.concatenate([obs for obs, _, _ in arrays]).std(axis=0)
    state_std = np.asarray(state_std, dtype=np.float64)
    state_std = np.where(state_std < 1e-8, 1.0, state_std)

    predictors = ([EliteMeanPredictor(model)] if model is not None else []) + list(baselines)
    errors: dict[str, list[float]] = {}
    medians: dict[str, list[float]] = {}
    for predictor in predictors:
        state = true[:, 0].copy()
        # Padded steps past an episode's end keep rolling (masked out) so the batch stays rectangular.
        predicted = np.empty_like(true)
        predicted[:, 0] = state
        with np.errstate(all="ignore"):
            for t in range(max_h):
                state, _ = predictor.predict_mean(state, acts[:, t], ctx[:, t] if ctx is not None else None)
                predicted[:, t + 1] = state
            per_start = (((predicted - true) / state_std) ** 2).mean(axis=2)  # [starts, max_h + 1]
        errors[predictor.name] = [float(per_start[lengths >= h, h].mean()) for h in horizons]
        medians[predictor.name] = [float(np.median(per_start[lengths >= h, h])) for h in horizons]
    return {
        "horizons": horizons,
        "n_starts": [int((lengths >= h).sum()) for h in horizons],
        "unreachable_horizons": unreachable if drop_unreachable else [],
        "state_error": errors,
        "state_error_median": medians,
        "units": "squared state error / per-dimension state variance, mean over dims and starts",
    }


def open_loop_figure(open_loop: Mapping[str, Any]):
    """A matplotlib Figure of open-loop error vs horizon (log scale); the caller saves it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.8), layout="constrained")
    axes = figure.subplots()
    for name, values in open_loop["state_error"].items():
        axes.plot(open_loop["horizons"], values, marker="o", label=name)
    axes.set_xlabel("horizon (steps, open loop)")
    axes.set_ylabel("state error (normalized MSE)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    return figure


# ---------------------------------------------------------------------------- calibration

def calibration(model: EnsembleDynamicsModel, obs, act, next_obs, context=None,
                levels: Sequence[float] = CALIBRATION_LEVELS) -> dict:
    """Do the predicted next-state variances match the errors?

    The predictive distribution per state dimension is a Gaussian with the elite-mean delta and
    total variance = mean aleatoric variance + variance of the elite means (epistemic). Reports
    the fraction of true deltas inside the central ``levels`` intervals, the expected calibration
    error (mean |coverage - level| over central intervals 5%, 10%, ..., 95%), and the mean squared
    z-score (1 when calibrated; above 1 means overconfident). Exact-rule columns (zero variance)
    are left out; ``dims`` says how many state columns were measured.
    """
    mean, total_var = _elite_moments(model, obs, act, context)
    obs64 = np.asarray(obs, dtype=np.float64)
    delta = np.asarray(next_obs, dtype=np.float64) - obs64
    columns = _network_targets(model)[:-1]
    if not columns.any():
        raise WorldModelError("calibration: every state column is predicted by an exact rule, so there is no "
                              "predictive variance to calibrate")
    z = np.abs(delta - mean[:, :-1])[:, columns] / np.sqrt(total_var[:, :-1][:, columns])

    def coverage(level: float) -> float:
        return float((z <= NormalDist().inv_cdf(0.5 + level / 2)).mean())

    return {
        "coverage": {f"{level:g}": coverage(level) for level in levels},
        "expected_calibration_error": float(np.mean([abs(coverage(p) - p) for p in ECE_GRID])),
        "mean_z_squared": float((z ** 2).mean()),
        "n": int(delta.shape[0]),
        "dims": int(columns.sum()),
    }


# ---------------------------------------------------------------------------- bundle

def transition_split(batch: Any, with_context: bool) -> dict[str, Any]:
    """A ``TransitionBatch`` as the split dict the report (and the ensemble's fit) take."""
    return {"obs": batch.obs, "act": batch.act.reshape(len(batch), -1), "next_obs": batch.next_obs,
            "reward": batch.reward, "terminated": batch.terminated,
            "context": batch.context if with_context else None}


def _split_arrays(split: Mapping[str, Any], name: str):
    missing = [key for key in ("obs", "act", "next_obs", "reward") if key not in split]
    if missing:
        raise PhysaiError(f"model report: the {name} split lacks {missing}; pass a dict with obs, act, next_obs, "
                          f"reward and optionally terminated and context")
    return split["obs"], split["act"], split["next_obs"], split["reward"], split.get("context")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise WorldModelError(f"model report: {where} is {value}; the model or a baseline produced non-finite "
                              f"predictions on held-out data (diverged open loop or bad inputs)")


def _skill(model_figures: Mapping[str, Any], baseline_figures: Mapping[str, Any]) -> float:
    return 1.0 - model_figures["next_obs_mse"] / max(baseline_figures["next_obs_mse"], 1e-300)


def model_report(model: EnsembleDynamicsModel, train_split: Mapping[str, Any], heldout_split: Mapping[str, Any],
                 heldout_episodes: Sequence[Mapping[str, Any]], *, horizons: Sequence[int] = DEFAULT_HORIZONS,
                 starts_per_episode: int = 8) -> dict:
    """Every figure above for the model and both baselines, as JSON-able floats (raises on NaN/inf).

    Baselines are fit on ``train_split``; everything is measured on ``heldout_split`` and
    ``heldout_episodes``. Open-loop errors are normalized by the training states' std; horizons
    longer than every held-out episode are left out and listed (training is done by now, so a
    short episode should cost a figure, not the run).
    """
    identity = IdentityBaseline.fit(train_split)
    linear = LinearBaseline.fit(train_split)
    obs, act, next_obs, reward, context = _split_arrays(heldout_split, "held-out")
    _split_arrays(train_split, "training")
    one_step = {
        "model": one_step_metrics(model, obs, act, next_obs, reward, context),
        "identity": baseline_one_step_metrics(identity, obs, act, next_obs, reward, context),
        "linear": baseline_one_step_metrics(linear, obs, act, next_obs, reward, context),
    }
    open_loop = open_loop_error(model, heldout_episodes, horizons, baselines=(identity, linear),
                                starts_per_episode=starts_per_episode, drop_unreachable=True,
                                state_std=np.asarray(train_split["obs"], dtype=np.float64).std(axis=0))
    report: dict[str, Any] = {
        "model_id": model.model_id if model.model_hash and model.task_id else None,
        "n_train": int(np.asarray(train_split["obs"]).shape[0]),
        "n_heldout": int(np.asarray(obs).shape[0]),
        "n_heldout_episodes": len(heldout_episodes),
        "elite_indices": [int(v) for v in model.elite_indices],
        # Observation columns predicted by an exact affine rule found at fit time (name, rule, error).
        "exact_columns": list(model.exact_columns_info),
        "one_step": one_step,
        "one_step_skill_vs_identity": _skill(one_step["model"], one_step["identity"]),
        "one_step_skill_vs_linear": _skill(one_step["model"], one_step["linear"]),
        "open_loop": open_loop,
        # None when every state column follows an exact rule: no predictive variance to calibrate.
        "calibration": (calibration(model, obs, act, next_obs, context) if _network_targets(model)[:-1].any()
                        else None),
        "units": {
            "next_obs_mse": "raw state units squared",
            "reward_mse": "raw reward units squared",
            "nll_normalized_per_dim": "nats per target dimension, targets divided by their training std; "
                                      "exact-rule columns left out (also of calibration)",
            "open_loop": open_loop["units"],
            "skill": "1 - model MSE / baseline MSE (1 is perfect, 0 is no better than the baseline)",
        },
    }
    terminated = heldout_split.get("terminated")
    if terminated is not None:
        terminated = np.asarray(terminated, dtype=np.float64).reshape(-1)
        prob = model.predict(obs, act, context)["terminated_prob"].astype(np.float64)
        report["termination"] = {
            "heldout_rate": float(terminated.mean()),
            "mean_predicted_prob": float(prob.mean()),
            "brier_score": float(((prob - terminated) ** 2).mean()),
        }
    _check_finite(report, "report")
    return report
