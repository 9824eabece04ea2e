"""Every per-step term is written once: on torch tensors it computes what it computes on numpy arrays.

A GPU backend keeps the batch's state on its device; its terms must then compute there, with torch,
and not fall back to numpy (numpy would silently copy a CPU tensor to the host, and fail on a GPU one).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from physai.envs.array_api import TorchNamespace, on_device
from physai.envs.engine import BatchedEngine
from physai.envs.registry import packaged_tasks
from physai.envs.spec import build_spec

TASK_IDS = sorted(packaged_tasks())
STATE_FIELDS = ("qpos", "qvel", "sensordata", "action", "last_action", "qpos_before_step")


class DeviceTensor(torch.Tensor):
    """A CPU tensor that refuses numpy, as a GPU tensor does: on a CPU tensor a numpy function would
    quietly compute on the host and hand a tensor back, hiding a term that leaves torch."""

    def __array__(self, *args, **kwargs):
        raise TypeError("a term handed device state to numpy")


def _on_device(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.array(array)).as_subclass(DeviceTensor)


class TorchState:
    """The engine's per-step state as float64 torch tensors: what a term reads where the state lives on a
    torch device. Name lookups (``sensor``, ``joint_qpos``...) are the engine's own."""

    def __init__(self, engine: BatchedEngine) -> None:
        self._engine = engine
        self.xp = TorchNamespace("cpu")
        for name in STATE_FIELDS:
            setattr(self, name, _on_device(getattr(engine, name)))
        self.commands = {k: _on_device(v) for k, v in engine.commands.items()}
        self.extras = {k: _on_device(v) if isinstance(v, np.ndarray) else v for k, v in engine.extras.items()}

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


def _stepped_engine(env_id: str) -> BatchedEngine:
    engine = BatchedEngine(build_spec(**copy.deepcopy(packaged_tasks()[env_id])), num_envs=6, seed=3, nthread=1)
    actions = np.random.default_rng(3).uniform(-1, 1, size=(5, engine.num_envs, engine.num_actions))
    for action in actions:
        engine.step(action)
    return engine


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_every_per_step_term_computes_the_same_on_torch_tensors_as_on_numpy(env_id):
    """Plain and bound forms, after a few random steps (so actions, commands and layouts are not zero)."""
    engine = _stepped_engine(env_id)
    state = TorchState(engine)
    spec = engine.spec
    terms = [*spec.observations, *spec.rewards, *spec.terminations]
    assert terms
    for term in terms:
        forms = [("plain", lambda on, term=term: term.fn(on, **term.params))]
        if hasattr(term.fn, "bind"):
            forms.append(("bound", lambda on, term=term: term.fn.bind(on, **term.params)()))
        for form, call in forms:
            expected = np.asarray(call(engine))
            got = call(state)
            where = f"{env_id}: {term.name} ({term.fn.__name__}, {form})"
            assert isinstance(got, torch.Tensor), f"{where} left torch and returned {type(got).__name__}"
            assert got.shape == expected.shape, where
            assert (got.dtype == torch.bool) == (expected.dtype == bool), where
            got = got.as_subclass(torch.Tensor).numpy()
            np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64),
                                       rtol=1e-12, atol=1e-12, err_msg=where)
    engine.close()


def test_the_torch_namespace_spells_numpys_differing_calls():
    xp = TorchNamespace("cpu")
    x = torch.tensor([[-2.0, 0.5], [3.0, -1.0]], dtype=torch.float64)
    assert xp.astype(x > 0, np.float64).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert xp.maximum(x, 0.0).tolist() == [[0.0, 0.5], [3.0, 0.0]]
    order = xp.argsort(x, axis=1)
    assert xp.take_along_axis(x, order, axis=1).tolist() == [[-2.0, 0.5], [-1.0, 3.0]]
    assert xp.ones(3).dtype == torch.float64 and xp.zeros((2, 1), dtype=xp.bool).dtype == torch.bool
    assert xp.asarray(np.array([1, 2]), dtype=np.float32).dtype == torch.float32


def test_index_columns_go_where_the_state_lives():
    state = TorchState(_stepped_engine("physai/CartpoleBalance-v0"))
    assert on_device(state, slice(0, 2)) == slice(0, 2)
    columns = on_device(state, np.array([1, 0]))
    assert isinstance(columns, torch.Tensor) and columns.tolist() == [1, 0]
