"""Elementwise ops; all broadcast like numpy (the engine sums gradients back to each input's shape).

Result dtypes follow PyTorch where numpy's differ: an integer or bool tensor with a Python float or a
float32 tensor gives float32 (numpy: float64), integer true division gives float32, numpy scalars and
0-d tensors do not widen a tensor with dimensions, and complex or object arrays are refused with a
TypeError naming the op.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _dtype_name(x: object) -> str:
    return str(x.dtype) if hasattr(x, "dtype") else type(x).__name__


def _binary(op: str, ufunc: np.ufunc, a: object, b: object) -> np.ndarray:
    """ufunc(a, b) with PyTorch's result dtype; bad shapes or dtypes raise naming the op."""
    try:
        out = ufunc(a, b)
    except ValueError as err:
        _check_broadcast(op, a, b)
        raise ValueError(f"{op}: {err} (dtypes {_dtype_name(a)} and {_dtype_name(b)})") from None
    except TypeError:
        raise TypeError(f"{op}: not supported for dtypes {_dtype_name(a)} and {_dtype_name(b)}") from None
    return out if out.dtype is _F32 else _promoted(op, out, a, b)  # float32: the hot path, nothing to do


def _promoted(op: str, out: np.ndarray, a: object, b: object) -> np.ndarray:
    """numpy's result cast to PyTorch's float dtype; complex and object results are refused."""
    kind = out.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{op}: not supported for dtypes {_dtype_name(a)} and {_dtype_name(b)}; "
            "microtensor takes float, integer and bool tensors"
        )
    if kind == "f":
        wanted = _float_result(a, b)
        return out if out.dtype == wanted else out.astype(wanted)
    return out


def _float_result(a: object, b: object) -> np.dtype:
    """PyTorch's float result: the widest float among tensors with dimensions, else among 0-d tensors, else
    float32 (Python and numpy scalars never widen a result)."""
    arrays = [x for x in (a, b) if isinstance(x, np.ndarray)]
    for group in ([x for x in arrays if x.ndim], [x for x in arrays if not x.ndim]):
        floats = [x.dtype for x in group if x.dtype.kind == "f"]
        if floats:
            return np.result_type(*floats)
    return _F32


def _floating(op: str, a: np.ndarray) -> np.ndarray:
    """The input of a float op: integers and bools become float32 as in PyTorch; other dtypes raise."""
    if a.dtype.kind in "biu":
        return a.astype(_F32)
    raise TypeError(f"{op}: expected a float32 or float64 tensor, got dtype {a.dtype}")


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
        return _binary("add", np.add, a, b)

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return _binary("sub", np.subtract, a, b)

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad or (False, False)
        ctx.save_for_backward(a if need_b else None, b if need_a else None)  # only what backward uses, as PyTorch
        return _binary("mul", np.multiply, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if ctx.grad_owned and not need_b and type(b) is float and g.dtype is _F32:  # x * scale: scale g in place
            return np.multiply(g, b, out=g), None
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    """a / b; backward keeps 1/b from the forward pass, so `d += 10.0 / d` works as in PyTorch (no b saved)."""

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad or (False, False)
        out = _binary("div", np.true_divide, a, b)
        ctx.save_for_backward(a if need_b else None, np.reciprocal(b, dtype=out.dtype) if need_a or need_b else None)
        return out

    @staticmethod
    def backward(ctx, g):
        a, inv_b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * inv_b if need_a else None), (-g * a * inv_b * inv_b if need_b else None)


def _is_scalar(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _scalar_pow(a: np.ndarray, e: float) -> np.ndarray | None:
    """a**e for an integer or half-integer |e| <= 16 by multiplications and at most one sqrt and one reciprocal
    (numpy's float pow costs ~30x more), with C's pow at -inf; None for any other exponent or a 0-d a."""
    if not a.ndim or not abs(e) <= 16 or 2 * e != int(2 * e):
        return None
    if e == -0.5:
        return np.reciprocal(np.sqrt(a))  # PyTorch's rsqrt (rsqrt(-0) = -inf)
    base = np.reciprocal(a) if e < 0 else a  # 1/a first: a**-n underflows to 0 only where it should
    n, half = divmod(int(abs(2 * e)), 2)
    out = _repeated_product(base, n, np.sqrt(base) if half else None)
    if out is a:
        return a.copy()
    if half and abs(e) > 1:  # C's pow(a, e) is |a|**e at -inf and -0, where the sqrt gives NaN or -0
        edge = (a == -np.inf) | (a == 0)
        out[edge] = np.abs(a[edge]) ** e
    return out


def _repeated_product(base: np.ndarray, n: int, out: np.ndarray | None) -> np.ndarray:
    """out * base**n by repeated squaring, multiplying in place into out once it is a fresh array."""
    square = base
    while n:
        if n & 1:
            if out is None:
                out = square
            elif out is base:
                out = out * square
            else:
                np.multiply(out, square, out=out)
        n >>= 1
        if n:
            square = square * square
    return np.ones_like(base) if out is None else out


class Pow(Function):
    """a**b; a float tensor to an integer or half-integer Python number takes the multiplication path."""

    @staticmethod
    def forward(ctx, a, b):
        out = None
        if _is_scalar(b) and getattr(a, "dtype", _F64).kind == "f":
            out = _scalar_pow(a, b)
        if out is None:
            out = _binary("pow", np.power, a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = gb = None
        if need_a and _is_scalar(b):
            ga = np.zeros_like(g) if b == 0 else g * (b * _power(a, b - 1))
        elif need_a:
            ga = g * b * a ** (b - 1)
        if need_b:
            gb = g * out * np.log(np.where(a > 0, a, 1))
        return ga, gb


def _power(a: np.ndarray, e: float) -> np.ndarray:
    fast = _scalar_pow(a, e)
    return a**e if fast is None else fast


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind not in "iuf":
            raise TypeError(f"neg: expected a float or integer tensor, got dtype {a.dtype}")
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("exp", a)
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("log", a)
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("sqrt", a)
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * 0.5 / ctx.saved_tensors[0]


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("tanh", a)
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_tensors[0]
        return g * (1 - out * out)


class Sin(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("sin", a)
        ctx.save_for_backward(a)
        return np.sin(a)

    @staticmethod
    def backward(ctx, g):
        return g * np.cos(ctx.saved_tensors[0])


class Cos(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("cos", a)
        ctx.save_for_backward(a)
        return np.cos(a)

    @staticmethod
    def backward(ctx, g):
        return -g * np.sin(ctx.saved_tensors[0])


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            a = _floating("sigmoid", a)
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
        if a.dtype.kind not in "iuf":
            raise TypeError(f"relu: expected a float or integer tensor, got dtype {a.dtype}")
        out = np.maximum(a, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.saved_tensors[0] > 0)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind not in "iuf":
            raise TypeError(f"abs: expected a float or integer tensor, got dtype {a.dtype}")
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.saved_tensors[0])


class Clamp(Function):
    """min(max(a, lo), hi) with numbers or tensors as bounds; gradients as PyTorch's clamp."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clamp: at least one of min and max must be given")
        if a.dtype.kind not in "iuf":
            raise TypeError(f"clamp: expected a float or integer tensor, got dtype {a.dtype}")
        out = a if lo is None else _binary("clamp", np.maximum, a, lo)
        out = out if hi is None else _binary("clamp", np.minimum, out, hi)
        ctx.save_for_backward(a, lo, hi)
        return out

    @staticmethod
    def backward(ctx, g):
        a, lo, hi = ctx.saved_tensors
        need_a, need_lo, need_hi = ctx.needs_input_grad
        zero = np.zeros((), dtype=g.dtype)
        inside = True if lo is None else a >= lo
        if hi is not None:
            inside = inside & (a <= hi)
        ga = np.where(inside, g, zero) if need_a else None
        glo = np.where((a < lo) & (True if hi is None else lo < hi), g, zero) if need_lo else None
        ghi = np.where((a > hi) | (False if lo is None else hi < lo), g, zero) if need_hi else None
        return ga, glo, ghi


class Maximum(Function):
    """Elementwise max of two tensors; tied elements share the gradient equally (as PyTorch)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("maximum", np.maximum, a, b)

    @staticmethod
    def backward(ctx, g):
        return _tie_split(ctx, g, np.less)


class Minimum(Function):
    """Elementwise min of two tensors; tied elements share the gradient equally (as PyTorch)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("minimum", np.minimum, a, b)

    @staticmethod
    def backward(ctx, g):
        return _tie_split(ctx, g, np.greater)


def _tie_split(ctx: Function, g: np.ndarray, loses: np.ufunc) -> tuple:
    """Gradients of maximum/minimum: g to the winner, g/2 to each of a tie, none to the loser."""
    a, b = ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad
    zero = np.zeros((), dtype=g.dtype)
    shared = np.where(a == b, g / 2, g)
    return (np.where(loses(a, b), zero, shared) if need_a else None), (
        np.where(loses(b, a), zero, shared) if need_b else None
    )


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


class Cast(Function):
    """Change dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype=None):
        ctx.in_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.in_dtype) if ctx.in_dtype.kind == "f" else None
