"""Embedding's one home, mirroring csrc/embedding.c: its Function (the only place its inputs are checked,
every id against the table), the numpy reference of the kernels, and the kernels' entry points.

The entry points (private: they trust their caller's checks) take flat int64 ids and run C for
float32 on the C backend, the reference otherwise.
"""

from __future__ import annotations

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float, contiguous

# ---------------------------------------------------------------- the numpy reference


def reference_embedding_forward(weight: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of weight (V, D) picked by int64 ids (n,); result (n, D)."""
    return weight[ids]


def reference_embedding_backward(ids: np.ndarray, g: np.ndarray, num_embeddings: int) -> np.ndarray:
    """Scatter-add rows of g (n, D) into a (num_embeddings, D) gradient at int64 ids (n,)."""
    dweight = np.zeros((num_embeddings, g.shape[-1]), dtype=g.dtype)
    np.add.at(dweight, ids, g)
    return dweight


# ---------------------------------------------------------------- the kernels' entry points


def _embedding_forward(weight: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of a C-contiguous weight (V, D) at contiguous int64 ids (n,) in [0, V); result (n, D)."""
    if not _backend.native(weight):
        return reference_embedding_forward(weight, ids)
    out = np.empty((ids.size, weight.shape[1]), weight.dtype)
    _backend.K.call("embedding_forward", weight, ids, out, ids.size, weight.shape[1])
    return out


def _embedding_backward(ids: np.ndarray, g: np.ndarray, num_embeddings: int) -> np.ndarray:
    """The (num_embeddings, D) gradient from contiguous int64 ids (n,) in range and a C-contiguous g (n, D)."""
    if not _backend.native(g):
        return reference_embedding_backward(ids, g, num_embeddings)
    dweight = np.empty((num_embeddings, g.shape[1]), g.dtype)
    _backend.K.call("embedding_backward", ids, g, dweight, ids.size, g.shape[1], num_embeddings)
    return dweight


# ---------------------------------------------------------------- the Function


class Embedding(Function):
    """Rows of a (V, D) table picked by integer ids; backward scatter-adds into the rows."""

    @staticmethod
    def forward(ctx, weight, ids):
        check_float("embedding", weight=weight)
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
        if weight.ndim != 2:
            raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
        flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= weight.shape[0]):
            bad = flat[(flat < 0) | (flat >= weight.shape[0])][0]
            raise ValueError(f"embedding: id {int(bad)} is out of range for {weight.shape[0]} embeddings")
        ctx.ids, ctx.vocab = flat, weight.shape[0]
        return _embedding_forward(contiguous(weight), flat).reshape(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, g):
        g = contiguous(g.reshape(len(ctx.ids), g.shape[-1]))
        return _embedding_backward(ctx.ids, g, ctx.vocab), None
