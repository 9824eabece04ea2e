"""The ensemble network: batched members, prediction, sampling and disagreement."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physai.core.errors import ConfigError
from physai.synthetic.world_model.exact_columns import ExactColumns
from physai.synthetic.world_model.file_format import FileFormat
from physai.synthetic.world_model.fitting import Fitting
from physai.synthetic.world_model.settings import INFERENCE_CHUNK_ROWS, EnsembleConfig, WorldModelError


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


class EnsembleDynamicsModel(ExactColumns, Fitting, FileFormat, nn.Module):
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
