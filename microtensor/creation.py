"""Making tensors: from data, filled, random (with an optional numpy Generator), ranges."""

from __future__ import annotations

from typing import Any

import numpy as np

from .random import resolve
from .tensor import DEFAULT_DTYPE, Tensor


def _shape(shape: tuple) -> tuple:
    """Accept zeros(2, 3) and zeros((2, 3)) alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"shape must be non-negative integers, got {shape}")
    return tuple(int(n) for n in shape)


def _dtype(dtype: Any) -> np.dtype:
    return DEFAULT_DTYPE if dtype is None else np.dtype(dtype)


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor from data: numpy arrays keep their dtype; Python floats become float32, ints int64."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def full(shape: Any, fill_value: float, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.full(_shape((shape,)), fill_value, dtype=_dtype(dtype)), requires_grad=requires_grad)


def randn(
    *shape: Any, generator: np.random.Generator | None = None, dtype: Any = None, requires_grad: bool = False
) -> Tensor:
    """Standard normal samples; pass a seeded numpy Generator for reproducible numbers."""
    data = resolve(generator).standard_normal(_shape(shape)).astype(_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def rand(
    *shape: Any, generator: np.random.Generator | None = None, dtype: Any = None, requires_grad: bool = False
) -> Tensor:
    """Uniform samples in [0, 1); pass a seeded numpy Generator for reproducible numbers."""
    return Tensor(resolve(generator).random(_shape(shape)).astype(_dtype(dtype)), requires_grad=requires_grad)


def arange(start: float, stop: float | None = None, step: float = 1, dtype: Any = None) -> Tensor:
    """Like numpy's arange; integer arguments give int64, float arguments float32 (as PyTorch)."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if ints else DEFAULT_DTYPE
    return Tensor(np.arange(start, stop, step, dtype=dtype))


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros_like(t.data, dtype=dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones_like(t.data, dtype=dtype), requires_grad=requires_grad)


def randn_like(t: Tensor, generator: np.random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*t.shape, generator=generator, dtype=t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, generator: np.random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*t.shape, generator=generator, dtype=t.dtype, requires_grad=requires_grad)
