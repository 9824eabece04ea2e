"""SAC critics regularized for high update-to-data ratios (DroQ-style dropout and layer norm).

At 10-20 gradient steps per real step a plain SAC critic overfits the few real transitions and its
value estimates drift; DroQ (Hiraoka et al., 2022) keeps such a critic in check with a small dropout
and layer normalization after every hidden linear layer (linear -> dropout -> layer norm ->
activation). ``RegularizedCriticSACPolicy`` is SB3's SAC policy with such critics; the actor is SB3's
own, so export, evaluation and deployment do not change. The target critics run in evaluation mode
(SB3 keeps them there), so dropout only regularizes the critics being fitted.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.sac.policies import SACPolicy
from torch import nn


def regularized_mlp(in_dim: int, net_arch: list[int], activation_fn: type[nn.Module], dropout: float,
                    layer_norm: bool) -> nn.Sequential:
    """A Q network: every hidden layer linear -> dropout -> layer norm -> activation, then one output."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in net_arch:
        layers.append(nn.Linear(width, hidden))
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation_fn())
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class RegularizedContinuousCritic(ContinuousCritic):
    """SB3's twin (or n-fold) Q critic with dropout and/or layer norm in its hidden layers."""

    def __init__(self, *args: Any, dropout: float = 0.0, layer_norm: bool = False, **kwargs: Any) -> None:
        n_critics = kwargs.pop("n_critics", 2)
        super().__init__(*args, n_critics=0, **kwargs)
        in_dim = kwargs["features_dim"] + get_action_dim(self.action_space)
        self.n_critics = n_critics
        for index in range(n_critics):
            q_net = regularized_mlp(in_dim, kwargs["net_arch"], kwargs.get("activation_fn", nn.ReLU), dropout,
                                    layer_norm)
            self.add_module(f"qf{index}", q_net)
            self.q_networks.append(q_net)


class RegularizedCriticSACPolicy(SACPolicy):
    """SAC's policy whose critics carry ``critic_dropout`` and ``critic_layer_norm`` (see the module)."""

    def __init__(self, *args: Any, critic_dropout: float = 0.0, critic_layer_norm: bool = False,
                 **kwargs: Any) -> None:
        if not 0.0 <= critic_dropout < 1.0:
            raise ValueError(f"critic_dropout={critic_dropout}: a dropout probability lies in [0, 1)")
        self.critic_dropout = float(critic_dropout)
        self.critic_layer_norm = bool(critic_layer_norm)
        super().__init__(*args, **kwargs)

    def make_critic(self, features_extractor=None) -> RegularizedContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return RegularizedContinuousCritic(**critic_kwargs, dropout=self.critic_dropout,
                                           layer_norm=self.critic_layer_norm).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(critic_dropout=self.critic_dropout, critic_layer_norm=self.critic_layer_norm)
        return data


def sac_policy(critic_dropout: float = 0.0, critic_layer_norm: bool = False) -> tuple[Any, dict[str, Any]]:
    """The policy argument and extra policy kwargs of an SB3 SAC: SB3's own MLP policy unless the critics
    are regularized, so plain SAC runs and checkpoints stay stock."""
    if critic_dropout == 0.0 and not critic_layer_norm:
        return "MlpPolicy", {}
    return RegularizedCriticSACPolicy, {"critic_dropout": critic_dropout, "critic_layer_norm": critic_layer_norm}
