"""Gradient clipping at PyTorch's path (`torch.nn.utils.clip_grad_norm_`, `clip_grad_value_`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[np.ndarray]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad.data for p in params if p.grad is not None]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> Tensor:
    """Scale all gradients in place so that their joint norm is at most max_norm; return the norm before."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm > 0 or not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0 and norm_type > 0, got {max_norm} and {norm_type}")
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.float32(0.0))
    dtype = grads[0].dtype
    if norm_type == math.inf:
        total = max(float(np.abs(g).max(initial=0.0)) for g in grads)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}; "
                           "pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # a NaN norm makes NaN gradients, as PyTorch
        for g in grads:
            g *= coef
    return Tensor(np.asarray(total, dtype=dtype))


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
