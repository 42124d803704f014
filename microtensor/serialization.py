"""save/load of name -> array mappings as .npz (no pickled code), written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .tensor import Tensor


def save(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a flat mapping of names to arrays/tensors/numbers to `path` (.npz), atomically."""
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be strings, got {key!r}")
        data = value.data if isinstance(value, Tensor) else np.asarray(value)
        if data.dtype == object:
            raise TypeError(f"save: value for {key!r} is not numeric (dtype object); only arrays are stored")
        arrays[key] = data
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a mapping written by `save` (arrays only; pickles are refused)."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
