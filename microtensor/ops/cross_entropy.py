"""Cross-entropy's one home, mirroring csrc/cross_entropy.c: its Function (the only place its inputs are
checked), the numpy reference of the kernels, and the kernels' entry points.

Class-index targets without weights or label smoothing take the fused kernel (the loss and its
gradient, softmax - onehot, in one pass over each row); the other forms are composed from
log_softmax in numpy. The entry points (private: they trust their caller's checks, every target
already in range) run C for float32 on the C backend and the reference otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float
from .softmax import _log_softmax_forward, reference_log_softmax_forward

_F32 = np.dtype(np.float32)

# ---------------------------------------------------------------- the numpy reference


def reference_cross_entropy_forward(
    logits: np.ndarray, targets: np.ndarray, ignore_index: int
) -> tuple[float, int, np.ndarray]:
    """Cross-entropy of logits (N, C) against int64 targets (N,), in one pass with its gradient.

    Returns (sum of the per-row losses, number of rows counted, dlogits) where
    dlogits = softmax(logits) - onehot(targets) for counted rows and 0 for rows
    whose target equals `ignore_index`; the caller scales it by the reduction.
    """
    keep = targets != ignore_index
    safe_targets = np.where(keep, targets, 0)
    logp = reference_log_softmax_forward(logits)
    rows = np.arange(logits.shape[0])
    losses = np.where(keep, -logp[rows, safe_targets], 0.0)  # a NaN in an ignored row stays out
    dlogits = np.exp(logp)  # an ignored row's gradient is 0 * this: NaN for a NaN row, as PyTorch's
    dlogits[rows, safe_targets] -= 1.0
    dlogits *= keep[:, None]
    return float(losses.sum()), int(keep.sum()), dlogits.astype(logits.dtype, copy=False)


def reference_cross_entropy_rows(logits: np.ndarray, targets: np.ndarray, ignore_index: int) -> np.ndarray:
    """Per-row cross-entropy losses (0 for ignored rows), for reduction='none'."""
    keep = targets != ignore_index
    logp = reference_log_softmax_forward(logits)
    return np.where(keep, -logp[np.arange(logits.shape[0]), np.where(keep, targets, 0)], 0.0)


# ---------------------------------------------------------------- the kernels' entry points


def _cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int) -> tuple[float, int, np.ndarray]:
    """(loss sum, rows counted, dlogits) of C-contiguous logits (N, C) and int64 targets (N,) in range."""
    if not _backend.native(logits):
        return reference_cross_entropy_forward(logits, targets, ignore_index)
    dlogits, loss, count = np.empty_like(logits), np.zeros(1, np.float64), np.zeros(1, np.int64)
    _backend.K.call("cross_entropy_forward", logits, targets, ignore_index, dlogits, loss, count, *logits.shape)
    return float(loss[0]), int(count[0]), dlogits


def _cross_entropy_rows(logits: np.ndarray, targets: np.ndarray, ignore_index: int) -> np.ndarray:
    """Per-row losses (0 for ignored rows) of C-contiguous logits (N, C) and int64 targets (N,) in range."""
    if not _backend.native(logits):
        return reference_cross_entropy_rows(logits, targets, ignore_index)
    losses = np.empty(logits.shape[0], _F32)
    _backend.K.call("cross_entropy_rows", logits, targets, ignore_index, losses, *logits.shape)
    return losses


# ---------------------------------------------------------------- the Function


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
    flat = np.ascontiguousarray(target.reshape(-1), dtype=np.int64)
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
    check_float("cross_entropy", weight=weight)
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
        total, denom, dlogits = _cross_entropy_forward(rows, flat, ignore)
        losses = _cross_entropy_rows(rows, flat, ignore) if per_row else None
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
        check_float("cross_entropy", input=logits)
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
