"""One term library for numpy arrays and torch tensors: the array namespace a term computes with.

A term reads the engine's batch arrays and computes with ``env.xp``: ``numpy`` itself for the CPU
engine (numpy 2 is an array-API namespace), :class:`TorchNamespace` for tensors on a torch device,
so a term is written once and runs where the state lives (a GPU backend's state never leaves the
device). Write terms with the functions both spell alike (``xp.cos``, ``xp.where``, ``xp.clip``,
``xp.stack``, ``xp.concatenate``, ``xp.linalg.norm``, ``x.sum(axis=1)``, ``x.any(axis=1)``...) and the
few this module evens out (``xp.astype``, ``xp.maximum`` with a number, ``xp.take_along_axis``,
``xp.asarray``, ``xp.full``/``zeros``/``ones`` on the state's device); ``tests/test_array_api.py`` runs every per-step term of
every task both ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TorchNamespace:
    """numpy's spelling of what the term library calls, on torch tensors of one device.

    Names not defined here are torch's own (``cos``, ``where``, ``stack``, ``concatenate``, ``float64``...),
    which take numpy's ``axis`` keyword where they reduce.
    """

    def __init__(self, device: Any = "cpu") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._torch, name)
        setattr(self, name, value)  # looked up once
        return value

    def asarray(self, value: Any, dtype: Any = None, device: Any = None) -> Any:
        dtype = _torch_dtype(self._torch, dtype)
        return self._torch.as_tensor(value, dtype=dtype, device=device or self.device)

    def astype(self, x: Any, dtype: Any) -> Any:
        return x.to(_torch_dtype(self._torch, dtype))

    def maximum(self, x: Any, y: Any, out: Any = None) -> Any:
        if isinstance(y, (int, float)):
            return self._torch.clamp(x, min=y, out=out)
        return self._torch.maximum(x, y, out=out)

    def minimum(self, x: Any, y: Any, out: Any = None) -> Any:
        if isinstance(y, (int, float)):
            return self._torch.clamp(x, max=y, out=out)
        return self._torch.minimum(x, y, out=out)

    def copyto(self, dst: Any, src: Any) -> None:
        dst.copy_(src)

    def concatenate(self, arrays: Any, axis: int = 0, dtype: Any = None) -> Any:
        joined = self._torch.cat(list(arrays), dim=axis)
        return joined if dtype is None else joined.to(_torch_dtype(self._torch, dtype))

    def nonzero(self, x: Any) -> tuple:
        return self._torch.nonzero(x, as_tuple=True)

    def take_along_axis(self, x: Any, indices: Any, axis: int) -> Any:
        return self._torch.take_along_dim(x, indices, dim=axis)

    def full(self, shape: Any, fill_value: Any, dtype: Any = None, device: Any = None) -> Any:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self._torch.full(shape, fill_value, dtype=_torch_dtype(self._torch, dtype) or self._torch.float64,
                                device=device or self.device)

    def zeros(self, shape: Any, dtype: Any = None, device: Any = None) -> Any:
        return self.full(shape, 0, dtype=dtype, device=device)

    def ones(self, shape: Any, dtype: Any = None, device: Any = None) -> Any:
        return self.full(shape, 1, dtype=dtype, device=device)


_NUMPY_TO_TORCH = {np.dtype(np.float64): "float64", np.dtype(np.float32): "float32", np.dtype(np.bool_): "bool",
                   np.dtype(np.int64): "int64", np.dtype(np.int32): "int32"}


def _torch_dtype(torch: Any, dtype: Any) -> Any:
    """A torch dtype from a torch or numpy one (``np.float64`` or ``torch.float64``); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, _NUMPY_TO_TORCH[np.dtype(dtype)])


def to_host(array: Any) -> np.ndarray:
    """A numpy array of ``array`` (a copy from a device; a numpy array as it is)."""
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()


def on_device(env: Any, columns: Any) -> Any:
    """Index columns for ``env``'s arrays: a slice as it is, index arrays moved to where the state lives
    (a numpy index on a GPU tensor would be copied to the device on every call)."""
    if isinstance(columns, slice):
        return columns
    return env.xp.asarray(np.asarray(columns))
