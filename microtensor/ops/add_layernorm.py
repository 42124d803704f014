"""layer_norm(x + residual) as one op: the residual add of a post-LN block fused into its LayerNorm.

The kernel (`add_layernorm_forward`, csrc/layernorm.c; numpy reference in
_backend/reference.py) adds and normalises each row in one pass and keeps the
sum for backward, which is LayerNorm's: both inputs get the same gradient.
"""

from __future__ import annotations

from .. import _backend
from ..autograd import Function
from .nn import LayerNorm, _check_float, layer_norm_rows


class AddLayerNorm(Function):
    """layer_norm(x + residual) over the trailing `normalized_shape` axes; x and residual have one shape."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, normalized_shape=(), eps=1e-5):
        _check_float("add_layer_norm", input=x, residual=residual, weight=weight, bias=bias)
        if x.shape != residual.shape:
            raise ValueError(
                f"add_layer_norm: input of shape {x.shape} and residual of shape {residual.shape} must match"
            )
        rows, w, b = layer_norm_rows("add_layer_norm", x, weight, bias, normalized_shape)
        total, y, mean, rstd = _backend.K.add_layernorm_forward(x.reshape(rows), residual.reshape(rows), w, b, eps)
        ctx.save_for_backward(total, w, mean, rstd)
        ctx.shape, ctx.param_shape = x.shape, tuple(normalized_shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        dx, dw, db = LayerNorm.backward(ctx, g)
        return dx, dx, dw, db

