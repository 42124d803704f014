"""LayerNorm's one home, mirroring csrc/layernorm.c: the Functions of layer_norm and of layer_norm(x + residual)
(the only place their inputs are checked), the numpy reference of the kernels, and the kernels' entry points.

The kernels normalise the rows (R, C) of a C-contiguous array; the forward keeps each row's mean and
1/std for the backward. The fused form adds a post-LN block's residual in the same pass and keeps the
sum, whose backward is LayerNorm's: both inputs get the same gradient. The entry points (private: they
trust their caller's checks) run C for float32 on the C backend and the reference otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore"}  # np.errstate for inf - inf, ...
_F32 = np.dtype(np.float32)

# ---------------------------------------------------------------- the numpy reference


def reference_layernorm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise rows of x (R, C); returns (y, mean (R,), rstd (R,)) so backward need not recompute."""
    if x.shape[-1] == 0:  # nothing to normalise (PyTorch returns the empty input)
        return x.copy(), np.zeros(x.shape[:-1], x.dtype), np.zeros(x.shape[:-1], x.dtype)
    with np.errstate(**_QUIET):
        mean = x.mean(axis=-1)
        xc = x - mean[:, None]
        var = (xc * xc).mean(axis=-1)
        rstd = 1.0 / np.sqrt(var + eps)
        overflow = ~np.isfinite(var) & np.isfinite(mean)  # finite rows whose squares overflow: in float64
        if overflow.any():
            rstd[overflow] = 1.0 / np.sqrt(np.square(xc[overflow].astype(np.float64)).mean(axis=-1) + eps)
    y = xc * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd


def reference_add_layernorm_forward(
    x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """reference_layernorm_forward of x + residual (rows of one shape); returns (x + residual, y, mean, rstd)."""
    total = x + residual
    return (total, *reference_layernorm_forward(total, weight, bias, eps))


def reference_layernorm_backward(
    g: np.ndarray, x: np.ndarray, weight: np.ndarray | None, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dweight, dbias) of layernorm for rows of x (R, C)."""
    if x.shape[-1] == 0:
        return np.zeros_like(x), np.zeros(0, g.dtype), np.zeros(0, g.dtype)
    xhat = (x - mean[:, None]) * rstd[:, None]
    dweight = (g * xhat).sum(axis=0)
    dbias = g.sum(axis=0)
    gx = g * weight if weight is not None else g
    dx = rstd[:, None] * (
        gx - gx.mean(axis=-1, keepdims=True) - xhat * (gx * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, dweight, dbias


# ---------------------------------------------------------------- the kernels' entry points


def _layernorm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, rstd) of rows x (R, C > 0 for the kernel); weight and bias (C,) or None; all C-contiguous."""
    if not _backend.native(x, weight, bias) or x.shape[-1] == 0:
        return reference_layernorm_forward(x, weight, bias, eps)
    rows, cols = x.shape
    y, mean, rstd = np.empty_like(x), np.empty(rows, _F32), np.empty(rows, _F32)
    _backend.K.call("layernorm_forward", x, weight, bias, y, mean, rstd, rows, cols, eps)
    return y, mean, rstd


def _add_layernorm_forward(
    x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x + residual, y, mean, rstd) of rows x and residual (R, C) in one pass, as _layernorm_forward."""
    if not _backend.native(x, residual, weight, bias) or x.shape[-1] == 0:
        return reference_add_layernorm_forward(x, residual, weight, bias, eps)
    rows, cols = x.shape
    total, y, mean, rstd = np.empty_like(x), np.empty_like(x), np.empty(rows, _F32), np.empty(rows, _F32)
    _backend.K.call("add_layernorm_forward", x, residual, weight, bias, total, y, mean, rstd, rows, cols, eps)
    return total, y, mean, rstd


def _layernorm_backward(
    g: np.ndarray, x: np.ndarray, weight: np.ndarray | None, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) from g and x (R, C), weight (C,) or None, the forward's mean and rstd (R,)."""
    if not _backend.native(g, x, weight, mean, rstd) or x.shape[-1] == 0:
        return reference_layernorm_backward(g, x, weight, mean, rstd)
    rows, cols = x.shape
    dx, dweight, dbias = np.empty_like(x), np.empty(cols, _F32), np.empty(cols, _F32)
    _backend.K.call("layernorm_backward", g, x, weight, mean, rstd, dx, dweight, dbias, rows, cols)
    return dx, dweight, dbias


# ---------------------------------------------------------------- the Functions


def layer_norm_rows(op: str, x: np.ndarray, weight: Any, bias: Any, normalized_shape: tuple) -> tuple:
    """(rows, cols) of x and the flat, contiguous weight and bias (None stays None), checked against the shape."""
    n = len(normalized_shape)
    if tuple(x.shape[x.ndim - n :]) != tuple(normalized_shape) or n == 0:
        raise ValueError(f"{op}: input of shape {x.shape} does not end in normalized_shape {normalized_shape}")
    for label, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != tuple(normalized_shape):
            raise ValueError(f"{op}: {label} of shape {p.shape}, expected {tuple(normalized_shape)}")
    cols = math.prod(normalized_shape)
    flat = (None if p is None else np.ascontiguousarray(p.reshape(cols)) for p in (weight, bias))
    return (math.prod(x.shape[: x.ndim - n]), cols), *flat


class LayerNorm(Function):
    """Normalise over the trailing `normalized_shape` axes; mean and 1/std are kept for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape=(), eps=1e-5):
        check_float("layer_norm", input=x, weight=weight, bias=bias)
        shape, w, b = layer_norm_rows("layer_norm", x, weight, bias, normalized_shape)
        rows = np.ascontiguousarray(x.reshape(shape))
        y, mean, rstd = _layernorm_forward(rows, w, b, float(eps))
        ctx.save_for_backward(rows, w, mean, rstd)
        ctx.shape, ctx.param_shape = x.shape, tuple(normalized_shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        rows, w, mean, rstd = ctx.saved_tensors
        g = np.ascontiguousarray(g.reshape(rows.shape))
        dx, dw, db = _layernorm_backward(g, rows, w, mean, rstd)
        return dx.reshape(ctx.shape), dw.reshape(ctx.param_shape), db.reshape(ctx.param_shape)


class AddLayerNorm(Function):
    """layer_norm(x + residual) over the trailing `normalized_shape` axes; x and residual have one shape."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, normalized_shape=(), eps=1e-5):
        check_float("add_layer_norm", input=x, residual=residual, weight=weight, bias=bias)
        if x.shape != residual.shape:
            raise ValueError(
                f"add_layer_norm: input of shape {x.shape} and residual of shape {residual.shape} must match"
            )
        shape, w, b = layer_norm_rows("add_layer_norm", x, weight, bias, normalized_shape)
        rows, res = (np.ascontiguousarray(a.reshape(shape)) for a in (x, residual))
        total, y, mean, rstd = _add_layernorm_forward(rows, res, w, b, float(eps))
        ctx.save_for_backward(total, w, mean, rstd)
        ctx.shape, ctx.param_shape = x.shape, tuple(normalized_shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        dx, dw, db = LayerNorm.backward(ctx, g)
        return dx, dx, dw, db
