"""Fitting the ensemble: Gaussian NLL on bootstrapped minibatches, early stopping per member."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from physai.core.errors import ConfigError
from physai.synthetic.world_model.settings import INFERENCE_CHUNK_ROWS, WorldModelError

log = logging.getLogger(__name__)

# The termination loss weights positives by n_negative / n_positive, capped so a handful of
# terminations in a huge data set cannot dominate the gradient.
MAX_TERMINATION_POS_WEIGHT = 100.0
# Early stopping counts an epoch as progress only when a member improves by more than this
# relative amount (mbrl-lib's ``improvement_threshold``).
IMPROVEMENT_THRESHOLD = 0.01


class Fitting:
    """Mixin of ``EnsembleDynamicsModel``: ``fit`` and the losses it minimizes."""

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
