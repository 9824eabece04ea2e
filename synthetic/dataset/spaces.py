"""Gymnasium spaces in the JSON form Minari uses for its metadata."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from physai.synthetic.dataset.records import DatasetError


def space_to_dict(space: spaces.Space, field_name: str = "space") -> dict[str, Any]:
    """Minari's JSON form of a gymnasium space; only the flat-array spaces physai stores are supported."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                "low": space.low.tolist(), "high": space.high.tolist()}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "dtype": str(space.dtype), "nvec": space.nvec.tolist(),
                "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.ndim(n) == 0 else [int(v) for v in np.ravel(n)]}
    raise DatasetError(f"{field_name} is a {type(space).__name__}; datasets store flat arrays, so it must be a "
                       f"gymnasium Box, Discrete, MultiDiscrete or MultiBinary (flatten Dict/Tuple spaces first)")


def space_from_dict(record: Mapping[str, Any]) -> spaces.Space:
    kind = record.get("type")
    if kind == "Box":
        dtype = np.dtype(record["dtype"])
        return spaces.Box(low=np.array(record["low"], dtype=dtype), high=np.array(record["high"], dtype=dtype),
                          shape=tuple(record["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(n=int(record["n"]), start=int(record["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(nvec=record["nvec"], dtype=record["dtype"], start=record["start"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(n=record["n"])
    raise DatasetError(f"space type {kind!r} is not one physai datasets store (Box, Discrete, MultiDiscrete, "
                       f"MultiBinary)")
