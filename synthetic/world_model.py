"""A probabilistic ensemble dynamics model: the world model that synthetic rollouts step through.

The model follows the recipe that made model-based RL work on MuJoCo tasks (PETS, MBPO,
mbrl-lib): an ensemble of MLPs, each predicting a diagonal Gaussian over the next-state
*delta* and the reward, trained with the Gaussian negative log-likelihood on bootstrapped
minibatches, early-stopped per member on held-out MSE, and used through its best
("elite") members. Synthetic rollouts pick one random elite per row and sample from its
Gaussian (TS-1), so both kinds of uncertainty show up in the data a policy learns from.

All members run in one batched pass: every weight has a leading ``members`` dimension and
the layers are ``torch.baddbmm`` calls, so a 7-member ensemble costs one kernel per layer.

Differences from mbrl-lib/MBPO, each for a reason:

* A learned termination head (Bernoulli logit, class-weighted BCE, prior-corrected at
  inference) instead of hand-written termination functions, so any task works unchanged.
* An optional physics-context input (e.g. randomized mass or friction), so one model serves
  a domain-randomized task instead of averaging over its parameters.
* Saved files carry their task, dims and a sha256 checked on load; a model trained for
  another task, or a corrupted file, is refused before it can generate plausible nonsense.
* Early stopping also checks the *starting* weights on a refit, so an incremental refit never
  ends worse on validation than the weights it started from.
* Observation columns whose next value is an exact affine function of ``[obs, act, context]``
  on every training row (a ``last_action`` term, a constant) are found at fit time and predicted
  by that rule with zero variance instead of by the network. A network only approximates them,
  and in the Gaussian NLL a noiseless column drives its variance to the lower bound, so it then
  outweighs the noisy columns ~e^10 to 1 and takes over the shared layers' gradient.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physai.errors import ConfigError, PhysaiError
from physai.io import atomic_path

log = logging.getLogger(__name__)

FORMAT_NAME = "physai.world_model.ensemble"
# Version 2 added the exact-column rule buffers; version 1 files load as models without exact columns.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
# The termination loss weights positives by n_negative / n_positive, capped so a handful of
# terminations in a huge data set cannot dominate the gradient.
MAX_TERMINATION_POS_WEIGHT = 100.0
# Early stopping counts an epoch as progress only when a member improves by more than this
# relative amount (mbrl-lib's ``improvement_threshold``).
IMPROVEMENT_THRESHOLD = 0.01
# Inference runs over rows in blocks this size. Each hidden activation is [elites, rows, hidden];
# at ~1k rows it stays in the CPU's L2, which doubles throughput over 16k-row blocks on a 2 MB-L2
# Xeon (the elementwise SiLU and bias adds are memory-bound; the matmuls are not).
INFERENCE_CHUNK_ROWS = 1024
# An observation column counts as exact when an affine fit of its next value on [obs, act,
# context, 1] misses no training row by more than EXACT_RELATIVE_TOLERANCE x the column's std
# (plus a few float32 ulps of its magnitude, so float32 storage cannot hide an exact rule).
# A column that is constant except at rare jumps (a command resampled on a timer) misses the
# jump rows by a whole jump, so it stays with the network. So does a column that never changes
# (the z of a planar task): its delta is 0, which costs the network nothing, and taking reach2d's
# two such columns out of the network made it slightly worse (one-step MSE 2.2e-4 vs 2.0e-4, 2 seeds).
EXACT_RELATIVE_TOLERANCE = 1e-4
EXACT_FLOAT32_ULPS = 8.0
# Detection needs this many rows per fitted coefficient: with few rows any column fits exactly.
EXACT_MIN_ROWS_PER_COEFFICIENT = 2


class WorldModelError(PhysaiError):
    """A world-model file or data set that cannot be used: corrupted, for another task, or malformed."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Everything needed to rebuild the network; saved with the weights."""

    obs_dim: int
    act_dim: int
    context_dim: int = 0
    context_names: tuple[str, ...] = ()
    obs_names: tuple[str, ...] = ()
    members: int = 7
    elites: int = 5
    hidden: int = 200
    layers: int = 4
    seed: int = 0
    weight_decay: tuple[float, ...] = ()
    learning_rate: float = 1e-3
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_penalty: float = 0.01
    termination_loss_weight: float = 1.0


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers evaluated in one batched matmul.

    Weight shape is ``[members, in, out]``; inputs are ``[members, batch, in]`` (each member its
    own rows, as in bootstrapped training) or ``[batch, in]`` (the same rows for every member,
    as in inference, computed as a single wide matmul).
    """

    def __init__(self, members: int, in_features: int, out_features: int, generator: torch.Generator):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight = torch.empty(members, in_features, out_features)
        # Truncated normal with std 1/(2 sqrt(in)), the initialization MBPO's ensembles use.
        std = 1.0 / (2.0 * math.sqrt(in_features))
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))

    def forward(self, x: torch.Tensor, member_index: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if member_index is not None:
            weight, bias = weight.index_select(0, member_index), bias.index_select(0, member_index)
        if x.dim() == 2:  # shared rows: one [batch, in] x [in, members*out] matmul
            members = weight.shape[0]
            wide = weight.permute(1, 0, 2).reshape(self.in_features, members * self.out_features)
            out = (x @ wide).reshape(x.shape[0], members, self.out_features).permute(1, 0, 2)
            return out + bias
        return torch.baddbmm(bias, x, weight)


class EnsembleDynamicsModel(nn.Module):
    """Ensemble of Gaussian MLPs predicting next-obs delta, reward and termination.

    Inputs are ``[obs, act, context]``; targets are ``[next_obs - obs, reward]``. Both are
    standardized with statistics fit on the training split and stored as buffers, so a saved
    model carries its own normalization.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        context_dim: int = 0,
        members: int = 7,
        elites: int = 5,
        hidden: int = 200,
        layers: int = 4,
        seed: int = 0,
        *,
        context_names: Sequence[str] | None = None,
        obs_names: Sequence[str] | None = None,
        weight_decay: float | Sequence[float] | None = None,
        learning_rate: float = 1e-3,
        init_max_logvar: float = 0.5,
        init_min_logvar: float = -10.0,
        logvar_bound_penalty: float = 0.01,
        termination_loss_weight: float = 1.0,
    ):
        super().__init__()
        context_names = tuple(context_names or ())
        if context_names and context_dim and len(context_names) != context_dim:
            raise ConfigError(f"world model: context_dim={context_dim} but {len(context_names)} context_names "
                              f"{list(context_names)} were given; pass one name per context entry")
        context_dim = context_dim or len(context_names)
        obs_names = tuple(str(name) for name in (obs_names or ()))
        if obs_names and len(obs_names) != obs_dim:
            raise ConfigError(f"world model: obs_dim={obs_dim} but {len(obs_names)} obs_names were given; pass one "
                              f"name per observation column (GymTask.signal_names()[0]) or none")
        for name, value, low in (("obs_dim", obs_dim, 1), ("act_dim", act_dim, 0), ("context_dim", context_dim, 0),
                                 ("members", members, 1), ("elites", elites, 1), ("hidden", hidden, 1),
                                 ("layers", layers, 1)):
            if int(value) != value or value < low:
                raise ConfigError(f"world model: {name}={value!r} must be an integer >= {low}")
        if elites > members:
            raise ConfigError(f"world model: elites={elites} exceeds members={members}; set elites <= members")
        if weight_decay is None:
            # MBPO's schedule: decay grows with depth, 2.5e-5 on the input layer to 1e-4 on the output.
            decay = tuple(float(v) for v in np.linspace(2.5e-5, 1e-4, layers + 1))
        elif isinstance(weight_decay, (int, float)):
            decay = (float(weight_decay),) * (layers + 1)
        else:
            decay = tuple(float(v) for v in weight_decay)
            if len(decay) != layers + 1:
                raise ConfigError(f"world model: weight_decay has {len(decay)} entries but the network has "
                                  f"{layers + 1} linear layers (layers={layers} hidden + 1 output); give one per layer")
        if init_min_logvar >= init_max_logvar:
            raise ConfigError(f"world model: init_min_logvar={init_min_logvar} must be below "
                              f"init_max_logvar={init_max_logvar}")
        self.config = EnsembleConfig(
            obs_dim=int(obs_dim), act_dim=int(act_dim), context_dim=int(context_dim), context_names=context_names,
            obs_names=obs_names, members=int(members), elites=int(elites), hidden=int(hidden), layers=int(layers),
            seed=int(seed),
            weight_decay=decay, learning_rate=float(learning_rate), init_max_logvar=float(init_max_logvar),
            init_min_logvar=float(init_min_logvar), logvar_bound_penalty=float(logvar_bound_penalty),
            termination_loss_weight=float(termination_loss_weight))
        self.obs_dim, self.act_dim, self.context_dim = self.config.obs_dim, self.config.act_dim, self.config.context_dim
        self.members, self.elites = self.config.members, self.config.elites
        self.input_dim = self.obs_dim + self.act_dim + self.context_dim
        self.target_dim = self.obs_dim + 1  # next-obs delta, then reward

        generator = torch.Generator().manual_seed(int(seed))
        widths = [self.input_dim] + [hidden] * layers
        self.hidden_layers = nn.ModuleList(EnsembleLinear(members, a, b, generator) for a, b in zip(widths, widths[1:]))
        # Output: mean and log-variance for every target, plus one termination logit.
        self.output_layer = EnsembleLinear(members, hidden, 2 * self.target_dim + 1, generator)
        self.max_logvar = nn.Parameter(torch.full((members, 1, self.target_dim), float(init_max_logvar)))
        self.min_logvar = nn.Parameter(torch.full((members, 1, self.target_dim), float(init_min_logvar)))

        self.register_buffer("input_mean", torch.zeros(self.input_dim))
        self.register_buffer("input_std", torch.ones(self.input_dim))
        self.register_buffer("target_mean", torch.zeros(self.target_dim))
        self.register_buffer("target_std", torch.ones(self.target_dim))
        self.register_buffer("elite_indices", torch.arange(self.elites, dtype=torch.long))
        self.register_buffer("validation_mse", torch.full((members,), float("nan")))
        # log of the positive-class weight used in training: subtracted from the logit at
        # inference so terminated_prob is a calibrated probability again.
        self.register_buffer("termination_log_pos_weight", torch.zeros(()))
        self.register_buffer("termination_rate", torch.zeros(()))
        self.register_buffer("is_fitted", torch.zeros((), dtype=torch.bool))
        # The exact-column rule (see _detect_exact_columns): for target columns in exact_mask, the
        # normalized mean is x_normalized @ exact_weight + exact_bias and the variance is zero.
        # The reward entry of the mask is always False.
        self.register_buffer("exact_mask", torch.zeros(self.target_dim, dtype=torch.bool))
        self.register_buffer("exact_weight", torch.zeros(self.input_dim, self.target_dim))
        self.register_buffer("exact_bias", torch.zeros(self.target_dim))
        self.exact_columns_info: list[dict] = []
        self._sync_exact_columns()

        self.task_id: str | None = None
        self.model_hash: str | None = None
        self.training_history: list[dict] = []
        self.fit_calls = 0

    # ------------------------------------------------------------------ network

    def _sync_exact_columns(self) -> None:
        """Refresh the Python-side view of ``exact_mask`` (after a fit or a load).

        ``_has_exact`` is a plain bool so the forward pass branches on it at trace time (ONNX
        export), ``network_columns`` indexes the targets the network itself predicts, and
        ``output_decay_mask`` keeps weight decay off the output weights of exact columns: with no
        other gradient, decay alone would shrink them into denormal floats, which made every
        epoch ~1.8x slower on x86 CPUs.
        """
        mask = self.exact_mask.detach().cpu()
        self._has_exact = bool(mask.any())
        device = self.exact_mask.device
        network = torch.nonzero(~mask).reshape(-1).to(device)
        # Output columns are [mean, logvar] per target, then the termination logit.
        decay_mask = torch.cat([~mask, ~mask, torch.ones(1, dtype=torch.bool)]).float().to(device)
        for name, value in (("network_columns", network), ("output_decay_mask", decay_mask)):
            if name in self._buffers:
                setattr(self, name, value)
            else:
                self.register_buffer(name, value, persistent=False)

    @property
    def exact_columns(self) -> list[int]:
        """Indices of the observation columns predicted by the exact affine rule instead of the network."""
        return [int(i) for i in torch.nonzero(self.exact_mask[: self.obs_dim]).reshape(-1)]

    def _forward_normalized(self, x: torch.Tensor, member_index: torch.Tensor | None = None, *,
                            apply_rule: bool = True):
        """Normalized inputs -> (mean, logvar, termination logit), each ``[members, batch, ...]``.

        Exact columns come from their affine rule, the same for every member, with log-variance
        -inf (zero variance), so they add nothing to the members' disagreement. Training passes
        ``apply_rule=False`` (it only reads the network's columns) to save the extra work.
        """
        h = x
        for layer in self.hidden_layers:
            h = F.silu(layer(h, member_index))
        out = self.output_layer(h, member_index)
        mean = out[..., : self.target_dim]
        raw_logvar = out[..., self.target_dim: 2 * self.target_dim]
        termination_logit = out[..., -1]
        max_logvar, min_logvar = self.max_logvar, self.min_logvar
        if member_index is not None:
            max_logvar, min_logvar = max_logvar.index_select(0, member_index), min_logvar.index_select(0, member_index)
        # Soft, learned bounds (PETS): the variance can neither collapse nor explode outside the data.
        logvar = max_logvar - F.softplus(max_logvar - raw_logvar)
        logvar = min_logvar + F.softplus(logvar - min_logvar)
        if self._has_exact and apply_rule:
            rule = x @ self.exact_weight + self.exact_bias  # [batch, T] or [members, batch, T]
            mean = torch.where(self.exact_mask, rule, mean)
            logvar = logvar.masked_fill(self.exact_mask, float("-inf"))
        return mean, logvar, termination_logit

    def _inputs(self, obs, act, context) -> np.ndarray:
        obs = np.asarray(obs)
        act = np.asarray(act)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise WorldModelError(f"world model: obs must have shape [N, {self.obs_dim}], got {list(obs.shape)}")
        if act.ndim != 2 or act.shape != (obs.shape[0], self.act_dim):
            raise WorldModelError(f"world model: act must have shape [{obs.shape[0]}, {self.act_dim}] "
                                  f"(one action per obs row), got {list(act.shape)}")
        parts = [obs, act]
        if self.context_dim:
            if context is None:
                raise WorldModelError(f"world model: this model is conditioned on a {self.context_dim}-dim physics "
                                      f"context {list(self.config.context_names) or ''}; pass context=[N, "
                                      f"{self.context_dim}] (or one [{self.context_dim}] vector for all rows)")
            context = np.asarray(context)
            if context.ndim == 1:
                context = np.broadcast_to(context, (obs.shape[0], context.shape[0]))
            if context.shape != (obs.shape[0], self.context_dim):
                raise WorldModelError(f"world model: context must have shape [{obs.shape[0]}, {self.context_dim}], "
                                      f"got {list(context.shape)}")
            parts.append(context)
        elif context is not None and np.asarray(context).size:
            raise WorldModelError("world model: a context was passed but the model was built with context_dim=0; "
                                  "rebuild it with context_dim set, or drop the context")
        return np.concatenate([np.asarray(p, dtype=np.float32).reshape(obs.shape[0], -1) for p in parts], axis=1)

    def _require_fitted(self) -> None:
        if not bool(self.is_fitted):
            raise WorldModelError("world model: it has not been trained; call fit() or EnsembleDynamicsModel.load()")

    # ------------------------------------------------------------------ training

    def fit(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        next_obs: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        context: np.ndarray | None = None,
        *,
        holdout_fraction: float = 0.2,
        max_holdout: int = 5000,
        batch_size: int = 256,
        max_epochs: int = 200,
        max_seconds: float | None = None,
        patience: int = 5,
        progress: bool = True,
        rng_seed: int | None = None,
        detect_exact: bool = True,
    ) -> dict:
        """Train on all transitions given (pass the whole data set again on a refit).

        Each member sees its own bootstrap resample. After every epoch each member's held-out
        MSE (normalized targets) is measured and its best weights kept; training stops when no
        member improved by more than 1% for ``patience`` epochs, or at ``max_epochs`` /
        ``max_seconds``. The ``elites`` members with the lowest held-out MSE are used for
        prediction. A refit re-fits the normalizer on the new data and continues from the current
        weights, which also count as a candidate snapshot.

        With ``detect_exact`` (the default), observation columns whose next value is an exact
        affine function of the inputs on every row given are predicted by that rule instead of
        the network (see ``_detect_exact_columns``); a refit detects them afresh.
        """
        inputs = self._inputs(obs, act, context)
        next_obs = np.asarray(next_obs, dtype=np.float32)
        reward = np.asarray(reward, dtype=np.float32).reshape(-1)
        terminated = np.asarray(terminated).reshape(-1).astype(np.float32)
        n = inputs.shape[0]
        for name, array, shape in (("next_obs", next_obs, (n, self.obs_dim)), ("reward", reward, (n,)),
                                   ("terminated", terminated, (n,))):
            if array.shape != shape:
                raise WorldModelError(f"world model fit: {name} must have shape {list(shape)}, got {list(array.shape)}")
        for name, array in (("obs/act/context", inputs), ("next_obs", next_obs), ("reward", reward)):
            if not np.isfinite(array).all():
                bad_cells = ~np.isfinite(array)
                bad = int(bad_cells.any(axis=-1).sum() if array.ndim > 1 else bad_cells.sum())
                raise WorldModelError(f"world model fit: {name} has {bad} rows with NaN/inf; drop those transitions "
                                      f"before training")
        if not 0.0 < holdout_fraction < 1.0:
            raise ConfigError(f"world model fit: holdout_fraction={holdout_fraction} must be in (0, 1)")
        n_holdout = min(int(round(n * holdout_fraction)), int(max_holdout))
        if n_holdout < 1 or n - n_holdout < 2:
            raise WorldModelError(f"world model fit: {n} transitions are too few to split into training and "
                                  f"held-out sets (holdout_fraction={holdout_fraction}); collect more data")
        if batch_size < 1 or patience < 1 or max_epochs < 0:
            raise ConfigError("world model fit: batch_size and patience must be >= 1 and max_epochs >= 0")

        seed = int(rng_seed) if rng_seed is not None else self.config.seed * 1009 + self.fit_calls
        self.fit_calls += 1
        rng = np.random.default_rng(seed)
        permutation = rng.permutation(n)
        holdout_rows, train_rows = permutation[:n_holdout], permutation[n_holdout:]
        targets = np.concatenate([next_obs - inputs[:, : self.obs_dim], reward[:, None]], axis=1)
        self._fit_normalizer(inputs[train_rows], targets[train_rows], terminated[train_rows])

        device = self.input_mean.device
        x_all = (torch.from_numpy(inputs).to(device) - self.input_mean) / self.input_std
        exact = self._detect_exact_columns(x_all, inputs[:, : self.obs_dim], next_obs, enabled=detect_exact)
        y_all = (torch.from_numpy(targets).to(device) - self.target_mean) / self.target_std
        done_all = torch.from_numpy(terminated).to(device)
        train_index = torch.from_numpy(train_rows).to(device)
        x_val, y_val = x_all[holdout_rows], y_all[holdout_rows]
        n_train = train_rows.shape[0]
        pos_weight = torch.exp(self.termination_log_pos_weight)

        optimizer = torch.optim.Adam(self.parameters(), lr=self.config.learning_rate)
        # Bootstrap once per fit (as MBPO), reshuffled every epoch.
        bootstrap = rng.integers(0, n_train, size=(self.members, n_train))

        best_mse = self._validation_mse(x_val, y_val)
        initial_mse = best_mse.clone()
        best_epoch = torch.zeros(self.members, dtype=torch.long)
        snapshot = {name: param.detach().clone() for name, param in self.named_parameters()}
        epochs_since_improvement, epoch, stopped_by = 0, 0, "max_epochs"
        train_loss = float("nan")
        started = time.perf_counter()

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]world model[/] epoch {task.completed:.0f}/{task.total:.0f}"), BarColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=not progress,
                      transient=False) as bar:
            task = bar.add_task("fit", total=max_epochs, status="")
            while epoch < max_epochs:
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    stopped_by = "max_seconds"
                    break
                self.train()
                epoch_rows = torch.from_numpy(rng.permuted(bootstrap, axis=1)).to(device)
                losses = []
                for start in range(0, n_train, batch_size):
                    if max_seconds is not None and losses and time.perf_counter() - started >= max_seconds:
                        break  # out of time mid-epoch: validate what we have, then stop below
                    rows = train_index[epoch_rows[:, start: start + batch_size]]  # [members, batch]
                    loss = self._training_loss(x_all[rows], y_all[rows], done_all[rows], pos_weight)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                train_loss = float(np.mean(losses))
                epoch += 1

                mse = self._validation_mse(x_val, y_val)
                improved = (best_mse - mse) / best_mse.clamp_min(1e-12) > IMPROVEMENT_THRESHOLD
                improved |= ~torch.isfinite(best_mse) & torch.isfinite(mse)
                if bool(improved.any()):
                    on_device = improved.to(device)
                    with torch.no_grad():
                        for name, param in self.named_parameters():
                            snapshot[name][on_device] = param.detach()[on_device]
                    best_mse = torch.where(improved, mse, best_mse)
                    best_epoch[improved] = epoch
                    epochs_since_improvement = 0
                else:
                    epochs_since_improvement += 1
                bar.update(task, advance=1, status=f"val mse {best_mse.min().item():.4g} (best member)")
                if epochs_since_improvement >= patience:
                    stopped_by = "patience"
                    break
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    stopped_by = "max_seconds"
                    break

        with torch.no_grad():
            for name, param in self.named_parameters():
                param.copy_(snapshot[name])
        self.validation_mse.copy_(best_mse)
        order = torch.argsort(torch.nan_to_num(best_mse, nan=float("inf")))
        self.elite_indices.copy_(order[: self.elites].sort().values)
        self.is_fitted.fill_(True)
        self.model_hash = None  # the weights changed; the old file no longer describes them
        self.eval()

        figures = {
            "epochs": epoch,
            "train_seconds": time.perf_counter() - started,
            "stopped_by": stopped_by,
            "n_train": int(n_train),
            "n_holdout": int(n_holdout),
            "final_train_loss": train_loss,
            "initial_val_mse_per_member": [float(v) for v in initial_mse],
            "val_mse_per_member": [float(v) for v in best_mse],
            "best_epoch_per_member": [int(v) for v in best_epoch],
            "elite_indices": [int(v) for v in self.elite_indices],
            "elite_val_mse": float(best_mse[self.elite_indices.cpu()].mean()),
            "termination_rate": float(self.termination_rate),
            "rng_seed": seed,
            "exact_columns": exact,
        }
        self.training_history.append(figures)
        log.info("world model: %d epochs in %.1fs (%s), elite val mse %.4g, elites %s", epoch,
                 figures["train_seconds"], stopped_by, figures["elite_val_mse"], figures["elite_indices"])
        return figures

    def _detect_exact_columns(self, x: torch.Tensor, obs: np.ndarray, next_obs: np.ndarray, *,
                              enabled: bool = True) -> dict:
        """Find observation columns whose next value is an exact affine function of the inputs; install their rule.

        Least squares of each column's next value on ``[normalized inputs, 1]`` over every row
        given, in float64. A column is exact when no row misses by more than
        ``EXACT_RELATIVE_TOLERANCE`` x its std plus ``EXACT_FLOAT32_ULPS`` float32 ulps of its
        largest magnitude, checked again with the float32 rule the forward pass evaluates.
        Columns whose next value never changes are left to the network and listed under
        ``constant_columns``. The rule is stored in normalized delta units, so every prediction
        path uses it unchanged.
        Returns the summary that goes into the fit figures and the model's metadata.
        """
        n, coefficients = x.shape[0], self.input_dim + 1
        weight = np.zeros((self.input_dim, self.target_dim))
        bias = np.zeros(self.target_dim)
        mask = np.zeros(self.target_dim, dtype=bool)
        info: list[dict] = []
        constant: list[str] = []
        if not enabled:
            status = "disabled"
        elif n < EXACT_MIN_ROWS_PER_COEFFICIENT * coefficients:
            status = (f"skipped: {n} rows are fewer than {EXACT_MIN_ROWS_PER_COEFFICIENT} per coefficient "
                      f"({coefficients}), too few to tell an exact rule from a lucky fit")
        else:
            status = "checked"
            design = np.concatenate([x.detach().cpu().numpy().astype(np.float64), np.ones((n, 1))], axis=1)
            target = next_obs.astype(np.float64)
            solution, *_ = np.linalg.lstsq(design, target, rcond=None)
            residual = np.abs(target - design @ solution).max(axis=0)
            ulps = EXACT_FLOAT32_ULPS * np.finfo(np.float32).eps * np.abs(target).max(axis=0)
            tolerance = EXACT_RELATIVE_TOLERANCE * target.std(axis=0) + ulps
            is_constant = np.ptp(target, axis=0) <= ulps
            constant = [self._obs_name(int(j)) for j in np.flatnonzero(is_constant)]
            input_mean, input_std, target_mean, target_std = (
                buf.detach().cpu().numpy().astype(np.float64)
                for buf in (self.input_mean, self.input_std, self.target_mean, self.target_std))
            for j in np.flatnonzero((residual <= tolerance) & ~is_constant):
                # next_j = [x, 1] @ c; delta_j = next_j - obs_j with obs_j = x_j * input_std_j + input_mean_j.
                column = solution[:-1, j] / target_std[j]
                column[j] -= input_std[j] / target_std[j]
                weight[:, j] = column
                bias[j] = (solution[-1, j] - input_mean[j] - target_mean[j]) / target_std[j]
                mask[j] = True
            if mask.any():
                # Verify in float32, as predict() computes it: obs + (x @ W + b) * target_std + target_mean.
                columns = np.flatnonzero(mask)
                with torch.no_grad():
                    w32 = torch.as_tensor(weight[:, columns], dtype=torch.float32, device=x.device)
                    b32 = torch.as_tensor(bias[columns], dtype=torch.float32, device=x.device)
                    index = torch.as_tensor(columns, device=x.device)
                    delta = (x @ w32 + b32) * self.target_std[index] + self.target_mean[index]
                    predicted = torch.from_numpy(obs[:, columns]).to(x.device) + delta
                    float32_error = (predicted.cpu().numpy().astype(np.float64) - target[:, columns])
                float32_error = np.abs(float32_error).max(axis=0)
                for k, j in enumerate(columns):
                    if float32_error[k] > tolerance[j]:
                        mask[j], weight[:, j], bias[j] = False, 0.0, 0.0
                        log.info("world model: column %s fits an affine rule in float64 but not in float32 "
                                 "(max error %.3g > %.3g); the network predicts it", self._obs_name(j),
                                 float32_error[k], tolerance[j])
                    else:
                        info.append({"index": int(j), "name": self._obs_name(int(j)),
                                     "max_abs_error": float(max(residual[j], float32_error[k])),
                                     "tolerance": float(tolerance[j]),
                                     "rule": self._rule_text(int(j), solution[:, j], input_mean, input_std,
                                                             float(tolerance[j]))})
        with torch.no_grad():
            self.exact_mask.copy_(torch.from_numpy(mask))
            self.exact_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.exact_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.exact_columns_info = info
        self._sync_exact_columns()
        if info:
            log.info("world model: %d observation column(s) are exact affine functions of the inputs and are "
                     "predicted by that rule: %s", len(info), ", ".join(item["name"] for item in info))
        return {"status": status, "relative_tolerance": EXACT_RELATIVE_TOLERANCE, "columns": info,
                "constant_columns": constant}

    def _obs_name(self, index: int) -> str:
        names = self.config.obs_names
        return names[index] if names else f"obs[{index}]"

    def _input_names(self) -> list[str]:
        context = list(self.config.context_names) or [f"context[{i}]" for i in range(self.context_dim)]
        return ([self._obs_name(i) for i in range(self.obs_dim)] + [f"act[{i}]" for i in range(self.act_dim)]
                + context)

    def _rule_text(self, index: int, solution: np.ndarray, input_mean: np.ndarray, input_std: np.ndarray,
                   tolerance: float, max_terms: int = 8) -> str:
        """The rule in raw units, for people: ``next last_action[0] = 1 * act[0]``.

        Terms that move the column by less than the detection tolerance per input std are
        least-squares round-off and are left out.
        """
        raw = solution[:-1] / input_std
        intercept = solution[-1] - float(raw @ input_mean)
        floor = max(tolerance, 1e-12)
        terms = [(name, coef) for name, coef, effect in zip(self._input_names(), raw, np.abs(solution[:-1]))
                 if effect > floor]
        terms.sort(key=lambda item: -abs(item[1]))
        text = [f"{coef:+.6g} * {name}" for name, coef in terms[:max_terms]]
        if len(terms) > max_terms:
            text.append(f"... ({len(terms) - max_terms} more terms)")
        if abs(intercept) > floor or not text:
            text.append(f"{intercept:+.6g}")
        body = " ".join(text)
        return f"next {self._obs_name(index)} = {body[1:] if body.startswith('+') else body}"

    def _fit_normalizer(self, inputs: np.ndarray, targets: np.ndarray, terminated: np.ndarray) -> None:
        def stats(array: np.ndarray):
            mean = array.astype(np.float64).mean(axis=0)
            std = array.astype(np.float64).std(axis=0)
            std = np.where(std < 1e-8, 1.0, std)  # a constant column passes through unscaled
            return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

        with torch.no_grad():
            for (mean_buf, std_buf), array in (((self.input_mean, self.input_std), inputs),
                                               ((self.target_mean, self.target_std), targets)):
                mean, std = stats(array)
                mean_buf.copy_(mean)
                std_buf.copy_(std)
            positives = float(terminated.sum())
            negatives = float(terminated.shape[0] - positives)
            weight = min(negatives / positives, MAX_TERMINATION_POS_WEIGHT) if positives > 0 else 1.0
            self.termination_log_pos_weight.fill_(math.log(max(weight, 1e-6)))
            self.termination_rate.fill_(positives / max(terminated.shape[0], 1))

    def _training_loss(self, x, y, done, pos_weight) -> torch.Tensor:
        """Gaussian NLL (mean over batch and targets, summed over members so each member's
        step size does not depend on the ensemble size) + bound penalty + weight decay + BCE.
        Exact columns are left out: their rule is fixed, and the network's outputs there are unused."""
        mean, logvar, logit = self._forward_normalized(x, apply_rule=False)
        max_logvar, min_logvar = self.max_logvar, self.min_logvar
        if self._has_exact:
            columns = self.network_columns
            mean, logvar, y = mean[..., columns], logvar[..., columns], y[..., columns]
            max_logvar, min_logvar = max_logvar[..., columns], min_logvar[..., columns]
        nll = ((mean - y) ** 2 * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
        bounds = self.config.logvar_bound_penalty * (max_logvar.sum() - min_logvar.sum())
        decay = sum(coef * 0.5 * (layer.weight ** 2).sum() for coef, layer in
                    zip(self.config.weight_decay, self.hidden_layers))
        output_weight = self.output_layer.weight ** 2
        if self._has_exact:
            output_weight = output_weight * self.output_decay_mask
        decay = decay + self.config.weight_decay[-1] * 0.5 * output_weight.sum()
        bce = F.binary_cross_entropy_with_logits(logit, done, pos_weight=pos_weight, reduction="none")
        return nll + bounds + decay + self.config.termination_loss_weight * bce.mean(dim=1).sum()

    @torch.no_grad()
    def _validation_mse(self, x_val: torch.Tensor, y_val: torch.Tensor,
                        chunk: int = INFERENCE_CHUNK_ROWS) -> torch.Tensor:
        """Per-member MSE of the predicted mean on held-out rows, in normalized target units,
        over the targets the network predicts (exact columns would only dilute it)."""
        self.eval()
        columns = self.network_columns
        total = torch.zeros(self.members, device=x_val.device)
        for start in range(0, x_val.shape[0], chunk):
            mean, _, _ = self._forward_normalized(x_val[start: start + chunk], apply_rule=False)
            error = mean - y_val[start: start + chunk]
            if self._has_exact:
                error = error[..., columns]
            total += (error ** 2).sum(dim=(1, 2))
        return total.cpu() / (x_val.shape[0] * columns.shape[0])

    # ------------------------------------------------------------------ inference

    def _normalized_chunks(self, obs, act, context, chunk_size: int):
        """Yield (row slice, normalized input tensor) for ``chunk_size`` rows at a time."""
        inputs = self._inputs(obs, act, context)
        device = self.input_mean.device
        for start in range(0, inputs.shape[0], chunk_size):
            x = torch.from_numpy(inputs[start: start + chunk_size]).to(device)
            yield slice(start, start + x.shape[0]), (x - self.input_mean) / self.input_std

    def _termination_prob(self, logit: torch.Tensor) -> torch.Tensor:
        if float(self.termination_rate) == 0.0:
            # Never saw a termination: a classifier cannot have learned where one happens.
            return torch.zeros_like(logit)
        return torch.sigmoid(logit - self.termination_log_pos_weight)

    def predict(self, obs, act, context=None, *, elites_only: bool = True,
                chunk_size: int = INFERENCE_CHUNK_ROWS) -> dict:
        """Per-member Gaussian predictions in raw units (numpy float32).

        Returns ``next_obs_mean``/``next_obs_var`` ``[M, N, obs_dim]``, ``reward_mean``/``reward_var``
        ``[M, N]``, ``terminated_prob`` ``[N]`` (mean over the returned members, calibrated: the
        class weighting used in training is undone), ``member_indices`` ``[M]`` and ``is_elite``
        ``[M]``. ``M`` is the number of elites, or all members with ``elites_only=False``.
        Exact columns (``exact_columns``) hold their rule's value with variance 0 for every member.
        Non-finite inputs give non-finite outputs; nothing is clipped.
        """
        self._require_fitted()
        self.eval()
        index = self.elite_indices if elites_only else torch.arange(self.members, device=self.elite_indices.device)
        n = np.asarray(obs).shape[0]
        m = index.shape[0]
        delta_mean = np.empty((m, n, self.obs_dim), np.float32)
        delta_var = np.empty((m, n, self.obs_dim), np.float32)
        reward_mean = np.empty((m, n), np.float32)
        reward_var = np.empty((m, n), np.float32)
        terminated_prob = np.empty((n,), np.float32)
        with torch.inference_mode():
            for rows, x in self._normalized_chunks(obs, act, context, chunk_size):
                mean, logvar, logit = self._forward_normalized(x, index)
                mean = mean * self.target_std + self.target_mean
                var = torch.exp(logvar) * self.target_std ** 2
                delta_mean[:, rows] = mean[..., : self.obs_dim].cpu().numpy()
                delta_var[:, rows] = var[..., : self.obs_dim].cpu().numpy()
                reward_mean[:, rows] = mean[..., -1].cpu().numpy()
                reward_var[:, rows] = var[..., -1].cpu().numpy()
                terminated_prob[rows] = self._termination_prob(logit).mean(dim=0).cpu().numpy()
        members = index.cpu().numpy()
        return {
            "next_obs_mean": np.asarray(obs, dtype=np.float32)[None] + delta_mean,
            "next_obs_var": delta_var,
            "reward_mean": reward_mean,
            "reward_var": reward_var,
            "terminated_prob": terminated_prob,
            "member_indices": members,
            "is_elite": np.isin(members, self.elite_indices.cpu().numpy()),
        }

    def sample_step(self, obs, act, context=None, generator: np.random.Generator | torch.Generator | int | None = None,
                    *, chunk_size: int = INFERENCE_CHUNK_ROWS):
        """One synthetic step for every row: ``(next_obs, reward, terminated, disagreement)``.

        Each row is predicted by one elite chosen uniformly at random and sampled from that
        member's Gaussian (MBPO's TS-1), so epistemic spread shows up across rows and aleatoric
        noise within them. ``terminated`` is a Bernoulli draw from the chosen member's calibrated
        termination probability.

        ``disagreement`` is the max over state dimensions of the standard deviation (over elites)
        of the elites' predicted mean deltas, in normalized target units (units of the training
        data's per-dimension delta std; population std over elites). This is the epistemic
        "ensemble std" measure (one of those compared by Lu et al. 2022, "Revisiting Design
        Choices in Offline Model-Based RL"). We prefer it to MOPO's max aleatoric norm because
        the aleatoric variance is pinned by the learned max-log-variance bound and measures data
        noise, while members only agree where data constrained them, so their spread grows off
        the training distribution. The max makes one badly predicted joint enough to flag a row,
        and normalized units let one threshold serve every task. Exact columns are the same for
        every member, so they add nothing to it. Callers cut or penalize
        rollouts on it. Non-finite predictions come back non-finite so callers can stop those
        branches.
        """
        self._require_fitted()
        self.eval()
        torch_generator = _torch_generator(generator)
        n = np.asarray(obs).shape[0]
        next_obs = np.empty((n, self.obs_dim), np.float32)
        reward = np.empty((n,), np.float32)
        terminated = np.empty((n,), bool)
        disagreement = np.empty((n,), np.float32)
        obs_f32 = np.asarray(obs, dtype=np.float32)
        elites = self.elite_indices
        with torch.inference_mode():
            for rows, x in self._normalized_chunks(obs, act, context, chunk_size):
                mean, logvar, logit = self._forward_normalized(x, elites)  # [E, B, ...]
                batch = x.shape[0]
                choice = torch.randint(0, elites.shape[0], (batch,), generator=torch_generator).to(x.device)
                arange = torch.arange(batch, device=x.device)
                chosen_mean, chosen_logvar = mean[choice, arange], logvar[choice, arange]
                noise = torch.randn(chosen_mean.shape, generator=torch_generator).to(x.device)
                sample = (chosen_mean + torch.exp(0.5 * chosen_logvar) * noise) * self.target_std + self.target_mean
                prob = self._termination_prob(logit[choice, arange])
                uniform = torch.rand(prob.shape, generator=torch_generator).to(x.device)
                next_obs[rows] = obs_f32[rows] + sample[:, : self.obs_dim].cpu().numpy()
                reward[rows] = sample[:, -1].cpu().numpy()
                terminated[rows] = (uniform < prob).cpu().numpy()
                disagreement[rows] = self._disagreement(mean).cpu().numpy()
        return next_obs, reward, terminated, disagreement

    def _disagreement(self, normalized_mean: torch.Tensor) -> torch.Tensor:
        state_means = normalized_mean[..., : self.obs_dim]
        if state_means.shape[0] < 2:
            return torch.zeros(state_means.shape[1], device=state_means.device)
        return state_means.std(dim=0, unbiased=False).amax(dim=-1)

    def disagreement(self, obs, act, context=None, *, chunk_size: int = INFERENCE_CHUNK_ROWS) -> np.ndarray:
        """The per-row uncertainty that ``sample_step`` returns, without sampling."""
        self._require_fitted()
        self.eval()
        out = np.empty((np.asarray(obs).shape[0],), np.float32)
        with torch.inference_mode():
            for rows, x in self._normalized_chunks(obs, act, context, chunk_size):
                mean, _, _ = self._forward_normalized(x, self.elite_indices)
                out[rows] = self._disagreement(mean).cpu().numpy()
        return out

    # ------------------------------------------------------------------ files

    @property
    def model_id(self) -> str:
        """``<task>-<first 12 hex of the file's sha256>``: names the exact saved weights."""
        if self.model_hash is None or self.task_id is None:
            raise WorldModelError("world model: model_id names a saved file; call save() (or load a model) first")
        return f"{self.task_id}-{self.model_hash[:12]}"

    def metadata(self) -> dict:
        """JSON-able description of the model (no hash: that is computed from the saved bytes)."""
        config = asdict(self.config)
        config["context_names"] = list(config["context_names"])
        config["obs_names"] = list(config["obs_names"])
        config["weight_decay"] = list(config["weight_decay"])
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "task_id": self.task_id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "context_dim": self.context_dim,
            "context_names": list(self.config.context_names),
            "obs_names": list(self.config.obs_names),
            # Observation columns predicted by an exact affine rule instead of the network (see fit).
            "exact_columns": self.exact_columns_info,
            "members": self.members,
            "elites": self.elites,
            "elite_indices": [int(v) for v in self.elite_indices],
            "validation_mse_per_member": [_json_float(v) for v in self.validation_mse],
            "config": config,
            "training": self.training_history[-1] if self.training_history else None,
            "training_history": self.training_history,
        }

    def save(self, path: str | Path, *, task_id: str, obs_space_shape: Sequence[int] = (),
             act_space_shape: Sequence[int] = (), extra_metadata: dict | None = None) -> str:
        """Write ``path`` (one ``torch.save`` file of tensors + JSON strings) and ``<path>.json``.

        Both are written atomically. The sidecar holds the sha256 of the model file's bytes, which
        ``load`` checks. Returns the hash.
        """
        self._require_fitted()
        if not task_id or not isinstance(task_id, str):
            raise WorldModelError(f"world model save: task_id must be a non-empty string, got {task_id!r}")
        path = Path(path)
        metadata = self.metadata()
        metadata["task_id"] = task_id
        metadata["obs_space_shape"] = [int(v) for v in obs_space_shape]
        metadata["act_space_shape"] = [int(v) for v in act_space_shape]
        metadata["extra"] = extra_metadata or {}
        try:
            metadata = _finite_or_none(metadata)
            metadata_json = json.dumps(metadata, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WorldModelError(f"world model save: metadata for {path} is not JSON-able ({exc}); "
                                  f"pass plain str/int/float/list/dict values in extra_metadata") from exc
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "metadata_json": metadata_json,
            "state": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        sidecar = {**metadata, "model_hash": digest, "model_file": path.name, "model_bytes": len(data),
                   "model_id": f"{task_id}-{digest[:12]}"}
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n")
        self.task_id, self.model_hash = task_id, digest
        log.info("world model: saved %s (%s)", path, self.model_id)
        return digest

    @classmethod
    def load(cls, path: str | Path, *, expected_task_id: str | None = None, expected_obs_dim: int | None = None,
             expected_act_dim: int | None = None, map_location: str | torch.device = "cpu") -> "EnsembleDynamicsModel":
        """Load a model saved by ``save`` after checking its sha256, task and dims."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.is_file():
            raise WorldModelError(f"world model file {path} does not exist; run the world_model stage first")
        if not side.is_file():
            raise WorldModelError(f"world model file {path} has no checksum sidecar {side}; it was not written by "
                                  f"EnsembleDynamicsModel.save or the sidecar was lost; retrain or restore it")
        try:
            sidecar = json.loads(side.read_text())
            expected_hash = sidecar["model_hash"]
        except (ValueError, KeyError) as exc:
            raise WorldModelError(f"world model sidecar {side} is unreadable ({exc}); retrain or restore it") from exc
        data = path.read_bytes()
        actual_hash = hashlib.sha256(data).hexdigest()
        if actual_hash != expected_hash:
            raise WorldModelError(f"world model file {path} failed its checksum: sha256 {actual_hash[:16]}... but "
                                  f"{side.name} records {str(expected_hash)[:16]}...; the file is corrupted or was "
                                  f"changed after saving; retrain or restore it")
        try:
            payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise WorldModelError(f"world model file {path} could not be read ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise WorldModelError(f"world model file {path} is not a physai ensemble world model")
        version = payload.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise WorldModelError(f"world model file {path} has format version {version}, this physai reads "
                                  f"versions {list(READABLE_FORMAT_VERSIONS)}; retrain the world model")
        metadata = json.loads(payload["metadata_json"])
        saved_task = metadata.get("task_id")
        if expected_task_id is not None and saved_task != expected_task_id:
            raise WorldModelError(f"world model file {path} was trained for task '{saved_task}', but task "
                                  f"'{expected_task_id}' asked for it; retrain the world model on "
                                  f"'{expected_task_id}' or point to the model trained for it")
        for name, expected in (("obs_dim", expected_obs_dim), ("act_dim", expected_act_dim)):
            if expected is not None and metadata[name] != expected:
                raise WorldModelError(f"world model file {path} (task '{saved_task}') has {name}={metadata[name]}, "
                                      f"but {expected} is expected; the task's spaces changed since it was trained, "
                                      f"so retrain the world model")
        config = metadata["config"]
        model = cls(config["obs_dim"], config["act_dim"], config["context_dim"], members=config["members"],
                    elites=config["elites"], hidden=config["hidden"], layers=config["layers"], seed=config["seed"],
                    context_names=config["context_names"], obs_names=config.get("obs_names"),
                    weight_decay=config["weight_decay"],
                    learning_rate=config["learning_rate"], init_max_logvar=config["init_max_logvar"],
                    init_min_logvar=config["init_min_logvar"], logvar_bound_penalty=config["logvar_bound_penalty"],
                    termination_loss_weight=config["termination_loss_weight"])
        state = dict(payload["state"])
        if version == 1:  # written before exact columns existed: the network predicts every column
            for name in ("exact_mask", "exact_weight", "exact_bias"):
                state.setdefault(name, getattr(model, name).clone())
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WorldModelError(f"world model file {path} does not match the network its metadata describes "
                                  f"({exc}); retrain the world model") from exc
        model._sync_exact_columns()
        model.exact_columns_info = list(metadata.get("exact_columns") or [])
        model.to(map_location)
        model.eval()
        model.task_id = saved_task
        model.model_hash = actual_hash
        model.training_history = list(metadata.get("training_history") or [])
        model.fit_calls = len(model.training_history)
        return model


def sidecar_path(path: str | Path) -> Path:
    """The checksum + metadata file written next to a saved model: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _torch_generator(generator) -> torch.Generator:
    """Accept a torch or numpy generator or a seed; numpy generators seed a torch one so calls stay reproducible."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, np.random.Generator):
        return torch.Generator().manual_seed(int(generator.integers(0, 2**63 - 1)))
    if generator is None or isinstance(generator, (int, np.integer)):
        seeded = torch.Generator()
        if generator is None:
            seeded.seed()
        else:
            seeded.manual_seed(int(generator))
        return seeded
    raise WorldModelError(f"world model: generator must be a numpy or torch Generator or an int seed, "
                          f"got {type(generator).__name__}")


def _finite_or_none(value):
    """Metadata copy with NaN/inf (e.g. a diverged member's validation MSE) recorded as null."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
