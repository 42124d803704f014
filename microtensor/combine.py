"""Ops on several tensors at once: cat, stack, where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import ops
from .tensor import Tensor, _axis, _data


def cat(tensors: Sequence[Tensor], axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Concatenate along an existing axis."""
    return ops.Cat.apply(*tensors, axis=_axis(axis, dim, "cat", 0))


def stack(tensors: Sequence[Tensor], axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Join equal-shaped tensors along a new axis."""
    return ops.Stack.apply(*tensors, axis=_axis(axis, dim, "stack", 0))


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise choice: a where condition is True, else b; gradients flow to a and b."""
    return ops.Where.apply(_data(condition), a, b)
