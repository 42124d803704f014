"""Attention's one home, mirroring csrc/attention.c: the Functions behind F.scaled_dot_product_attention
and F.self_attention (the only place their inputs are checked), the numpy reference of the kernels, and
their binding.

Both ops run one blocked, flash-style kernel pair on (B, H, T, D) views read by strides (the packed
projection's heads, or a user's transposed heads, cost no copy). The forward keeps the log-sum-exp of
each query row; the backward recomputes the weights from it, so no T x T array is kept unless the
weights are asked for (need_weights=True keeps them, and the backward then reads them). A float
attn_mask (added to the scores, maybe with a gradient) takes the materialised math path instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backend
from ..autograd import Function
from ..random import resolve
from .checks import FLOATS as _FLOATS
from .checks import check_float as _check_float
from .dropout import _dropout_forward, dropout_threshold, reference_dropout_forward
from .softmax import _softmax_forward

_SDPA = "scaled_dot_product_attention"
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore"}
_F32 = np.dtype(np.float32)

# ---------------------------------------------------------------- the numpy reference


def _masked_scores(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None, causal: bool, scale: float) -> np.ndarray:
    """scale q k^T with -inf added where the mask (True = attend) or the causal rule hides a key."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if causal:
        tril = np.tri(q.shape[-2], k.shape[-2], dtype=bool)
        mask = tril if mask is None else mask & tril
    return s if mask is None else np.where(mask, s, s - np.inf)


def reference_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, causal: bool,
                      scale: float, drop: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(out, lse, weights) on (B, H, T, D) arrays, as the kernel: a query with nothing to attend gets zero
    weights and lse +inf; `drop` holds the dropout factors (B, H, Tq, Tk) or is None."""
    with np.errstate(**_QUIET):
        s = _masked_scores(q, k, mask, causal, scale)
        m = s.max(axis=-1, keepdims=True, initial=-np.inf)
        shift = np.where(m == -np.inf, 0.0, m)
        e = np.exp(s - shift)
        total = e.sum(axis=-1, keepdims=True)
        weights = (e / np.where(total == 0, 1.0, total)).astype(q.dtype, copy=False)
        lse = np.where(total == 0, np.inf, shift + np.log(total))[..., 0].astype(q.dtype, copy=False)
        return np.matmul(weights if drop is None else weights * drop, v), lse, weights


def reference_backward(g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray,
                       lse: np.ndarray, weights: np.ndarray | None, mask: np.ndarray | None, causal: bool,
                       scale: float, drop: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dq, dk, dv), the weights recomputed from lse unless given: dS = P (dP - rowsum(dO O))."""
    with np.errstate(**_QUIET):
        p = weights if weights is not None else np.exp(_masked_scores(q, k, mask, causal, scale) - lse[..., None])
        dv = np.matmul(np.swapaxes(p if drop is None else p * drop, -1, -2), g)
        dp = np.matmul(g, np.swapaxes(v, -1, -2))
        ds = p * ((dp if drop is None else dp * drop) - (g * out).sum(axis=-1, keepdims=True))
        return np.matmul(ds, k) * scale, np.matmul(np.swapaxes(ds, -1, -2), q) * scale, dv


# ---------------------------------------------------------------- dispatch: the C kernels or the reference


class _Call:
    """One attention call on (B, H, T, D) views: what forward and backward share."""

    def __init__(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, causal: bool,
                 scale: float, dropout_p: float, generator: Any) -> None:
        self.q, self.k, self.v, self.mask, self.causal, self.scale = q, k, v, mask, causal, scale
        self.p, self.seed = dropout_p, int(resolve(generator).integers(1 << 63)) if dropout_p else 0
        kernel = _backend.K
        self.c = kernel if kernel.NAME == "c" and q.dtype is _F32 and q.size and k.size and v.size else None

    def drop(self) -> np.ndarray | None:
        """The reference's dropout factors (B, H, Tq, Tk), the kernel's mask; None without dropout."""
        if not self.p:
            return None
        shape = (*self.q.shape[:-1], self.k.shape[-2])
        return reference_dropout_forward(np.ones(shape, self.q.dtype), self.p, self.seed)[1]

    def forward(self, out: np.ndarray, need_weights: bool) -> None:
        """Write the output into `out` (B, H, Tq, Dv); keep lse and, if asked, the weights."""
        B, H, tq, tk = *self.q.shape[:-1], self.k.shape[-2]
        if self.c is None:
            out[...], self.lse, weights = reference_forward(self.q, self.k, self.v, self.mask, self.causal,
                                                            self.scale, self.drop())
            self.weights = weights if need_weights else None
            return
        self.lse = np.empty((B, H, tq), _F32)
        self.weights = np.empty((B, H, tq, tk), _F32) if need_weights else None
        if self.c.lib.mt_attention_forward(self._args(out=out)):
            raise MemoryError(f"{_SDPA}: no memory for the kernel's workspace")

    def backward(self, g: np.ndarray, out: np.ndarray, dq: np.ndarray, dk: np.ndarray, dv: np.ndarray) -> None:
        """Write the gradients of q, k, v into dq, dk, dv, from g (the output's gradient) and the output."""
        if self.c is None:
            dq[...], dk[...], dv[...] = reference_backward(g, self.q, self.k, self.v, out, self.lse, self.weights,
                                                           self.mask, self.causal, self.scale, self.drop())
            return
        if self.c.lib.mt_attention_backward(self._args(out=out, g=_rows(g), dq=dq, dk=dk, dv=dv)):
            raise MemoryError(f"{_SDPA}: no memory for the kernel's workspace")

    def _args(self, **views: np.ndarray) -> Any:
        """The kernel's mt_attention struct (its arrays must outlive the call: they are self's or the caller's)."""
        ffi = self.c.ffi
        q, k, v = self.q, self.k, self.v
        a = {"B": q.shape[0], "H": q.shape[1], "Tq": q.shape[2], "Tk": k.shape[2], "D": q.shape[3],
             "Dv": v.shape[3], "scale": self.scale, "causal": self.causal, "lse": ffi.from_buffer("float[]", self.lse)}
        for name, x in (("q", q), ("k", k), ("v", v), *views.items()):
            s = x.strides
            a[name] = (_address(ffi, x), s[0] // 4, s[1] // 4, s[2] // 4)
        if self.weights is not None:
            a["weights"] = ffi.from_buffer("float[]", self.weights)
        if self.mask is not None:
            a["mask"] = _address(ffi, self.mask, "uint8_t[]")
            a["mask_batch"], a["mask_head"], a["mask_row"] = self.mask.strides[:3]
        if self.p:
            a["drop_threshold"], a["drop_seed"] = dropout_threshold(self.p), self.seed
            a["drop_scale"] = 1.0 / (1.0 - self.p)
        return ffi.new("mt_attention *", a)


def _address(ffi: Any, x: np.ndarray, kind: str = "float[]") -> Any:
    """A pointer to the first element of a non-empty (B, H, T, D) x, read or written through its strides: the view
    of that one element is contiguous, so from_buffer takes it (a third of the cost of __array_interface__)."""
    return ffi.from_buffer(kind, x[0, 0, 0, :1])


def _rows(x: np.ndarray) -> np.ndarray:
    """x itself when its rows are contiguous and it is aligned (its address and strides whole elements), else a
    contiguous copy (a new array: np.ascontiguousarray keeps a contiguous unaligned one)."""
    return x if x.strides[-1] == x.itemsize and x.flags.aligned else np.array(x, order="C")


def _four_d(x: np.ndarray) -> np.ndarray:
    """(..., T, D) as (B, H, T, D): lead axes added or merged (a view where numpy can)."""
    if x.ndim < 4:
        return x.reshape((1,) * (4 - x.ndim) + x.shape)
    return x.reshape(-1, *x.shape[-3:]) if x.ndim > 4 else x


def _bool_mask(mask: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """A bool mask (True = attend) as a (B, H, Tq, Tk) view with contiguous rows; None when it hides nothing."""
    if mask is None or mask.all():
        return None
    full = _four_d(np.broadcast_to(mask, shape))
    return full if full.strides[-1] == 1 else np.ascontiguousarray(full)


# ---------------------------------------------------------------- the Functions


class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale + mask) v over (..., T, D) inputs, PyTorch's semantics.

    attn_mask is bool (True = takes part) or float (added to the scores) and broadcasts to
    (..., Tq, Tk). A bool mask, is_causal and dropout run in the blocked kernels; a float mask
    (which may require grad) takes the materialised math path. With need_weights the weights
    before dropout are kept in `ctx.weights` (for diagnostics), else it is None.
    """

    @staticmethod
    def forward(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, generator=None,
                need_weights=False):
        _check_attention(q, k, v)
        if attn_mask is not None and is_causal:
            raise ValueError(f"{_SDPA}: pass attn_mask or is_causal=True, not both (as PyTorch)")
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError(f"{_SDPA}: dropout_p must be in [0, 1), got {dropout_p}")
        lead, tq, tk = q.shape[:-2], q.shape[-2], k.shape[-2]
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        mask = None if attn_mask is None else _attention_mask(attn_mask, (*lead, tq, tk), _SDPA)
        ctx.shapes = (q.shape, k.shape, v.shape, (*lead, tq, tk))
        if mask is not None and mask.dtype != np.bool_:
            out, weights = _additive_forward(ctx, q, k, v, mask, scale, dropout_p, generator)
            ctx.weights = weights.reshape(*lead, tq, tk) if need_weights else None
            return out.reshape(*lead, tq, v.shape[-1])
        q4, k4, v4 = (_four_d(_rows(x)) for x in (q, k, v))
        ctx.call = _Call(q4, k4, v4, None if mask is None else _bool_mask(np.asarray(attn_mask), mask.shape),
                         bool(is_causal), scale, dropout_p, generator)
        ctx.out = np.empty((*q4.shape[:-1], v.shape[-1]), q.dtype)
        ctx.call.forward(ctx.out, need_weights)
        ctx.weights = None if ctx.call.weights is None else ctx.call.weights.reshape(*lead, tq, tk)
        out = ctx.out.reshape(*lead, tq, v.shape[-1])
        ctx.save_for_backward(q4, k4, v4, out)  # watched: backward reads them
        return out

    @staticmethod
    def backward(ctx, g):
        if not hasattr(ctx, "call"):
            return _additive_backward(ctx, g)
        call = ctx.call
        dq, dk, dv = np.empty(call.q.shape, g.dtype), np.empty(call.k.shape, g.dtype), np.empty(call.v.shape, g.dtype)
        call.backward(_four_d(g), ctx.out, dq, dk, dv)
        return *(d.reshape(s) for d, s in zip((dq, dk, dv), ctx.shapes)), None


def _additive_forward(ctx, q, k, v, mask, scale, dropout_p, generator) -> tuple[np.ndarray, np.ndarray]:
    """(out, weights) with a float mask added to the scores, materialised; saves what backward needs."""
    flat = [np.ascontiguousarray(t.reshape(-1, *t.shape[-2:])) for t in (q, k, v)]
    mask = mask.reshape(len(flat[0]), *mask.shape[-2:])
    K = _backend.K
    scores = K.matmul(flat[0], flat[1], trans_b=True) * scale + mask
    weights = _softmax_forward(scores.astype(q.dtype, copy=False))
    weights[np.isneginf(scores).all(axis=-1)] = 0.0  # a fully masked row attends to nothing, as PyTorch
    ctx.drop, dropped = None, weights
    if dropout_p:
        dropped, ctx.drop = _dropout_forward(weights, dropout_p, int(resolve(generator).integers(1 << 63)))
    ctx.save_for_backward(*flat, weights)
    ctx.scale = scale
    return K.matmul(dropped, flat[2]), weights


def _additive_backward(ctx, g) -> tuple:
    """Gradients of q, k, v and the float mask from the materialised weights."""
    q, k, v, weights = ctx.saved_tensors
    K = _backend.K
    g = np.ascontiguousarray(g.reshape(len(q), *g.shape[-2:]))
    dv = K.matmul(weights if ctx.drop is None else weights * ctx.drop, g, trans_a=True)
    dw = K.matmul(g, v, trans_b=True)
    if ctx.drop is not None:
        dw *= ctx.drop
    dscores = weights * (dw - (dw * weights).sum(axis=-1, keepdims=True))
    dq = K.matmul(dscores, k) * ctx.scale
    dk = K.matmul(dscores, q, trans_a=True) * ctx.scale
    return tuple(d.reshape(s) for d, s in zip((dq, dk, dv, dscores), ctx.shapes))


class SelfAttention(Function):
    """Multi-head self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v], heads split inside.

    One fused projection feeds it directly, so no per-head slicing op (and its zero-filled gradients)
    sits in the graph; the kernels read the heads by stride and write the output (B, T, D), heads
    concatenated, and the gradient (B, T, 3*D) in place. With need_weights the weights
    (B, H, T, T) are kept in `ctx.weights`, else it is None. With last_only only the last position
    queries (output (B, 1, D), weights (B, H, 1, T)): what a model that reads its last position needs.
    """

    @staticmethod
    def forward(ctx, qkv, n_heads=1, mask=None, is_causal=False, scale=None, need_weights=False, last_only=False):
        B, T, D = _check_packed(qkv, n_heads)
        if last_only and T == 0:
            raise ValueError(f"self_attention: last_only needs a last position, got qkv of shape {qkv.shape}")
        tq = 1 if last_only else T
        if mask is not None:
            _attention_mask(mask, (B, n_heads, T, T), "self_attention", floats=False)  # checks dtype and shape
            mask = np.asarray(mask)
            mask = _bool_mask(mask[..., -1:, :] if last_only and mask.ndim > 1 else mask, (B, n_heads, tq, T))
        scale = 1.0 / math.sqrt(D // n_heads) if scale is None else float(scale)
        q, k, v = _rows(qkv).reshape(B, T, 3, n_heads, D // n_heads).transpose(2, 0, 3, 1, 4)
        ctx.call = _Call(q[:, :, T - tq:], k, v, mask, bool(is_causal) and not last_only, scale, 0.0, None)
        ctx.out = np.empty((B, tq, D), qkv.dtype)
        ctx.call.forward(_split(ctx.out, n_heads), need_weights)
        ctx.weights = ctx.call.weights
        ctx.save_for_backward(q, k, v, ctx.out)  # watched: backward reads them
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        call, (B, H, T, hd) = ctx.call, ctx.call.k.shape
        dqkv = np.empty((B, T, 3, H, hd), g.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)
        tq = call.q.shape[2]
        dq[:, :, : T - tq] = 0.0  # positions that did not query (last_only)
        call.backward(_split(g, H), _split(ctx.out, H), dq[:, :, T - tq:], dk, dv)
        return dqkv.reshape(B, T, 3 * H * hd)


def _split(x: np.ndarray, n_heads: int) -> np.ndarray:
    """(B, T, D) as a (B, H, T, D / H) view of its heads."""
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)


def _check_packed(qkv: np.ndarray, n_heads: int) -> tuple[int, int, int]:
    """(B, T, D) of a packed (B, T, 3*D) float projection whose D splits into n_heads."""
    _check_float("self_attention", qkv=qkv)
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise ValueError(f"self_attention: qkv must be (batch, length, 3 * d_model), got shape {qkv.shape}")
    B, T, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    if not isinstance(n_heads, (int, np.integer)) or n_heads <= 0 or D % n_heads:
        raise ValueError(f"self_attention: d_model {D} (qkv shape {qkv.shape}) does not split into {n_heads} heads")
    return B, T, D


def _check_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    """q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) of one float dtype with equal leading axes."""
    _check_float(_SDPA, query=q, key=k, value=v)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"scaled_dot_product_attention: q, k, v of shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: q {q.shape}, k {k.shape}, v {v.shape} do not agree "
            "(expected q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv))"
        )


def _attention_mask(mask: Any, shape: tuple, op: str, floats: bool = True) -> np.ndarray:
    """A bool (True = takes part) or, if `floats`, float (added to the scores) mask broadcast to `shape`."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ and not (floats and mask.dtype in _FLOATS):
        kinds = "bool (True = takes part) or float (added to the scores)" if floats else "bool (True = may attend)"
        raise TypeError(f"{op}: mask must be {kinds}, got dtype {mask.dtype}")
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(f"{op}: mask of shape {mask.shape} does not broadcast to {shape}") from None
