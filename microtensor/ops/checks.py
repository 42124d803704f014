"""What the ops share to check and prepare their arrays: the float dtype check (a TypeError naming the op)
and C-contiguity before a kernel reads them."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(op: str, **arrays: Any) -> None:
    """TypeError naming the op unless the given arrays (None skipped) are float32 or float64, all of one dtype."""
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        dtype = a.dtype if type(a) is np.ndarray else np.asarray(a).dtype
        if dtype not in FLOATS:
            raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {dtype}")
        if first is None:
            first = dtype
        elif dtype != first:
            given = {k: np.asarray(v).dtype for k, v in arrays.items() if v is not None}
            raise TypeError(f"{op}: {', '.join(given)} must have one dtype, got {', '.join(map(str, given.values()))}")


def contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous, else a contiguous copy (np.ascontiguousarray would make a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)
