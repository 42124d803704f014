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
    return tuple(sorted(int(ax) % ndim for ax in axes)) if ndim else ()


def _check_dtype(op: str, a: np.ndarray, kinds: str) -> None:
    """A TypeError naming the op when a's dtype is not of the given kinds ("f": float, "biuf": numeric)."""
    if a.dtype.kind not in kinds:
        wanted = "a float32 or float64" if kinds == "f" else "a float, integer or bool"
        raise TypeError(f"{op}: expected {wanted} tensor, got dtype {a.dtype}")


def _expand(g: np.ndarray, axes: tuple, keepdims: bool, shape: tuple) -> np.ndarray:
    """Broadcast a reduced gradient back over the input shape."""
    if not keepdims and shape:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes("sum", axis, a.ndim)
        if a.dtype.kind not in "biuf":
            _check_dtype("sum", a, "biuf")
        ctx.keepdims, ctx.shape = keepdims, a.shape
        return np.sum(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.axes, ctx.keepdims, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes("mean", axis, a.ndim)
        if a.dtype.kind != "f":
            _check_dtype("mean", a, "f")
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
        if a.dtype.kind not in "biuf":
            _check_dtype(cls.name, a, "biuf")
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
    """Variance (the standard deviation with sqrt=True) with `correction` subtracted from the count
    (1 = unbiased, PyTorch's default), accumulated in float64 as PyTorch does."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, correction=1, sqrt=False):
        op = "std" if sqrt else "var"
        ctx.axes = _normalise_axes(op, axis, a.ndim)
        _check_dtype(op, a, "f")
        ctx.keepdims, ctx.shape = keepdims, a.shape
        count = int(np.prod([a.shape[i] for i in ctx.axes])) if a.ndim else 1
        ctx.denom = count - correction
        if ctx.denom <= 0:
            raise ValueError(f"{op}: {count} elements with correction={correction} leave no degrees of freedom")
        wide = a.astype(np.float64)  # float32 squares of large values would overflow
        centered = wide - wide.mean(axis=ctx.axes, keepdims=True)
        var = np.sum(centered * centered, axis=ctx.axes, keepdims=True) / ctx.denom
        ctx.centered = centered.astype(a.dtype, copy=False)
        ctx.std = np.sqrt(var).astype(a.dtype) if sqrt else None
        out = ctx.std if sqrt else var.astype(a.dtype)
        return out if keepdims or not a.ndim else np.squeeze(out, axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):
        g = _expand(g, ctx.axes, ctx.keepdims, ctx.shape)
        if ctx.std is None:
            return g * (2.0 / ctx.denom) * ctx.centered
        return g * ctx.centered / (ctx.denom * ctx.std)


class Norm(Function):
    """The 2-norm (Frobenius) over axes; its gradient at a zero vector is 0, as in PyTorch."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes("norm", axis, a.ndim)
        _check_dtype("norm", a, "f")
        ctx.keepdims, ctx.shape = keepdims, a.shape
        out = np.sqrt(np.sum(a * a, axis=ctx.axes, keepdims=keepdims))
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_tensors
        scale = np.divide(g, out, out=np.zeros_like(g * out), where=out != 0)
        return _expand(scale, ctx.axes, ctx.keepdims, ctx.shape) * a


class CumSum(Function):
    """Running sum along one axis (integers and bools sum as int64, as in PyTorch)."""

    @staticmethod
    def forward(ctx, a, axis=0):
        _normalise_axes("cumsum", axis, a.ndim)
        ctx.axis = axis % a.ndim if a.ndim else 0
        if a.dtype.kind not in "biuf":
            _check_dtype("cumsum", a, "biuf")
        out = np.cumsum(a, axis=ctx.axis) if a.ndim else a.copy()
        return out if a.dtype.kind == "f" else out.astype(np.int64)

    @staticmethod
    def backward(ctx, g):
        if not g.ndim:
            return g
        return np.flip(np.cumsum(np.flip(g, ctx.axis), axis=ctx.axis), ctx.axis)
