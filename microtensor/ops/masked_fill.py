"""masked_fill's one home, mirroring csrc/masked_fill.c: its Function (the only place its inputs are checked),
the numpy reference, and the kernel's entry point.

The kernel fills float32 x where a bool mask over x's trailing axes is set, the mask repeated over the
leading axes (a causal mask over every batch and head) and read from cache; any other case runs the
reference. The entry point is private: it trusts its caller's checks.
"""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import contiguous

# ---------------------------------------------------------------- the numpy reference


def reference_masked_fill(x: np.ndarray, mask: np.ndarray, value: float) -> np.ndarray:
    """x with `value` where the bool mask (which broadcasts to x's shape) is True."""
    return np.where(mask, np.asarray(value, dtype=x.dtype), x)


# ---------------------------------------------------------------- the kernel's entry point


def _masked_fill(x: np.ndarray, mask: np.ndarray, value: float, in_place: bool = False) -> np.ndarray:
    """x with `value` where the bool mask, which broadcasts to x without enlarging it, is True (in x itself
    when in_place and the kernel runs)."""
    lead = next((i for i, n in enumerate(mask.shape) if n != 1), mask.ndim)
    inner = mask.shape[lead:]
    if not _backend.native(x) or not inner or x.shape[x.ndim - len(inner) :] != inner or not x.size:
        return reference_masked_fill(x, mask, value)
    x, mask = contiguous(x), contiguous(mask)
    out = x if in_place else np.empty_like(x)
    _backend.K.call("masked_fill", x, mask, float(np.float32(value)), out, x.size // mask.size, mask.size)
    return out


# ---------------------------------------------------------------- the Function


def _check_broadcast(mask: np.ndarray, a: np.ndarray) -> None:
    """Raise a ValueError naming both shapes unless mask broadcasts to a's shape without enlarging it."""
    try:
        shape = np.broadcast_shapes(mask.shape, a.shape)
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {a.shape}") from None
    if shape != a.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} would enlarge input of shape {a.shape}")


class MaskedFill(Function):
    """Put `value` where mask is True; the gradient flows only where it is False."""

    @staticmethod
    def forward(ctx, a, mask, value=0.0):
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_fill: mask must be a bool array, got dtype {mask.dtype}")
        if mask.ndim > a.ndim or mask.shape != a.shape[a.ndim - mask.ndim :]:  # (np.broadcast_shapes costs ~5 us)
            _check_broadcast(mask, a)
        ctx.mask = mask
        return _masked_fill(a, mask, value)

    @staticmethod
    def backward(ctx, g):
        return _masked_fill(g, ctx.mask, 0.0, in_place=ctx.grad_owned), None
