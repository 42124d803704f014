"""Matrix product with numpy's rules: 1-D, 2-D, and batched with broadcast batch axes."""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function


def _check(a: np.ndarray, b: np.ndarray) -> None:
    """Raise a ValueError naming both shapes when they cannot be multiplied."""
    kinds = a.dtype.kind + b.dtype.kind
    if kinds not in ("ff", "ii", "iu", "ui", "uu"):
        raise TypeError(
            f"matmul: expected two float tensors (or two integer tensors), got dtypes {a.dtype} and {b.dtype}"
        )
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: scalars are not allowed, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned ({k_a} != {k_b})")
    if a.ndim <= 2 or b.ndim <= 2 or a.shape[:-2] == b.shape[:-2]:  # np.broadcast_shapes costs ~20 us
        return
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} cannot be broadcast") from None


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = np.asarray(a), np.asarray(b)
        _check(a, b)
        ctx.save_for_backward(a, b)
        if a.ndim >= 2 and b.ndim >= 2:
            return _backend.K.matmul(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if a.ndim >= 2 and b.ndim >= 2:  # the engine sums broadcast batch axes away
            ga = _backend.K.matmul(g, b, trans_b=True) if need_a else None
            gb = _backend.K.matmul(a, g, trans_a=True) if need_b else None
            return ga, gb
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        ga = np.matmul(g2, np.swapaxes(b2, -1, -2)) if need_a else None
        gb = np.matmul(np.swapaxes(a2, -1, -2), g2) if need_b else None
        if ga is not None and a.ndim == 1:
            ga = ga.sum(axis=tuple(range(ga.ndim - 2))).reshape(a.shape) if ga.ndim > 2 else ga.reshape(a.shape)
        if gb is not None and b.ndim == 1:
            gb = gb.sum(axis=tuple(range(gb.ndim - 2))).reshape(b.shape) if gb.ndim > 2 else gb.reshape(b.shape)
        return ga, gb
