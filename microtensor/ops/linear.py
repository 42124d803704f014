"""linear: y = x @ weight.T + bias as one matrix product (the backend's linear kernels, GEMM's in csrc/sgemm.c)."""

from __future__ import annotations

import math

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float


class Linear(Function):
    """y = x @ weight.T + bias over the last axis of x, as one matrix product on (N, in) rows.

    Backward adds dx into the engine's running sum of x's gradient when offered
    one (a per-head model feeds one x to many linears).
    """

    sums_into = True

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        check_float("linear", input=x, weight=weight, bias=bias)
        if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                f"(expected last axis {weight.shape[-1]})"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias of shape {bias.shape}, expected ({weight.shape[0]},)")
        rows = np.ascontiguousarray(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]))
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        return _backend.K.linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g = np.ascontiguousarray(g.reshape(len(rows), weight.shape[0]))
        into = ctx.grad_into[0] if ctx.grad_into and need_x else None
        if into is not None and (into.dtype != g.dtype or not into.flags.c_contiguous):
            into = None
        dx, dw, db = _backend.K.linear_backward(
            g, rows, weight, need_x, need_w, need_b, None if into is None else into.reshape(rows.shape)
        )
        return (into if into is not None else None if dx is None else dx.reshape(ctx.shape)), dw, db
