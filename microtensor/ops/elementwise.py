"""Elementwise ops; all broadcast like numpy (the engine sums gradients back to each input's shape)."""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function


def _check_broadcast(op: str, a: object, b: object) -> None:
    """Raise a ValueError naming the op and both shapes when they cannot broadcast."""
    sa, sb = np.shape(a), np.shape(b)
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        raise ValueError(f"{op}: shapes {sa} and {sb} cannot be broadcast together") from None


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        try:
            return a + b
        except ValueError:
            _check_broadcast("add", a, b)
            raise

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        try:
            return a - b
        except ValueError:
            _check_broadcast("sub", a, b)
            raise

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        try:
            return a * b
        except ValueError:
            _check_broadcast("mul", a, b)
            raise

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        try:
            return a / b
        except ValueError:
            _check_broadcast("div", a, b)
            raise

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g / b if need_a else None), (-g * a / (b * b) if need_b else None)


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        try:
            out = a**b
        except ValueError:
            _check_broadcast("pow", a, b)
            raise
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g * b * a ** (b - 1) if need_a else None
        gb = g * out * np.log(np.where(a > 0, a, 1)) if need_b else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * 0.5 / ctx.saved_tensors[0]


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_tensors[0]
        return g * (1 - out * out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        out = 0.5 * (np.tanh(0.5 * a) + 1)  # overflow-free form of 1 / (1 + exp(-a))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_tensors[0]
        return g * out * (1 - out)


class Relu(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.maximum(a, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.saved_tensors[0] > 0)


class Gelu(Function):
    """GELU with the tanh approximation (PyTorch's approximate='tanh'), through the kernel backend."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return _backend.K.gelu_forward(a)

    @staticmethod
    def backward(ctx, g):
        return _backend.K.gelu_backward(ctx.saved_tensors[0], g)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.saved_tensors[0])


class Clip(Function):
    """Clamp to [lo, hi]; the gradient passes only where the input was inside the range."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clip: at least one of min and max must be given")
        ctx.inside = (a >= (-np.inf if lo is None else lo)) & (a <= (np.inf if hi is None else hi))
        return np.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.inside


class Where(Function):
    """cond ? a : b, with cond a bool array (no gradient)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        cond = np.asarray(cond)
        if cond.dtype != np.bool_:
            raise TypeError(f"where: condition must be a bool array, got dtype {cond.dtype}")
        ctx.cond = cond
        try:
            return np.where(cond, a, b)
        except ValueError:
            raise ValueError(
                f"where: shapes {cond.shape}, {np.shape(a)} and {np.shape(b)} cannot be broadcast together"
            ) from None

    @staticmethod
    def backward(ctx, g):
        _, need_a, need_b = ctx.needs_input_grad
        zero = np.zeros((), dtype=g.dtype)
        ga = np.where(ctx.cond, g, zero) if need_a else None
        gb = np.where(ctx.cond, zero, g) if need_b else None
        return None, ga, gb


class MaskedFill(Function):
    """Put `value` where mask is True; the gradient flows only where it is False."""

    @staticmethod
    def forward(ctx, a, mask, value=0.0):
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_fill: mask must be a bool array, got dtype {mask.dtype}")
        try:
            out = np.where(mask, np.asarray(value, dtype=a.dtype), a)
        except ValueError:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {a.shape}") from None
        if out.shape != a.shape:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} would enlarge input of shape {a.shape}")
        ctx.mask = mask
        return out

    @staticmethod
    def backward(ctx, g):
        return np.where(ctx.mask, np.zeros((), dtype=g.dtype), g), None


class Cast(Function):
    """Change dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype=None):
        ctx.in_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.in_dtype) if ctx.in_dtype.kind == "f" else None
