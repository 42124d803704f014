"""Ops that move data without arithmetic: reshape, permute, indexing, concatenation."""

from __future__ import annotations

import numpy as np

from ..autograd import Function


class Reshape(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, shape=()):
        ctx.in_shape = a.shape
        try:
            return a.reshape(shape)
        except (ValueError, TypeError):
            msg = f"reshape: cannot reshape shape {a.shape} ({a.size} elements) into {shape}"
            raise ValueError(msg) from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Permute(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, dims=()):
        axes = [d % max(a.ndim, 1) for d in dims]
        if sorted(axes) != list(range(a.ndim)):
            raise ValueError(f"permute: {tuple(dims)} is not a permutation of the axes of shape {a.shape}")
        inverse = axes[:]
        for i, d in enumerate(axes):
            inverse[d] = i
        ctx.inverse = inverse
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, ctx.inverse)


class BroadcastTo(Function):
    is_view = True

    @staticmethod
    def forward(ctx, a, shape=()):
        try:
            return np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {a.shape} to {shape}") from None

    @staticmethod
    def backward(ctx, g):
        return g  # the engine sums the broadcast axes back


def _is_basic(index) -> bool:
    """True for ints, slices, None and Ellipsis only (each element is picked at most once)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts)


def _check_index_dtypes(index) -> None:
    """Array indices must be integers or bools; anything else is a TypeError naming its dtype."""
    for part in index if isinstance(index, tuple) else (index,):
        if isinstance(part, (np.ndarray, list)):
            dtype = np.asarray(part).dtype
            if dtype.kind not in "iub":
                raise TypeError(f"getitem: index arrays must be integers or bools, got dtype {dtype}")


def _check_axis(op: str, axis: int, ndim: int, shapes: list) -> None:
    """Raise a ValueError naming the op when axis is not in [-ndim, ndim)."""
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for shapes {shapes}")


class GetItemIndexError(IndexError, ValueError):
    """An index out of range: an IndexError as in PyTorch (so `for row in t` stops), also a ValueError."""


class GetItem(Function):
    """Indexing with ints, slices, integer arrays and boolean masks; repeated indices add up."""

    is_view = True  # basic indexing returns a view; the engine checks the memory

    @staticmethod
    def forward(ctx, a, index=None):
        _check_index_dtypes(index)
        ctx.index, ctx.shape, ctx.dtype = index, a.shape, a.dtype
        try:
            return a[index]
        except IndexError as err:
            raise GetItemIndexError(f"getitem: index {index!r} is invalid for shape {a.shape} ({err})") from None

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic(ctx.index):
            grad[ctx.index] = g
        else:
            np.add.at(grad, ctx.index, g)
        return grad


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ValueError("cat: expected at least one tensor")
        _check_axis("cat", axis, arrays[0].ndim, [a.shape for a in arrays])
        ctx.axis = axis % arrays[0].ndim
        ctx.bounds = np.cumsum([0] + [a.shape[axis] for a in arrays]).tolist()
        try:
            return np.concatenate(arrays, axis=axis)
        except ValueError:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"cat: shapes {shapes} do not match outside axis {axis}") from None

    @staticmethod
    def backward(ctx, g):
        lead = (slice(None),) * ctx.axis  # basic slices (views), cheaper than np.split
        return tuple(g[(*lead, slice(a, b))] for a, b in zip(ctx.bounds, ctx.bounds[1:]))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ValueError("stack: expected at least one tensor")
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"stack: all shapes must be equal, got {[a.shape for a in arrays]}")
        _check_axis("stack", axis, arrays[0].ndim + 1, [a.shape for a in arrays])
        ctx.axis, ctx.count = axis, len(arrays)
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.take(g, i, axis=ctx.axis) for i in range(ctx.count))


class Gather(Function):
    """out[i][j] = a[index[i][j]][j] along `axis` (PyTorch's gather); repeated indices add up in backward."""

    @staticmethod
    def forward(ctx, a, index, axis=0):
        index = np.asarray(index)
        _check_axis("gather", axis, max(a.ndim, 1), [a.shape, index.shape])
        if index.dtype.kind not in "iu":
            raise TypeError(f"gather: index must be an integer tensor, got dtype {index.dtype}")
        axis %= max(a.ndim, 1)
        if index.ndim != a.ndim or any(i > n for d, (i, n) in enumerate(zip(index.shape, a.shape)) if d != axis):
            raise ValueError(
                f"gather: index of shape {index.shape} must have the input's {a.ndim} dimensions and be no "
                f"larger than its shape {a.shape} outside axis {axis}"
            )
        size = a.shape[axis] if a.ndim else 1
        if index.size and (index.min() < 0 or index.max() >= size):
            raise ValueError(f"gather: index values must be in [0, {size}) along axis {axis}, got "
                             f"[{index.min()}, {index.max()}]")
        ctx.index, ctx.axis, ctx.shape = index, axis, a.shape
        if not a.ndim:
            return a.copy()
        part = a[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))]
        return np.take_along_axis(part, index, axis)

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        if not grad.ndim:
            return grad + g.sum(), None
        where = list(np.ix_(*[np.arange(n) for n in ctx.index.shape]))
        where[ctx.axis] = ctx.index
        np.add.at(grad, tuple(where), g)
        return grad, None
