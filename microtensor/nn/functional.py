"""Functional forms of the layers, with PyTorch's signatures (numpy's axis/keepdims also accepted)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .. import ops
from ..tensor import Tensor, _axis, _data


def relu(x: Tensor) -> Tensor:
    return ops.Relu.apply(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU as PyTorch: exact x * Phi(x) by default, the (faster, fused) tanh form with approximate='tanh'."""
    if approximate == "none":
        return ops.GeluErf.apply(x)
    if approximate == "tanh":
        return ops.Gelu.apply(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return x * ops.Sigmoid.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return ops.Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    return ops.Tanh.apply(x)


def softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    return ops.Softmax.apply(x, axis=_axis(axis, dim, "softmax", -1))


def log_softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    return ops.LogSoftmax.apply(x, axis=_axis(axis, dim, "log_softmax", -1))


def cross_entropy(
    input: Tensor,  # noqa: A002  (PyTorch's argument name)
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of logits (N, C) or (N, C, d...) against class indices or class probabilities, as PyTorch."""
    return ops.CrossEntropy.apply(
        input, target, weight=_data(weight), ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing,
    )


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or summed, or elementwise) squared error; target shapes that broadcast warn, as in PyTorch."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if np.shape(_data(target)) != input.shape:
        warnings.warn(
            f"mse_loss: target of shape {np.shape(_data(target))} differs from input {input.shape}; "
            "they will be broadcast, which is rarely meant",
            stacklevel=2,
        )
    diff = input - target
    if diff.dtype.kind != "f":
        raise TypeError(f"mse_loss: input and target must be float, got dtype {diff.dtype}")
    squared = diff * diff
    return squared.mean() if reduction == "mean" else squared.sum() if reduction == "sum" else squared


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """int64 (*shape, num_classes) with a 1 at each index (num_classes=-1: max index + 1), as PyTorch."""
    ids = np.asarray(_data(tensor))
    if ids.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {ids.dtype}")
    if num_classes == -1:
        if ids.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = int(ids.max()) + 1
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"one_hot: class values must be in [0, {num_classes}), got {ids.min()}..{ids.max()}")
    return Tensor._wrap((ids[..., None] == np.arange(num_classes)).astype(np.int64))


def layer_norm(
    x: Tensor,
    normalized_shape: int | tuple,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return ops.LayerNorm.apply(x, weight, bias, normalized_shape=shape, eps=eps)


def add_layer_norm(
    x: Tensor,
    residual: Tensor,
    normalized_shape: int | tuple,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """layer_norm(x + residual) in one kernel pass (a post-LN block's residual add and LayerNorm)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return ops.AddLayerNorm.apply(x, residual, weight, bias, normalized_shape=shape, eps=eps)


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
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    generator: np.random.Generator | None = None,
    need_weights: bool = False,
) -> Any:
    """softmax(q k^T * scale + mask) v for (..., T, D) inputs, as PyTorch's.

    attn_mask: bool (True = takes part) or float (added to the scores),
    broadcastable to (..., Tq, Tk). Dropout on the weights draws from
    `generator` (default: the one `manual_seed` seeds). With need_weights=True
    returns (output, weights before dropout, a detached (..., Tq, Tk) tensor).
    """
    out, ctx = ops.ScaledDotProductAttention.apply_with_ctx(
        query, key, value, attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, generator=generator,
        need_weights=need_weights,
    )
    return (out, Tensor._wrap(ctx.weights)) if need_weights else out


def self_attention(
    qkv: Tensor,
    n_heads: int,
    mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    need_weights: bool = False,
    last_only: bool = False,
) -> Any:
    """Multi-head self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v]; output (B, T, D).

    Each of q, k, v splits into n_heads heads of D / n_heads; mask (bool,
    True = may attend) broadcasts to (B, n_heads, T, T). With
    need_weights=True returns (output, weights (B, n_heads, T, T), detached).
    Same numbers as splitting the heads by hand and calling
    scaled_dot_product_attention, with fewer ops in the graph. With last_only
    only the last position queries: output (B, 1, D), weights (B, n_heads, 1, T),
    for a model that reads its last position (the other T - 1 queries cost nothing).
    """
    out, ctx = ops.SelfAttention.apply_with_ctx(
        qkv, n_heads=n_heads, mask=_data(mask), is_causal=is_causal, scale=scale, need_weights=need_weights,
        last_only=last_only,
    )
    return (out, Tensor._wrap(ctx.weights)) if need_weights else out

