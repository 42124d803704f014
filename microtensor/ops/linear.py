"""linear: y = x @ weight.T + bias as one matrix product (the backend's linear kernels, GEMM's in csrc/sgemm.c)."""

from __future__ import annotations

import math

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float


class Linear(Function):
    """y = x @ weight.T + bias over the last axis of x, as one matrix product on (N, in) rows.

    Backward adds each gradient into the engine's running sum of it when offered one: x's (a per-head model
    feeds one x to many linears), the weight's and bias's .grad (zeroed in place between steps).
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
        intos = [into if need and _can_add_into(into, g) else None
                 for into, need in zip(ctx.grad_into or (None,) * 3, ctx.needs_input_grad)]
        x_into = intos[0]
        if x_into is not None:
            intos[0] = x_into.reshape(rows.shape)
        dx, dw, db = _backend.K.linear_backward(g, rows, weight, need_x, need_w, need_b, *intos)
        dx = x_into if x_into is not None else None if dx is None else dx.reshape(ctx.shape)
        return dx, dw, db  # a sum added into goes back as that very array


def _can_add_into(into: np.ndarray | None, g: np.ndarray) -> bool:
    """Whether a running sum the engine offers can take a gradient computed from g: the same dtype, C-contiguous."""
    return into is not None and into.dtype == g.dtype and into.flags.c_contiguous
