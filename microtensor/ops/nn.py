"""Fused neural-network ops, each one kernel call forward and one backward through the backend."""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function
from ..random import resolve


def _last_axis_view(a: np.ndarray, axis: int, op: str) -> np.ndarray:
    """a with `axis` moved last, contiguous, for kernels that work on rows."""
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for shape {a.shape}")
    return np.ascontiguousarray(np.moveaxis(a, axis, -1))


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        ctx.axis = axis
        y = _backend.K.softmax_forward(_last_axis_view(a, axis, "softmax"))
        ctx.save_for_backward(y)
        return np.moveaxis(y, -1, axis)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        g = np.ascontiguousarray(np.moveaxis(g, ctx.axis, -1))
        return np.moveaxis(_backend.K.softmax_backward(y, g), -1, ctx.axis)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        ctx.axis = axis
        y = _backend.K.log_softmax_forward(_last_axis_view(a, axis, "log_softmax"))
        ctx.save_for_backward(y)
        return np.moveaxis(y, -1, axis)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        g = np.ascontiguousarray(np.moveaxis(g, ctx.axis, -1))
        return np.moveaxis(_backend.K.log_softmax_backward(y, g), -1, ctx.axis)


def _rows_and_targets(logits: np.ndarray, targets: np.ndarray, ignore_index):
    """Logits as (N, C) rows and targets as (N,) int64, checked; PyTorch's (N, C, d...) layout too."""
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if logits.ndim == 1:
        logits = logits[None]
        targets = targets.reshape(1)
    elif logits.ndim > 2:
        logits = np.moveaxis(logits, 1, -1)
    expected = logits.shape[:-1]
    if targets.shape != expected:
        raise ValueError(f"cross_entropy: targets of shape {targets.shape} for logits needing targets {expected}")
    rows = np.ascontiguousarray(logits.reshape(-1, logits.shape[-1]))
    flat = targets.reshape(-1).astype(np.int64, copy=False)
    classes = rows.shape[1]
    bad = (flat < 0) | (flat >= classes)
    if ignore_index is not None:
        bad &= flat != ignore_index
    if bad.any():
        raise ValueError(
            f"cross_entropy: target {int(flat[bad][0])} is out of range for {classes} classes"
            + ("" if ignore_index is None else f" (ignore_index={ignore_index})")
        )
    return rows, flat


class CrossEntropy(Function):
    """Cross-entropy from logits and integer targets; the gradient comes out of the same kernel pass."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=None, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        rows, flat = _rows_and_targets(logits, targets, ignore_index)
        ignore = -1 if ignore_index is None else int(ignore_index)
        ctx.shape, ctx.reduction = logits.shape, reduction
        total, count, dlogits = _backend.K.cross_entropy_forward(rows, flat, ignore)
        ctx.dlogits = dlogits
        if reduction == "none":
            losses = _backend.K.cross_entropy_rows(rows, flat, ignore)
            return losses.reshape(np.shape(targets)).astype(logits.dtype, copy=False)
        ctx.scale = 1.0 / count if reduction == "mean" and count else 1.0
        value = total * ctx.scale if count or reduction == "sum" else np.nan
        return np.asarray(value, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        if ctx.reduction == "none":
            d = ctx.dlogits * g.reshape(-1, 1)
        else:
            d = ctx.dlogits * (g * ctx.scale)
        if len(ctx.shape) == 1:
            return d.reshape(ctx.shape), None
        if len(ctx.shape) > 2:
            moved = (ctx.shape[0], *ctx.shape[2:], ctx.shape[1])
            return np.moveaxis(d.reshape(moved), -1, 1), None
        return d, None


class LayerNorm(Function):
    """Normalise over the trailing `normalized_shape` axes; mean and 1/std are kept for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape=(), eps=1e-5):
        n = len(normalized_shape)
        if tuple(x.shape[x.ndim - n :]) != tuple(normalized_shape) or n == 0:
            raise ValueError(
                f"layer_norm: input of shape {x.shape} does not end in normalized_shape {normalized_shape}"
            )
        for label, p in (("weight", weight), ("bias", bias)):
            if p is not None and p.shape != tuple(normalized_shape):
                raise ValueError(f"layer_norm: {label} of shape {p.shape}, expected {tuple(normalized_shape)}")
        cols = int(np.prod(normalized_shape))
        rows = np.ascontiguousarray(x.reshape(-1, cols))
        w = None if weight is None else weight.reshape(cols)
        b = None if bias is None else bias.reshape(cols)
        y, mean, rstd = _backend.K.layernorm_forward(rows, w, b, eps)
        ctx.save_for_backward(rows, w, mean, rstd)
        ctx.shape, ctx.param_shape = x.shape, tuple(normalized_shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        rows, w, mean, rstd = ctx.saved_tensors
        g = np.ascontiguousarray(g.reshape(rows.shape))
        dx, dw, db = _backend.K.layernorm_backward(g, rows, w, mean, rstd)
        return dx.reshape(ctx.shape), dw.reshape(ctx.param_shape), db.reshape(ctx.param_shape)


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    One 63-bit seed is drawn from the generator per call; the mask is a
    function of that seed alone, so both backends draw the same mask.
    """

    @staticmethod
    def forward(ctx, x, p=0.5, generator=None):
        seed = int(resolve(generator).integers(1 << 63))
        y, ctx.mask = _backend.K.dropout_forward(x, p, seed)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


class Embedding(Function):
    """Rows of a (V, D) table picked by integer ids; backward scatter-adds into the rows."""

    @staticmethod
    def forward(ctx, weight, ids):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
        if weight.ndim != 2:
            raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
        ids = ids.astype(np.int64, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
            bad = ids[(ids < 0) | (ids >= weight.shape[0])][0]
            raise ValueError(f"embedding: id {int(bad)} is out of range for {weight.shape[0]} embeddings")
        ctx.ids, ctx.vocab = np.ascontiguousarray(ids.reshape(-1)), weight.shape[0]
        return _backend.K.embedding_forward(weight, ids)

    @staticmethod
    def backward(ctx, g):
        g = np.ascontiguousarray(g.reshape(-1, g.shape[-1]))
        return _backend.K.embedding_backward(ctx.ids, g, ctx.vocab), None


class Linear(Function):
    """y = x @ weight.T + bias over the last axis of x, as one matrix product on (N, in) rows."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                f"(expected last axis {weight.shape[-1]})"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias of shape {bias.shape}, expected ({weight.shape[0]},)")
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        return _backend.K.linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g = np.ascontiguousarray(g.reshape(-1, weight.shape[0]))
        dx, dw, db = _backend.K.linear_backward(g, rows, weight, need_x, need_w, need_b)
        return (None if dx is None else dx.reshape(ctx.shape)), dw, db


class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale + mask) v over (..., T, D) inputs, fused in one kernel call.

    The attention weights of the forward pass are kept in `ctx.weights` (for
    backward and for diagnostics).
    """

    @staticmethod
    def forward(ctx, q, k, v, mask=None, is_causal=False, scale=None):
        _check_attention(q, k, v)
        lead, tq, tk = q.shape[:-2], q.shape[-2], k.shape[-2]
        flat = [np.ascontiguousarray(t.reshape(-1, *t.shape[-2:])) for t in (q, k, v)]
        if mask is not None:
            mask = _attention_mask(mask, (*lead, tq, tk))
            mask = None if mask is None else mask.reshape(-1, tq, tk)
        ctx.scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
        out, weights = _backend.K.attention_forward(*flat, mask, bool(is_causal), ctx.scale)
        ctx.save_for_backward(*flat, weights)
        ctx.shapes = (q.shape, k.shape, v.shape)
        ctx.weights = weights.reshape(*lead, tq, tk)
        return out.reshape(*lead, tq, v.shape[-1])

    @staticmethod
    def backward(ctx, g):
        q, k, v, weights = ctx.saved_tensors
        g = np.ascontiguousarray(g.reshape(-1, *g.shape[-2:]))
        grads = _backend.K.attention_backward(g, q, k, v, weights, ctx.scale)
        return tuple(d.reshape(s) for d, s in zip(grads, ctx.shapes))


class SelfAttention(Function):
    """Multi-head self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v], heads split inside.

    One fused projection feeds it directly, so no per-head slicing op (and its
    zero-filled gradients) sits in the graph, and the C kernel reads the heads by
    stride (llm.c-style). Output (B, T, D), heads concatenated.
    """

    @staticmethod
    def forward(ctx, qkv, n_heads=1, mask=None, is_causal=False, scale=None):
        B, T, D = _check_packed(qkv, n_heads)
        if mask is not None:
            mask = _attention_mask(mask, (B, n_heads, T, T))
        ctx.scale = 1.0 / np.sqrt(D // n_heads) if scale is None else float(scale)
        out, ctx.weights = _backend.K.self_attention_forward(qkv, n_heads, mask, bool(is_causal), ctx.scale)
        ctx.save_for_backward(qkv, ctx.weights)
        return out

    @staticmethod
    def backward(ctx, g):
        qkv, weights = ctx.saved_tensors
        return _backend.K.self_attention_backward(g, qkv, weights, ctx.scale)


def _check_packed(qkv: np.ndarray, n_heads: int) -> tuple[int, int, int]:
    """(B, T, D) of a packed (B, T, 3*D) projection whose D splits into n_heads."""
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise ValueError(f"self_attention: qkv must be (batch, length, 3 * d_model), got shape {qkv.shape}")
    B, T, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    if not isinstance(n_heads, (int, np.integer)) or n_heads <= 0 or D % n_heads:
        raise ValueError(f"self_attention: d_model {D} (qkv shape {qkv.shape}) does not split into {n_heads} heads")
    return B, T, D


def _check_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    """q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) with equal leading axes."""
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"scaled_dot_product_attention: q, k, v of shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: q {q.shape}, k {k.shape}, v {v.shape} do not agree "
            "(expected q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv))"
        )


def _attention_mask(mask, shape: tuple) -> np.ndarray | None:
    """A bool mask (True = may attend) broadcast to the full scores shape, contiguous; None if it masks nothing."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"scaled_dot_product_attention: mask must be bool (True = attend), got {mask.dtype}")
    try:
        full = np.broadcast_to(mask, shape)
        return None if mask.all() else np.ascontiguousarray(full)
    except ValueError:
        raise ValueError(
            f"scaled_dot_product_attention: mask of shape {mask.shape} does not broadcast to {shape}"
        ) from None
