"""Making tensors as PyTorch does: from data, filled, ranges, random draws (optionally from a Generator)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .device import _check_device
from .random import resolve
from .tensor import DEFAULT_DTYPE, Tensor

INT64 = np.dtype(np.int64)


def _shape(shape: tuple, op: str) -> tuple:
    """Accept zeros(2, 3) and zeros((2, 3)) alike; sizes must be non-negative integers."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{op}: sizes must be non-negative integers, got {shape}")
    return tuple(int(n) for n in shape)


def _dtype(dtype: Any, default: np.dtype = DEFAULT_DTYPE) -> np.dtype:
    return default if dtype is None else np.dtype(dtype)


def _make(data: np.ndarray, op: str, device: Any, requires_grad: bool) -> Tensor:
    """The tensor of a creation function, after checking its device."""
    _check_device(device, op)
    return Tensor(data, requires_grad=requires_grad)


def _scalar_dtype(*values: Any) -> np.dtype:
    """PyTorch's inference from Python numbers: any float gives float32, bools bool, else int64."""
    if any(isinstance(v, (float, np.floating)) for v in values):
        return DEFAULT_DTYPE
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.dtype(np.bool_)
    return INT64


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A copy of data, as PyTorch's: numpy arrays keep their dtype, Python floats become float32, ints int64."""
    _check_device(device, "tensor")
    if isinstance(data, (np.ndarray, Tensor)) and dtype is None:
        data = np.array(data.data if isinstance(data, Tensor) else data)
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """A tensor sharing memory with a numpy array (or a Tensor) when no conversion is needed."""
    _check_device(device, "as_tensor")
    if isinstance(data, Tensor) and (dtype is None or np.dtype(dtype) == data.dtype):
        return data
    return Tensor(data, dtype=None if dtype is None or np.dtype(dtype) == getattr(data, "dtype", None) else dtype)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory and dtype with a numpy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(array).__name__}")
    return Tensor(array)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(np.zeros(_shape(size, "zeros"), _dtype(dtype)), "zeros", device, requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(np.ones(_shape(size, "ones"), _dtype(dtype)), "ones", device, requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Uninitialised values, as in PyTorch (here zeros, which cost the same)."""
    return _make(np.zeros(_shape(size, "empty"), _dtype(dtype)), "empty", device, requires_grad)


def full(size: Any, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Filled with fill_value; the dtype follows it as in PyTorch (float -> float32, int -> int64, bool)."""
    dtype = _dtype(dtype, _scalar_dtype(fill_value))
    return _make(np.full(_shape((size,), "full"), fill_value, dtype), "full", device, requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """The n x m identity matrix (m defaults to n)."""
    rows, cols = _shape((n, n if m is None else m), "eye")
    return _make(np.eye(rows, cols, dtype=_dtype(dtype)), "eye", device, requires_grad)


def linspace(
    start: float, end: float, steps: int, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """`steps` evenly spaced values from start to end inclusive (float32 unless dtype says otherwise)."""
    (steps,) = _shape((steps,), "linspace")
    return _make(np.linspace(start, end, steps).astype(_dtype(dtype)), "linspace", device, requires_grad)


def arange(
    start: float,
    end: float | None = None,
    step: float = 1,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """[start, end) by step; integer arguments give int64, any float argument float32 (as PyTorch)."""
    if end is None:
        start, end = 0, start
    if step == 0 or not np.isfinite([start, end, step]).all():
        raise ValueError(f"arange: need finite start, end and a nonzero step, got {start}, {end}, {step}")
    if (end - start) * step < 0:
        raise ValueError(f"arange: step {step} points away from end {end} (start {start})")
    dtype = _dtype(dtype, _scalar_dtype(start, end, step))
    return _make(np.arange(start, end, step).astype(dtype), "arange", device, requires_grad)


def zeros_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(np.zeros_like(t.data, dtype=dtype), "zeros_like", device, requires_grad)


def ones_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(np.ones_like(t.data, dtype=dtype), "ones_like", device, requires_grad)


def full_like(t: Tensor, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(np.full_like(t.data, fill_value, dtype=dtype), "full_like", device, requires_grad)


def empty_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros_like(t, dtype=dtype, device=device, requires_grad=requires_grad)


# ---- random -------------------------------------------------------------------------------


def randn(
    *size: Any, generator: np.random.Generator | None = None, dtype: Any = None, device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """Standard normal samples, from `generator` or the default one (seeded by mt.manual_seed)."""
    data = resolve(generator).standard_normal(_shape(size, "randn")).astype(_dtype(dtype))
    return _make(data, "randn", device, requires_grad)


def rand(
    *size: Any, generator: np.random.Generator | None = None, dtype: Any = None, device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """Uniform samples in [0, 1), from `generator` or the default one."""
    data = resolve(generator).random(_shape(size, "rand")).astype(_dtype(dtype))
    return _make(data, "rand", device, requires_grad)


def randint(
    *args: Any, size: Any = None, low: int | None = None, high: int | None = None,
    generator: np.random.Generator | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False,
) -> Tensor:
    """Integers uniform in [low, high): randint(high, size) or randint(low, high, size), int64 by default."""
    args = list(args)
    if size is None and args:
        size = args.pop()
    if high is None and args:
        high = args.pop()
    if low is None:
        low = args.pop() if args else 0
    if args or size is None or high is None:
        raise TypeError("randint: expected randint(high, size) or randint(low, high, size)")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
        raise ValueError(f"randint: need integers low < high, got low={low!r}, high={high!r}")
    shape = _shape(tuple(size) if isinstance(size, (tuple, list)) else (size,), "randint")
    data = resolve(generator).integers(low, high, shape).astype(_dtype(dtype, INT64))
    return _make(data, "randint", device, requires_grad)


def randperm(
    n: int, generator: np.random.Generator | None = None, dtype: Any = None, device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A random permutation of 0..n-1 (int64 by default)."""
    (n,) = _shape((n,), "randperm")
    return _make(resolve(generator).permutation(n).astype(_dtype(dtype, INT64)), "randperm", device, requires_grad)


def randn_like(t: Tensor, generator: np.random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*t.shape, generator=generator, dtype=t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, generator: np.random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*t.shape, generator=generator, dtype=t.dtype, requires_grad=requires_grad)
