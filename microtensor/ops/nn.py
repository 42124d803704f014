"""Fused neural-network ops, each one kernel call forward and one backward through the backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backend
from ..autograd import Function
from ..random import resolve
from .checks import check_float as _check_float
from .softmax import _log_softmax_forward


def _class_rows(a: np.ndarray) -> np.ndarray:
    """PyTorch's (C,), (N, C) or (N, C, d...) layout as contiguous (rows, C)."""
    if a.ndim > 2:
        a = np.moveaxis(a, 1, -1)
    return np.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]))


def _ignore_index(value: Any) -> int:
    """ignore_index as an int64, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"cross_entropy: ignore_index must be an integer, got {value!r}")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"cross_entropy: ignore_index {value} does not fit in int64")
    return int(value)


def _index_targets(target: np.ndarray, logits_shape: tuple, classes: int, ignore: int) -> np.ndarray:
    """Class-index targets as flat int64, checked against the logits' shape and class count."""
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: target must hold integer class indices (or float class probabilities of the "
            f"input's shape {logits_shape}), got dtype {target.dtype} and shape {target.shape}"
        )
    expected = logits_shape[:1] + logits_shape[2:] if len(logits_shape) > 1 else ()
    if target.shape != expected:
        raise ValueError(f"cross_entropy: target of shape {target.shape} for input {logits_shape}, expected {expected}")
    flat = target.reshape(-1).astype(np.int64, copy=False)
    bad = (flat < 0) | (flat >= classes)
    bad &= flat != ignore
    if bad.any():
        raise ValueError(
            f"cross_entropy: target {int(flat[bad][0])} is out of range for {classes} classes (ignore_index={ignore})"
        )
    return flat


def _class_weight(weight: Any, classes: int, dtype: np.dtype) -> np.ndarray | None:
    """The per-class weight as a (C,) array of the logits' dtype, checked; None stays None."""
    if weight is None:
        return None
    _check_float("cross_entropy", weight=weight)
    weight = np.asarray(weight)
    if weight.shape != (classes,):
        raise ValueError(f"cross_entropy: weight of shape {weight.shape}, expected ({classes},)")
    return weight.astype(dtype, copy=False)


def _dense_cross_entropy(rows: np.ndarray, q: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row losses -sum_c q log_softmax(rows), their gradient and log_softmax; rows not kept count 0.

    As in PyTorch, a NaN in a row that is not kept stays out of the loss but
    reaches that row's gradient.
    """
    logp = _log_softmax_forward(rows)
    dlogits = q.sum(axis=1, keepdims=True) * np.exp(logp) - q
    dlogits *= keep[:, None]
    losses = -(q * np.where(keep[:, None], logp, 0.0)).sum(axis=1)
    return losses, dlogits, logp


def _index_cross_entropy(rows: np.ndarray, flat: np.ndarray, weight: Any, eps: float, ignore: int,
                         per_row: bool) -> tuple:
    """(per-row losses or None, their sum, dlogits, the divisor of 'mean') for class-index targets."""
    if weight is None and not eps:
        total, denom, dlogits = _backend.K.cross_entropy_forward(rows, flat, ignore)
        losses = _backend.K.cross_entropy_rows(rows, flat, ignore) if per_row else None
        return losses, total, dlogits, denom
    keep = flat != ignore
    safe = np.where(keep, flat, 0)
    q = np.empty_like(rows)
    q[:] = (eps / rows.shape[1]) * (1.0 if weight is None else weight)
    q[np.arange(len(rows)), safe] += (1.0 - eps) * (1.0 if weight is None else weight[safe])
    losses, dlogits, _ = _dense_cross_entropy(rows, q, keep)
    return losses, losses.sum(), dlogits, weight[safe][keep].sum() if weight is not None else int(keep.sum())


def _unrows(d: np.ndarray, shape: tuple) -> np.ndarray:
    """Rows (R, C) back to the (C,), (N, C) or (N, C, d...) layout of `shape`."""
    if len(shape) > 2:
        return np.moveaxis(d.reshape(shape[0], *shape[2:], shape[1]), -1, 1)
    return d.reshape(shape)


class CrossEntropy(Function):
    """Cross-entropy from logits with PyTorch's semantics; the gradient comes out of the same pass.

    Targets are class indices (any integer dtype; `ignore_index` rows count
    nothing) or class probabilities of the input's shape. `weight` scales each
    class, `label_smoothing` mixes the target with the uniform distribution;
    'mean' divides by the summed weights of the counted targets (by the row
    count for probabilities). Plain index targets take the fused kernel.
    """

    @staticmethod
    def forward(ctx, logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _check_float("cross_entropy", input=logits)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
        ignore = _ignore_index(ignore_index)
        if logits.ndim == 0 or logits.shape[min(1, logits.ndim - 1)] == 0:
            raise ValueError(
                f"cross_entropy: input of shape {logits.shape} has no classes (expected (C,), (N, C) or (N, C, d...))"
            )
        rows, target, eps = _class_rows(logits), np.asarray(target), float(label_smoothing)
        weight = _class_weight(weight, rows.shape[1], rows.dtype)
        ctx.shape, ctx.reduction, ctx.dtarget = logits.shape, reduction, None
        if target.dtype.kind == "f" and target.shape == logits.shape:
            w = 1.0 if weight is None else weight
            q = (_class_rows(target).astype(rows.dtype) * (1.0 - eps) + eps / rows.shape[1]) * w
            losses, ctx.dlogits, logp = _dense_cross_entropy(rows, q, np.ones(len(rows), dtype=bool))
            total, denom, ctx.dtarget = losses.sum(), len(rows), -(1.0 - eps) * w * logp
            out_shape = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
        else:
            flat, out_shape = _index_targets(target, logits.shape, rows.shape[1], ignore), target.shape
            losses, total, ctx.dlogits, denom = _index_cross_entropy(
                rows, flat, weight, eps, ignore, reduction == "none"
            )
        if reduction == "none":
            return losses.reshape(out_shape).astype(logits.dtype, copy=False)
        ctx.scale = 1.0 / denom if reduction == "mean" and denom else 1.0
        value = total * ctx.scale if denom or reduction == "sum" else np.nan
        return np.asarray(value, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        g = g.reshape(-1, 1) if ctx.reduction == "none" else g * ctx.scale
        dtarget = None
        if ctx.dtarget is not None and ctx.needs_input_grad[1]:
            dtarget = _unrows(ctx.dtarget * g, ctx.shape)
        return _unrows(ctx.dlogits * g, ctx.shape), dtarget


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    One 63-bit seed is drawn from the generator per call; the mask is a
    function of that seed alone, so both backends draw the same mask.
    """

    @staticmethod
    def forward(ctx, x, p=0.5, generator=None):
        _check_float("dropout", input=x)
        seed = int(resolve(generator).integers(1 << 63))
        y, ctx.mask = _backend.K.dropout_forward(x, p, seed)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


class GeluErf(Function):
    """GELU x * Phi(x) with the exact normal CDF (PyTorch's default, approximate='none')."""

    @staticmethod
    def forward(ctx, x):
        _check_float("gelu", input=x)
        y, cdf = _backend.K.gelu_erf_forward(x)
        ctx.save_for_backward(x, cdf)
        return y

    @staticmethod
    def backward(ctx, g):
        x, cdf = ctx.saved_tensors
        return _backend.K.gelu_erf_backward(x, cdf, g)


class Embedding(Function):
    """Rows of a (V, D) table picked by integer ids; backward scatter-adds into the rows."""

    @staticmethod
    def forward(ctx, weight, ids):
        _check_float("embedding", weight=weight)
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
        g = np.ascontiguousarray(g.reshape(len(ctx.ids), g.shape[-1]))
        return _backend.K.embedding_backward(ctx.ids, g, ctx.vocab), None


class Linear(Function):
    """y = x @ weight.T + bias over the last axis of x, as one matrix product on (N, in) rows.

    Backward adds dx into the engine's running sum of x's gradient when offered
    one (a per-head model feeds one x to many linears).
    """

    sums_into = True

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        _check_float("linear", input=x, weight=weight, bias=bias)
        if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                f"(expected last axis {weight.shape[-1]})"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias of shape {bias.shape}, expected ({weight.shape[0]},)")
        rows = np.ascontiguousarray(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]))
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        return _backend.K.linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g = np.ascontiguousarray(g.reshape(len(rows), weight.shape[0]))
        into = ctx.grad_into[0] if ctx.grad_into and need_x else None
        if into is not None and (into.dtype != g.dtype or not into.flags.c_contiguous):
            into = None
        dx, dw, db = _backend.K.linear_backward(
            g, rows, weight, need_x, need_w, need_b, None if into is None else into.reshape(rows.shape)
        )
        return (into if into is not None else None if dx is None else dx.reshape(ctx.shape)), dw, db
