"""Dropout's one home, mirroring csrc/dropout.c: its Function (the only place its inputs are checked), the
numpy reference of the kernel, and the kernel's entry point.

The mask is a pure function of (seed, position) through a counter-based generator, so the C kernel,
the reference and the attention kernels' dropout draw the same mask. The entry point (private: it
trusts its caller's checks) runs C for float32 on the C backend and the reference otherwise.
"""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function
from ..random import resolve
from .checks import check_float, contiguous

# ---------------------------------------------------------------- the numpy reference

DROPOUT_BITS = 24  # the mask compares 24 random bits per element with p * 2**24
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def dropout_threshold(p: float) -> int:
    """The integer the 24 random bits of an element must reach for it to be kept."""
    return int(p * (1 << DROPOUT_BITS))


def reference_dropout_forward(x: np.ndarray, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout; returns (x * mask, mask) with mask 1/(1-p) where kept, 0 elsewhere.

    The random bits are splitmix64(seed + (i + 1) * golden) for element i: a
    counter-based generator, so the C kernel draws exactly the same mask.
    """
    z = np.uint64(seed) + np.arange(1, x.size + 1, dtype=np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    keep = (z >> np.uint64(64 - DROPOUT_BITS)) >= np.uint64(dropout_threshold(p))
    mask = keep.reshape(x.shape) * np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    return x * mask, mask


# ---------------------------------------------------------------- the kernel's entry point


def _dropout_forward(
    x: np.ndarray, p: float, seed: int, keep_mask: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, mask) of a C-contiguous x for p in [0, 1) and a seed below 2**64, as reference_dropout_forward; without
    keep_mask the mask is drawn and applied but not kept (None)."""
    if not _backend.native(x):
        y, mask = reference_dropout_forward(x, p, seed)
        return y, mask if keep_mask else None
    y, mask = np.empty_like(x), np.empty_like(x) if keep_mask else None
    _backend.K.call("dropout_forward", x, y, mask, x.size, dropout_threshold(p), 1.0 / (1.0 - p), seed)
    return y, mask


# ---------------------------------------------------------------- the Function


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    One 63-bit seed is drawn from the generator per call; the mask is a
    function of that seed alone, so both backends draw the same mask.
    """

    @staticmethod
    def forward(ctx, x, p=0.5, generator=None):
        check_float("dropout", input=x)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        ctx.p, ctx.seed = p, int(resolve(generator).integers(1 << 63))
        return _dropout_forward(contiguous(x), p, ctx.seed, keep_mask=False)[0]

    @staticmethod
    def backward(ctx, g):
        return _dropout_forward(contiguous(g), ctx.p, ctx.seed, keep_mask=False)[0]
