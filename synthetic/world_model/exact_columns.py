"""Observation columns whose next value is an exact affine rule of the inputs: found at fit time,
predicted by the rule with zero variance instead of by the network (see the package docstring)."""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

# An observation column counts as exact when an affine fit of its next value on [obs, act,
# context, 1] misses no training row by more than EXACT_RELATIVE_TOLERANCE x the column's std
# (plus a few float32 ulps of its magnitude, so float32 storage cannot hide an exact rule).
# A column that is constant except at rare jumps (a command resampled on a timer) misses the
# jump rows by a whole jump, so it stays with the network. So does a column that never changes
# (the z of a planar task): its delta is 0, which costs the network nothing.
EXACT_RELATIVE_TOLERANCE = 1e-4
EXACT_FLOAT32_ULPS = 8.0
# Detection needs this many rows per fitted coefficient: with few rows any column fits exactly.
EXACT_MIN_ROWS_PER_COEFFICIENT = 2


class ExactColumns:
    """Mixin of ``EnsembleDynamicsModel``: finding, naming and syncing the exact-column rules."""

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
