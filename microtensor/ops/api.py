"""PyTorch's functional API (torch.max, torch.topk, torch.exp, ...) as thin layers over the Functions.

Tensor methods of the same names call these; `microtensor` exports them at top level.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from ..random import resolve
from ..tensor import Tensor, _axis, _keep
from . import elementwise, reduce, shape

__all__ = [  # exported by microtensor as torch.* names
    "abs", "add", "all", "allclose", "amax", "amin", "any", "argmax", "argmin", "argsort", "bmm", "broadcast_to",
    "clamp", "clip", "clone", "cos", "cumsum", "div", "divide", "exp", "flatten", "gather", "isfinite", "isinf",
    "isnan", "log", "log_softmax", "logsumexp", "masked_fill", "matmul", "max", "maximum", "mean", "min", "minimum",
    "mm", "mul", "multinomial", "multiply", "neg", "negative", "norm", "numel", "permute", "pow", "relu", "reshape",
    "rsqrt", "sigmoid", "sin", "softmax", "sort", "sqrt", "square", "squeeze", "std", "sub", "subtract", "sum", "t",
    "tanh", "topk", "transpose", "tril", "triu", "true_divide", "unsqueeze", "var",
]

# torch.return_types: named (values, indices) pairs that also unpack and index like tuples.
max_result = namedtuple("max", ["values", "indices"])
min_result = namedtuple("min", ["values", "indices"])
sort_result = namedtuple("sort", ["values", "indices"])
topk_result = namedtuple("topk", ["values", "indices"])


def _dim(op: str, dim: Any, ndim: int) -> int:
    """One axis as a non-negative int (0 for a 0-d tensor); a ValueError names the op otherwise."""
    if isinstance(dim, tuple):
        raise TypeError(f"{op}: dim must be one int, got {dim}; use amax/amin/sum to reduce several dims")
    axes = reduce._normalise_axes(op, dim, ndim)
    return axes[0] if axes else 0


def _take(x: Tensor, index: np.ndarray, dim: int, keepdim: bool = True) -> Tensor:
    """x's values at `index` along dim (differentiable: the gradient goes to the picked elements)."""
    values = shape.Gather.apply(x, index, axis=dim)
    return values if keepdim or not x.ndim else values.squeeze(dim)


def _extreme(op: str, result: type, arg: Any, x: Tensor, dim: Any, keepdim: bool) -> Any:
    """max/min along one dim: (values, indices), the first extreme element on ties (as PyTorch on CPU)."""
    _numeric(op, x, "biuf")
    d = _dim(op, dim, x.ndim)
    if x.ndim and x.shape[d] == 0:
        raise ValueError(f"{op}: cannot reduce dim {dim} of size 0 (shape {x.shape})")
    index = arg(x.data, axis=d, keepdims=True) if x.ndim else np.zeros((), np.int64)
    values = _take(x, index, d, keepdim)
    return result(values, Tensor._wrap(index if keepdim or not x.ndim else np.squeeze(index, d)))


def max(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None,  # noqa: A001, A002
        keepdims: bool | None = None) -> Any:
    """The largest element (no dim), a (values, indices) pair along dim, or maximum(input, other_tensor)."""
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    dim, keepdim = _axis(axis, dim, "max"), _keep(keepdim, keepdims)
    if dim is None:
        return reduce.Max.apply(input)
    return _extreme("max", max_result, np.argmax, input, dim, keepdim)


def min(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None,  # noqa: A001, A002
        keepdims: bool | None = None) -> Any:
    """The smallest element (no dim), a (values, indices) pair along dim, or minimum(input, other_tensor)."""
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    dim, keepdim = _axis(axis, dim, "min"), _keep(keepdim, keepdims)
    if dim is None:
        return reduce.Min.apply(input)
    return _extreme("min", min_result, np.argmin, input, dim, keepdim)


def amax(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:  # noqa: A002
    """The largest values over one or several dims (all by default); ties share the gradient."""
    return reduce.Max.apply(input, axis=_dims(dim), keepdims=keepdim)


def amin(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:  # noqa: A002
    """The smallest values over one or several dims (all by default); ties share the gradient."""
    return reduce.Min.apply(input, axis=_dims(dim), keepdims=keepdim)


def _dims(dim: Any) -> Any:
    """PyTorch's dim for amax/amin/norm: () or None means all, a list is a tuple."""
    return None if dim is None or dim == () or dim == [] else tuple(dim) if isinstance(dim, list) else dim


def argmax(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:  # noqa: A002
    """Index of the first largest element, along dim or of the flattened tensor (int64)."""
    return _arg("argmax", np.argmax, input, dim, keepdim)


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:  # noqa: A002
    """Index of the first smallest element, along dim or of the flattened tensor (int64)."""
    return _arg("argmin", np.argmin, input, dim, keepdim)


def _arg(op: str, fn: Any, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    _numeric(op, x, "iuf")
    if x.data.size == 0:
        raise ValueError(f"{op}: cannot reduce an empty tensor of shape {x.shape}")
    axis = None if dim is None else _dim(op, dim, x.ndim)
    return Tensor._wrap(np.asarray(fn(x.data, axis=axis if x.ndim else None, keepdims=keepdim), dtype=np.int64))


def _numeric(op: str, x: Tensor, kinds: str) -> None:
    """A TypeError naming the op for dtypes it does not order (complex, objects; bools for arg* as PyTorch)."""
    if x.dtype.kind not in kinds:
        raise TypeError(f"{op}: not supported for dtype {x.dtype}")


def _order(x: Tensor, dim: int, descending: bool) -> np.ndarray:
    """Stable sorting indices along dim (ties keep their order; NaN counts as the largest, as PyTorch)."""
    if not descending:
        return np.argsort(x.data, axis=dim, kind="stable")
    n = x.shape[dim]
    return n - 1 - np.flip(np.argsort(np.flip(x.data, dim), axis=dim, kind="stable"), dim)


def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:  # noqa: A002
    """(values, indices) sorted along dim; always stable (PyTorch's CPU order for ties)."""
    if not input.ndim:
        return sort_result(_take(input, np.zeros((), np.int64), 0), Tensor._wrap(np.zeros((), np.int64)))
    _numeric("sort", input, "biuf")
    d = _dim("sort", dim, input.ndim)
    index = _order(input, d, descending)
    return sort_result(_take(input, index, d), Tensor._wrap(index))


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:  # noqa: A002
    """Indices that sort along dim (stable)."""
    return sort(input, dim, descending).indices


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
    """The k largest (or smallest) values along dim and their indices, in order; ties by lowest index."""
    _numeric("topk", input, "iuf")
    d = _dim("topk", dim, input.ndim)
    size = input.shape[d] if input.ndim else 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= size:
        raise ValueError(f"topk: k must be an integer in [0, {size}] for dim {dim} of shape {input.shape}, got {k!r}")
    if not input.ndim:
        return topk_result(*sort(input))
    index = np.take(_order(input, d, largest), np.arange(k), axis=d)
    return topk_result(_take(input, index, d), Tensor._wrap(index))


def cumsum(input: Tensor, dim: int, dtype: Any = None) -> Tensor:  # noqa: A002
    """Running sum along dim (integers and bools give int64)."""
    x = input if dtype is None else input.to(dtype)
    return reduce.CumSum.apply(x, axis=dim)


def gather(input: Tensor, dim: int, index: Any) -> Tensor:  # noqa: A002
    """Values of input picked along dim by an int64 index tensor of the same number of dims."""
    return shape.Gather.apply(input, index, axis=dim)


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A001, A002
    """Limit to [min, max]; the bounds are numbers or tensors (which get gradients, as in PyTorch)."""
    return elementwise.Clamp.apply(input, min, max)


clip = clamp


def maximum(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    return elementwise.Maximum.apply(input, other)


def minimum(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    return elementwise.Minimum.apply(input, other)


def _correction(op: str, unbiased: bool | None, correction: Any) -> Any:
    if unbiased is not None and correction is not None:
        raise TypeError(f"{op}: pass either unbiased or correction, not both")
    if unbiased is not None:
        return int(bool(unbiased))
    return 1 if correction is None else correction


def var(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,  # noqa: A002
        correction: Any = None, axis: Any = None, keepdims: bool | None = None) -> Tensor:
    """Variance with Bessel's correction by default (correction=0 or unbiased=False for the biased one)."""
    if isinstance(dim, bool):  # PyTorch's var(unbiased) overload
        dim, unbiased = None, dim
    dim = _axis(axis, dim, "var")
    return reduce.Var.apply(input, axis=dim, keepdims=_keep(keepdim, keepdims),
                            correction=_correction("var", unbiased, correction))


def std(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,  # noqa: A002
        correction: Any = None, axis: Any = None, keepdims: bool | None = None) -> Tensor:
    """Standard deviation: the square root of var with the same arguments (computed before rounding to float32)."""
    if isinstance(dim, bool):  # PyTorch's std(unbiased) overload
        dim, unbiased = None, dim
    dim = _axis(axis, dim, "std")
    return reduce.Var.apply(input, axis=dim, keepdims=_keep(keepdim, keepdims),
                            correction=_correction("std", unbiased, correction), sqrt=True)


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:  # noqa: A002
    """The p-norm over dim (all elements by default): 2/'fro' (default), 1, inf, -inf, 0 or any p > 0."""
    x = input if dtype is None else input.to(dtype)
    if x.dtype.kind != "f":
        raise TypeError(f"norm: expected a float32 or float64 tensor, got dtype {x.dtype}")
    dim = _dims(dim)
    if p is None or p == "fro" or p == 2:
        return reduce.Norm.apply(x, axis=dim, keepdims=keepdim)
    if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, (int, float)) or np.isnan(p):
        raise ValueError(f"norm: p must be 'fro' or a number, got {p!r} ('nuc' is not supported)")
    if p == np.inf:
        return amax(x.abs(), dim, keepdim)
    if p == -np.inf:
        return amin(x.abs(), dim, keepdim)
    if p == 0:
        return (x != 0).to(x.dtype).sum(dim, keepdim)
    if p == 1:
        return x.abs().sum(dim, keepdim)
    return (x.abs() ** p).sum(dim, keepdim) ** (1.0 / p)


def allclose(input: Tensor, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:  # noqa: A002
    """True when |input - other| <= atol + rtol * |other| everywhere (broadcasting)."""
    a, b = np.asarray(input.data), np.asarray(other.data if isinstance(other, Tensor) else other)
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def tril(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002  (PyTorch's argument name)
    """The lower triangle of the last two axes (elements above `diagonal` set to 0); differentiable."""
    return input.masked_fill(~_triangle("tril", input, diagonal), 0)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002
    """The upper triangle of the last two axes (elements below `diagonal` set to 0); differentiable."""
    return input.masked_fill(_triangle("triu", input, diagonal - 1), 0)


def _triangle(op: str, t: Tensor, diagonal: int) -> np.ndarray:
    """Boolean mask of the last two axes, True on and below `diagonal`."""
    if t.ndim < 2:
        raise ValueError(f"{op}: input must have at least 2 dimensions, got shape {t.shape}")
    return np.tri(t.shape[-2], t.shape[-1], diagonal, dtype=bool)


def multinomial(
    input: Tensor, num_samples: int, replacement: bool = False,  # noqa: A002  (PyTorch's argument name)
    *, generator: np.random.Generator | None = None,
) -> Tensor:
    """Category indices drawn from each row of non-negative weights (1-D or 2-D), int64."""
    p = _weights(input, num_samples, replacement)
    rng = resolve(generator)
    rows = p.reshape(-1, p.shape[-1])
    if replacement:
        cdf = np.cumsum(rows, axis=1)
        draws = rng.random((rows.shape[0], num_samples)) * cdf[:, -1:]
        out = np.array([np.searchsorted(c, u, side="right") for c, u in zip(cdf, draws)]).reshape(draws.shape)
        out = np.minimum(out, rows.shape[1] - 1)
    else:
        # Exponential races: the k smallest E_i / p_i are k draws without replacement, in order.
        with np.errstate(divide="ignore"):  # a zero weight never wins: its key is inf
            keys = rng.standard_exponential(rows.shape) / rows
        out = np.argsort(keys, axis=1, kind="stable")[:, :num_samples]
    return Tensor._wrap(out.astype(np.int64).reshape(*p.shape[:-1], num_samples))


def _weights(input: Any, num_samples: int, replacement: bool) -> np.ndarray:  # noqa: A002
    """multinomial's weights as float64 rows after checking them and num_samples."""
    p = input.data if isinstance(input, Tensor) else np.asarray(input)
    if p.dtype.kind != "f":
        raise TypeError(f"multinomial: weights must be float32 or float64, got dtype {p.dtype}")
    if p.ndim not in (1, 2) or p.shape[-1] == 0:
        raise ValueError(f"multinomial: weights must be 1-D or 2-D with at least one category, got shape {p.shape}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ValueError(f"multinomial: num_samples must be a positive integer, got {num_samples!r}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("multinomial: weights must be finite and non-negative")
    nonzero = (p > 0).sum(axis=-1)
    if (nonzero == 0).any():
        raise ValueError("multinomial: every row of weights needs a positive sum, got a row of zeros")
    if not replacement and nonzero.size and num_samples > nonzero.min():
        raise ValueError(
            f"multinomial: cannot draw {num_samples} samples without replacement from a row with only "
            f"{nonzero.min()} nonzero weights (pass replacement=True)"
        )
    return p


def sin(input: Tensor) -> Tensor:  # noqa: A002
    return elementwise.Sin.apply(input)


def cos(input: Tensor) -> Tensor:  # noqa: A002
    return elementwise.Cos.apply(input)


def square(input: Tensor) -> Tensor:  # noqa: A002
    return input * input


def rsqrt(input: Tensor) -> Tensor:  # noqa: A002
    return input**-0.5


def isnan(input: Tensor) -> Tensor:  # noqa: A002
    return Tensor._wrap(np.isnan(input.data))


def isinf(input: Tensor) -> Tensor:  # noqa: A002
    return Tensor._wrap(np.isinf(input.data))


def isfinite(input: Tensor) -> Tensor:  # noqa: A002
    return Tensor._wrap(np.isfinite(input.data))


def any(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001, A002
    """Whether any element (along dim) is nonzero, as a bool tensor."""
    axes = reduce._normalise_axes("any", dim, input.ndim)
    return Tensor._wrap(np.any(input.data, axis=axes, keepdims=keepdim))


def all(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001, A002
    """Whether every element (along dim) is nonzero, as a bool tensor."""
    axes = reduce._normalise_axes("all", dim, input.ndim)
    return Tensor._wrap(np.all(input.data, axis=axes, keepdims=keepdim))


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:  # noqa: A002
    """log(sum(exp(x))) over dim, shifted by the (constant) max so that it neither overflows nor underflows."""
    axes = reduce._normalise_axes("logsumexp", _dims(dim), input.ndim)
    shift = np.amax(input.data, axis=axes, keepdims=True) if input.data.size else np.zeros((1,) * input.ndim)
    shift = np.where(np.isfinite(shift), shift, 0).astype(np.result_type(input.data, np.float32))
    out = (input - shift).exp().sum(axes, keepdim).log()
    return out + (shift if keepdim else np.squeeze(shift, axes))


# ---- thin aliases of the Tensor methods: torch.exp(x) is x.exp() ---------------------------------
add, sub, mul, div = Tensor.__add__, Tensor.__sub__, Tensor.__mul__, Tensor.__truediv__
subtract, multiply, divide, true_divide = sub, mul, div, div
pow, neg, negative = Tensor.__pow__, Tensor.__neg__, Tensor.__neg__  # noqa: A001
exp, log, sqrt, tanh, sigmoid, relu, abs = (  # noqa: A001
    Tensor.exp, Tensor.log, Tensor.sqrt, Tensor.tanh, Tensor.sigmoid, Tensor.relu, Tensor.abs,
)
sum, mean = Tensor.sum, Tensor.mean  # noqa: A001
matmul = mm = bmm = Tensor.matmul
softmax, log_softmax, masked_fill = Tensor.softmax, Tensor.log_softmax, Tensor.masked_fill
reshape, permute, transpose, flatten = Tensor.reshape, Tensor.permute, Tensor.transpose, Tensor.flatten
squeeze, unsqueeze, broadcast_to = Tensor.squeeze, Tensor.unsqueeze, Tensor.expand
clone, t, numel = Tensor.clone, Tensor.t, Tensor.numel
