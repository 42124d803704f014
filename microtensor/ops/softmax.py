"""Softmax and log-softmax's one home, mirroring csrc/softmax.c: their Functions (the only place their
inputs are checked), the numpy reference of the kernels, and the kernels' entry points.

The kernels work on the last axis of a C-contiguous array; the Functions move another axis last
first. The entry points (private: they trust their caller's checks) run the C kernel for float32 on
the C backend and the reference otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore"}  # np.errstate for inf - inf, log(0), ...

# ---------------------------------------------------------------- the numpy reference


def reference_softmax_forward(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a NaN or +inf in a row makes the row NaN, silently, as PyTorch."""
    with np.errstate(**_QUIET):
        m = x.max(axis=-1, keepdims=True, initial=-np.inf)
        e = np.exp(x - m)
        return e / e.sum(axis=-1, keepdims=True)


def reference_softmax_backward(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of softmax given its output y and the upstream gradient g."""
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


def reference_log_softmax_forward(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (log-sum-exp stable)."""
    with np.errstate(**_QUIET):
        m = x.max(axis=-1, keepdims=True, initial=-np.inf)
        shifted = x - m
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_log_softmax_backward(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of log-softmax given its output y and the upstream gradient g."""
    return g - np.exp(y) * g.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- the kernels' entry points


def _rows(kernel: str, reference: Callable, *arrays: np.ndarray) -> np.ndarray:
    """reference(*arrays), or the kernel over the rows of C-contiguous arrays of one shape into a new one."""
    if not _backend.native(*arrays):
        return reference(*arrays)
    a = arrays[0]
    out = np.empty_like(a)
    cols = a.shape[-1]
    _backend.K.call(kernel, *arrays, out, a.size // max(cols, 1), cols)
    return out


def _softmax_forward(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a C-contiguous array."""
    return _rows("softmax_forward", reference_softmax_forward, x)


def _softmax_backward(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """dx of softmax from its output y and the output's gradient g (C-contiguous, one shape)."""
    return _rows("softmax_backward", reference_softmax_backward, y, g)


def _log_softmax_forward(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis of a C-contiguous array."""
    return _rows("log_softmax_forward", reference_log_softmax_forward, x)


def _log_softmax_backward(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """dx of log-softmax from its output y and the output's gradient g (C-contiguous, one shape)."""
    return _rows("log_softmax_backward", reference_log_softmax_backward, y, g)


# ---------------------------------------------------------------- the Functions


def _last_axis_view(a: np.ndarray, axis: int, op: str) -> np.ndarray:
    """a with `axis` moved last, contiguous, for kernels that work on rows."""
    check_float(op, input=a)
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for shape {a.shape}")
    return np.ascontiguousarray(_move_last(a, axis))


def _move_last(a: np.ndarray, axis: int) -> np.ndarray:
    """a with `axis` moved last; a itself when it is last already (np.moveaxis costs ~4 us of Python)."""
    return a if axis == -1 or axis == a.ndim - 1 else np.moveaxis(a, axis, -1)


def _move_back(a: np.ndarray, axis: int) -> np.ndarray:
    """The inverse of _move_last: the last axis of a back to position `axis`."""
    return a if axis == -1 or axis == a.ndim - 1 else np.moveaxis(a, -1, axis)


class Softmax(Function):
    """Softmax over `axis`; the output is kept for backward."""

    name, kernels = "softmax", (_softmax_forward, _softmax_backward)

    @staticmethod
    def forward(ctx, a, axis=-1):
        ctx.axis = axis
        y = type(ctx).kernels[0](_last_axis_view(a, axis, type(ctx).name))
        ctx.save_for_backward(y)
        return _move_back(y, axis)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        g = np.ascontiguousarray(_move_last(g, ctx.axis))
        return _move_back(type(ctx).kernels[1](y, g), ctx.axis)


class LogSoftmax(Softmax):
    """Log-softmax over `axis`, as Softmax with the log kernels."""

    name, kernels = "log_softmax", (_log_softmax_forward, _log_softmax_backward)
