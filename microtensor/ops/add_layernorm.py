"""layer_norm(x + residual) as one op: the residual add of a post-LN block fused into its LayerNorm.

The kernel (`add_layernorm_forward`, csrc/layernorm.c; numpy reference in
_backend/reference.py) adds and normalises each row in one pass and keeps the
sum for backward, which is LayerNorm's: both inputs get the same gradient.
"""

from __future__ import annotations

import math

from .. import _backend
from ..autograd import Function
from .nn import LayerNorm, _check_float


class AddLayerNorm(Function):
    """layer_norm(x + residual) over the trailing `normalized_shape` axes; x and residual have one shape."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, normalized_shape=(), eps=1e-5):
        _check_float("add_layer_norm", input=x, residual=residual, weight=weight, bias=bias)
        if x.shape != residual.shape:
            raise ValueError(
                f"add_layer_norm: input of shape {x.shape} and residual of shape {residual.shape} must match"
            )
        n = len(normalized_shape)
        if tuple(x.shape[x.ndim - n :]) != tuple(normalized_shape) or n == 0:
            raise ValueError(
                f"add_layer_norm: input of shape {x.shape} does not end in normalized_shape {normalized_shape}"
            )
        for label, p in (("weight", weight), ("bias", bias)):
            if p is not None and p.shape != tuple(normalized_shape):
                raise ValueError(f"add_layer_norm: {label} of shape {p.shape}, expected {tuple(normalized_shape)}")
        cols = math.prod(normalized_shape)
        rows = (math.prod(x.shape[: x.ndim - n]), cols)
        w = None if weight is None else weight.reshape(cols)
        b = None if bias is None else bias.reshape(cols)
        total, y, mean, rstd = _backend.K.add_layernorm_forward(x.reshape(rows), residual.reshape(rows), w, b, eps)
        ctx.save_for_backward(total, w, mean, rstd)
        ctx.shape, ctx.param_shape = x.shape, tuple(normalized_shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        dx, dw, db = LayerNorm.backward(ctx, g)
        return dx, dx, dw, db

