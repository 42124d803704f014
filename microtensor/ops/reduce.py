"""Reductions over an axis (int, tuple or None for all), keeping the axes on request."""

from __future__ import annotations

import numpy as np

from ..autograd import Function


def _normalise_axes(op: str, axis, ndim: int) -> tuple:
    """The reduced axes as non-negative ints; a ValueError names the op and the bad axis."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    for ax in axes:
        if not isinstance(ax, (int, np.integer)) or not -max(ndim, 1) <= ax < max(ndim, 1):
            raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(int(ax) % max(ndim, 1) for ax in axes))


def _expand(g: np.ndarray, axes: tuple, keepdims: bool, shape: tuple) -> np.ndarray:
    """Broadcast a reduced gradient back over the input shape."""
    if not keepdims and shape:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes("sum", axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        return np.sum(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.axes, ctx.keepdims, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes("mean", axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes])) if a.ndim else 1
        if ctx.count == 0:
            raise ValueError(f"mean: reducing axis {axis} of shape {a.shape} has no elements")
        return np.mean(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand(g / ctx.count, ctx.axes, ctx.keepdims, ctx.shape)


class _Extreme(Function):
    """max/min: the gradient is shared equally among tied extreme elements."""

    reduce = staticmethod(np.max)
    name = "max"

    @classmethod
    def forward(cls, ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(cls.name, axis, a.ndim)
        if a.size == 0:
            raise ValueError(f"{cls.name}: cannot reduce an empty tensor of shape {a.shape}")
        ctx.keepdims, ctx.shape = keepdims, a.shape
        kept = cls.reduce(a, axis=ctx.axes, keepdims=True)
        hits = a == kept
        ctx.share = hits / hits.sum(axis=ctx.axes, keepdims=True)
        return kept if keepdims or not a.ndim else np.squeeze(kept, axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.axes, ctx.keepdims, ctx.shape) * ctx.share


class Max(_Extreme):
    reduce = staticmethod(np.max)
    name = "max"


class Min(_Extreme):
    reduce = staticmethod(np.min)
    name = "min"


class Var(Function):
    """Variance with `correction` subtracted from the count (1 = unbiased, PyTorch's default)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, correction=1):
        ctx.axes = _normalise_axes("var", axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        count = int(np.prod([a.shape[i] for i in ctx.axes])) if a.ndim else 1
        ctx.denom = count - correction
        if ctx.denom <= 0:
            raise ValueError(f"var: {count} elements with correction={correction} leave no degrees of freedom")
        ctx.centered = a - a.mean(axis=ctx.axes, keepdims=True)
        return np.sum(ctx.centered**2, axis=ctx.axes, keepdims=keepdims) / ctx.denom

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.axes, ctx.keepdims, ctx.shape) * (2.0 / ctx.denom) * ctx.centered
