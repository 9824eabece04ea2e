"""SAC with DroQ-style critics: configured by two keys, trained and restored like stock SAC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import compose_config
from physai.config import validate_config
from physai.config.compose import build_task
from physai.train.checkpoints import save_checkpoint
from physai.train.sb3 import build_model, build_vec_env, load_checkpoint

TINY_SAC = ["algo=sac", "env=pendulum", "algo.learning_starts=100", "algo.batch_size=32", "algo.buffer_size=1000",
            "algo.net_arch=[32,32]", "algo.gradient_steps=2", "algo.total_timesteps=300"]


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_stock_sac_keeps_sb3s_own_policy():
    from stable_baselines3.sac.policies import SACPolicy

    cfg = compose_config(TINY_SAC)
    model = build_model(cfg.algo, build_vec_env(build_task(cfg.env), cfg.algo, 0), 0)
    assert type(model.policy) is SACPolicy
    assert not _layers(model.policy, nn.Dropout) and not _layers(model.policy, nn.LayerNorm)


def test_regularized_critics_train_and_come_back_from_a_checkpoint(tmp_path, one_torch_thread):
    cfg = compose_config([*TINY_SAC, "algo.critic_dropout=0.01", "algo.critic_layer_norm=true"])
    validate_config(cfg)
    task = build_task(cfg.env)
    model = build_model(cfg.algo, build_vec_env(task, cfg.algo, 0), 0)
    for critic in (model.critic, model.critic_target):
        for q_net in critic.q_networks:  # linear -> dropout -> layer norm -> relu per hidden layer
            kinds = [type(layer) for layer in q_net]
            assert kinds == [nn.Linear, nn.Dropout, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
            assert all(d.p == 0.01 for d in _layers(q_net, nn.Dropout))
    assert not _layers(model.actor, nn.Dropout) and not _layers(model.actor, nn.LayerNorm)  # export unchanged
    assert not model.critic_target.training  # targets without dropout

    before = {k: v.clone() for k, v in model.critic.state_dict().items()}
    model.learn(300)
    assert model._n_updates == 2 * 200
    after = model.critic.state_dict()
    assert not torch.equal(after["qf0.2.weight"], before["qf0.2.weight"])  # the layer norms learn too

    run_dir = tmp_path / "run"
    path = save_checkpoint(model, run_dir / "checkpoints", "step_0000000300", task_id=task.id)
    loaded = load_checkpoint(cfg.algo, path, build_vec_env(task, cfg.algo, 0), run_dir=run_dir, task_id=task.id)
    assert type(loaded.policy) is type(model.policy)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(16, 3)), dtype=torch.float32)
    actions = torch.as_tensor(np.random.default_rng(1).uniform(-2, 2, size=(16, 1)), dtype=torch.float32)
    model.critic.eval(), loaded.critic.eval()
    with torch.no_grad():
        for q, q_loaded in zip(model.critic(obs, actions), loaded.critic(obs, actions)):
            assert torch.equal(q, q_loaded)


def test_a_dropout_probability_of_one_is_refused():
    from physai.train.critics import RegularizedCriticSACPolicy

    cfg = compose_config(TINY_SAC)
    venv = build_vec_env(build_task(cfg.env), cfg.algo, 0)
    with pytest.raises(ValueError, match="critic_dropout=1.0"):
        RegularizedCriticSACPolicy(venv.observation_space, venv.action_space, lambda _: 1e-3, critic_dropout=1.0)
