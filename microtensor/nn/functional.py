"""Functional forms of the layers, with PyTorch's signatures (numpy's axis/keepdims also accepted)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..tensor import Tensor, _axis, _data


def relu(x: Tensor) -> Tensor:
    return ops.Relu.apply(x)


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation."""
    return ops.Gelu.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return ops.Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    return ops.Tanh.apply(x)


def softmax(x: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    return ops.Softmax.apply(x, axis=_axis(axis, dim, "softmax", -1))


def log_softmax(x: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    return ops.LogSoftmax.apply(x, axis=_axis(axis, dim, "log_softmax", -1))


def cross_entropy(
    logits: Tensor, targets: Any, ignore_index: int | None = None, reduction: str = "mean"
) -> Tensor:
    """Mean (or sum, or per-row) cross-entropy of logits (N, C) against integer targets (N,)."""
    return ops.CrossEntropy.apply(logits, _data(targets), ignore_index=ignore_index, reduction=reduction)


def layer_norm(
    x: Tensor,
    normalized_shape: int | tuple,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return ops.LayerNorm.apply(x, weight, bias, normalized_shape=shape, eps=eps)


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None
) -> Tensor:
    """Zero elements with probability p while training (scaling the rest by 1/(1-p)); identity otherwise."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return ops.Dropout.apply(x, p=p, generator=generator)


def embedding(ids: Any, weight: Tensor) -> Tensor:
    """Rows of weight picked by integer ids: (*ids.shape, dim)."""
    return ops.Embedding.apply(weight, _data(ids))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with weight (out, in) as in PyTorch."""
    return ops.Linear.apply(x, weight, bias)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    need_weights: bool = False,
) -> Any:
    """softmax(q k^T / sqrt(d) masked) v for (..., T, D) inputs; mask is bool, True = may attend.

    With need_weights=True returns (output, weights); the weights are a
    detached tensor (..., Tq, Tk) for inspection, carrying no gradient.
    """
    out, ctx = ops.ScaledDotProductAttention.apply_with_ctx(
        q, k, v, mask=_data(mask), is_causal=is_causal, scale=scale
    )
    return (out, Tensor._wrap(ctx.weights)) if need_weights else out


def self_attention(
    qkv: Tensor,
    n_heads: int,
    mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    need_weights: bool = False,
) -> Any:
    """Multi-head self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v]; output (B, T, D).

    Each of q, k, v splits into n_heads heads of D / n_heads; mask (bool,
    True = may attend) broadcasts to (B, n_heads, T, T). With
    need_weights=True returns (output, weights (B, n_heads, T, T), detached).
    Same numbers as splitting the heads by hand and calling
    scaled_dot_product_attention, with fewer ops in the graph.
    """
    out, ctx = ops.SelfAttention.apply_with_ctx(
        qkv, n_heads=n_heads, mask=_data(mask), is_causal=is_causal, scale=scale
    )
    return (out, Tensor._wrap(ctx.weights)) if need_weights else out


def mse_loss(a: Tensor, b: Any, reduction: str = "mean") -> Tensor:
    diff = (a - b) * (a - b)
    return diff.mean() if reduction == "mean" else diff.sum() if reduction == "sum" else diff
