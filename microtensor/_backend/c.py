"""The C backend: the cffi extension's kernels, matmul and linear with the signatures of `reference.py`,
and `call`, the one binding through which each fused op's home (microtensor/ops/<op>.py) reaches its kernel.

matmul and linear send float32 to C and any other float dtype (float64 for gradcheck, float16, ...) to
the numpy reference, after checking shapes here: arrays are ndarrays, float32 in native byte order,
C-contiguous (copied once with np.ascontiguousarray when not), and shapes agree. The fused ops' Functions
check their own inputs before `call`. No Python input can make a kernel read or write out of bounds.
Pointers are made with `ffi.from_buffer`, the cheapest way cffi has.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ops.checks import contiguous
from . import reference
from ._kernels import ffi, lib

NAME = "c"
ISA = ffi.string(lib.mt_sgemm_isa()).decode()

# Every training step frees and reallocates the same arrays: keep freed memory for reuse rather than
# paying page faults to get it back from the OS each step (about 20% of a seed-model step).
lib.mt_keep_freed_memory()

_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_NULL = ffi.NULL
_from_buffer = ffi.from_buffer
_empty = np.empty
_ND = np.ndarray
_sgemm = lib.mt_sgemm


def num_threads() -> int:
    """Threads the kernels may use (MICROTENSOR_NUM_THREADS caps it at load time)."""
    return int(lib.mt_num_threads())


def set_num_threads(n: int) -> None:
    """Cap the kernels' threads at n (>= 1) from now on."""
    lib.mt_set_num_threads(int(n))


_POINTERS = {_F32: "float[]", np.dtype(np.float64): "double[]", _I64: "int64_t[]", np.dtype(np.bool_): "uint8_t[]"}


def call(kernel: str, *args: Any) -> Any:
    """lib.mt_<kernel>(*args): the one binding of the ops' homes (microtensor/ops/<op>.py) to their kernels.

    Each ndarray goes as a pointer to its data (float32, float64, int64 or bool; cffi refuses an array that is
    not C-contiguous, and a pointer of the wrong type), None as NULL, anything else as itself. The op's
    Function has checked every shape and index before this call: the kernels trust it.
    """
    return getattr(lib, "mt_" + kernel)(
        *[_from_buffer(_POINTERS[a.dtype], a) if type(a) is _ND else _NULL if a is None else a for a in args]
    )


def _fp(a: np.ndarray):
    """A float* cdata over a C-contiguous float32 array (no copy)."""
    return _from_buffer("float[]", a)


def _is_f32(kernel: str, *arrays: np.ndarray) -> bool:
    """True when every array is native float32; False routes to the reference; TypeError for non-arrays."""
    f32 = True
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{kernel}: expected numpy arrays, got {type(a).__name__}")
        if a.dtype is not _F32:
            f32 = False
    return f32


# ---------------------------------------------------------------- matmul


def _operand(a: np.ndarray, trans: bool) -> tuple[np.ndarray, bool]:
    """A 2-D operand as a C-contiguous array and transpose flag; a transposed view costs no copy."""
    if a.flags.c_contiguous:
        return a, trans
    if a.flags.f_contiguous:
        return a.T, not trans
    return np.ascontiguousarray(a), trans


def _matmul2(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool) -> np.ndarray:
    """op(a) @ op(b) for 2-D float32 arrays through mt_sgemm."""
    a, trans_a = _operand(a, trans_a)
    b, trans_b = _operand(b, trans_b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k2:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) is {m}x{k} (a {a.shape}, trans_a={trans_a}) "
            f"but op(b) is {k2}x{n} (b {b.shape}, trans_b={trans_b})"
        )
    out = np.empty((m, n), _F32)
    lib.mt_sgemm(trans_a, trans_b, m, n, k, 1.0, _fp(a), max(a.shape[1], 1), _fp(b), max(b.shape[1], 1),
                 0.0, _fp(out), max(n, 1))
    return out


def _in_place(x: np.ndarray, trans: bool, batch: tuple) -> tuple | None:
    """(pointer, trans, ld, batch stride) that read float32 x in place as `batch` matrices op(x), or None.

    One of x's last two axes must have unit stride (the other is then read transposed) and its batch
    axes must collapse to one stride, or hold a single matrix (stride 0: broadcast). Strides are
    positive, so the kernel reads only elements of x.
    """
    rows, cols = x.shape[-2:]
    if x.flags.c_contiguous and (x.ndim == 2 or x.shape[:-2] == batch):
        return _from_buffer("float[]", x), trans, cols, 0 if x.ndim == 2 else rows * cols
    sr, sc = x.strides[-2] // 4, x.strides[-1] // 4
    if x.strides[-2] % 4 or x.strides[-1] % 4:
        return None
    if (cols == 1 or sc == 1) and (rows == 1 or sr > 0):
        base, ld = x, sr if rows > 1 else cols
    elif (rows == 1 or sr == 1) and (cols == 1 or sc > 0):
        base, ld, trans = np.swapaxes(x, -1, -2), sc if cols > 1 else rows, not trans
    else:
        return None
    stride = 0
    dims = [(n, st) for n, st in zip(x.shape[:-2], x.strides[:-2]) if n != 1]
    if dims:
        if x.shape[:-2] != batch or any(st != st2 * n2 for (_, st), (n2, st2) in zip(dims, dims[1:])):
            return None
        stride = dims[-1][1]
        if stride < 0 or stride % 4:
            return None
        stride //= 4
    if base.flags.c_contiguous:
        return _from_buffer("float[]", base), trans, max(ld, 1), stride
    return ffi.cast("float *", x.__array_interface__["data"][0]), trans, max(ld, 1), stride


def _matmul_batched(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool) -> np.ndarray:
    """Batched op(a) @ op(b) for float32 arrays with 2+ dimensions, read in place through their strides.

    Each operand's batch axes equal the broadcast batch or hold one matrix; other broadcasts and layouts the
    kernel cannot stride through split on the leading batch axis (up to _SPLIT_MAX), the rest and empty
    products go to numpy.
    """
    batch = a.shape[:-2] if a.shape[:-2] == b.shape[:-2] or b.ndim == 2 else b.shape[:-2] if a.ndim == 2 else None
    if batch is None:
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch shapes of a {a.shape} and b {b.shape} cannot be broadcast") from None
    m, k = (a.shape[-1], a.shape[-2]) if trans_a else a.shape[-2:]
    k2, n = (b.shape[-1], b.shape[-2]) if trans_b else b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is {m}x{k} (a {a.shape}, trans_a={trans_a}) "
                         f"but op(b) is {k2}x{n} (b {b.shape}, trans_b={trans_b})")
    nb = math.prod(batch)
    ra = _in_place(a, trans_a, batch) if m and n and k and nb else None
    rb = _in_place(b, trans_b, batch) if ra else None
    if rb is None and m and n and k and batch[0] <= _SPLIT_MAX:
        return _matmul_split(a, b, trans_a, trans_b, batch, m, n)
    if rb is None:
        return reference.matmul(a, b, trans_a, trans_b)
    (pa, ta, lda, sa), (pb, tb, ldb, sb) = ra, rb
    out = np.empty(batch + (m, n), _F32)
    if sb == 0 and not ta and sa == m * lda:  # a's matrices stacked as one: a single product
        lib.mt_sgemm(0, tb, nb * m, n, k, 1.0, pa, lda, pb, ldb, 0.0, _fp(out), n)
    else:
        lib.mt_sgemm_strided_batched(ta, tb, m, n, k, 1.0, pa, lda, sa, pb, ldb, sb, 0.0, _fp(out), n, m * n, nb)
    return out


_SPLIT_MAX = 64  # leading batch sizes looped over in Python; longer ones go to numpy


def _matmul_split(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool, batch: tuple, m: int,
                  n: int) -> np.ndarray:
    """Batches the strides cannot express as one (a (2, 1, T, D) @ b (1, H, D, T)): one batched call per index
    of the leading batch axis, each operand's own axis indexed or, where it has length 1, repeated."""
    out = np.empty(batch + (m, n), _F32)
    lead_a = a.shape[0] if a.ndim == len(batch) + 2 else 1
    lead_b = b.shape[0] if b.ndim == len(batch) + 2 else 1
    for i in range(batch[0]):
        sub_a = a[i if lead_a > 1 else 0] if a.ndim == len(batch) + 2 else a
        sub_b = b[i if lead_b > 1 else 0] if b.ndim == len(batch) + 2 else b
        out[i] = _matmul_batched(sub_a, sub_b, trans_a, trans_b) if max(sub_a.ndim, sub_b.ndim) > 2 else \
            _matmul2(sub_a, sub_b, trans_a, trans_b)
    return out


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """op(a) @ op(b) for arrays of 2+ dimensions with numpy's batch broadcasting (op transposes the last two axes)."""
    if type(a) is _ND and type(b) is _ND and a.dtype is _F32 and b.dtype is _F32 and a.ndim == 2 == b.ndim:
        # The hot case (every matmul of a training step), inlined to about 1 us of Python.
        # from_buffer itself refuses arrays that are not C-contiguous; those take the path below.
        ra, ca = a.shape
        rb, cb = b.shape
        m, k = (ca, ra) if trans_a else (ra, ca)
        n, k2 = (rb, cb) if trans_b else (cb, rb)
        if k == k2 and ca and cb:
            try:
                pa, pb = _from_buffer("float[]", a), _from_buffer("float[]", b)
            except (BufferError, ValueError, TypeError):
                pa = None
            if pa is not None:
                out = _empty((m, n), _F32)
                _sgemm(1 if trans_a else 0, 1 if trans_b else 0, m, n, k, 1.0, pa, ca, pb, cb, 0.0,
                       _from_buffer("float[]", out), n or 1)
                return out
    if not _is_f32("matmul", a, b):
        return reference.matmul(a, b, trans_a, trans_b)
    if a.ndim == 2 and b.ndim == 2:
        return _matmul2(a, b, bool(trans_a), bool(trans_b))
    if a.ndim >= 2 and b.ndim >= 2:
        return _matmul_batched(a, b, bool(trans_a), bool(trans_b))
    return reference.matmul(a, b, trans_a, trans_b)


def linear(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x @ w.T + bias for x (..., in), w (out, in), bias (out,) or None, in one fused sgemm."""
    if type(x) is not _ND or type(w) is not _ND or x.dtype is not _F32 or w.dtype is not _F32 or not (
            bias is None or (type(bias) is _ND and bias.dtype is _F32)):
        if not _is_f32("linear", x, w, *(() if bias is None else (bias,))):
            return reference.linear(x, w, bias)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: x {x.shape} must end in in_features and w {w.shape} be "
                         "(out_features, in_features)")
    n_out, n_in = w.shape
    if bias is not None and bias.shape != (n_out,):
        raise ValueError(f"linear: bias {bias.shape} must be ({n_out},)")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if not w.flags.c_contiguous:
        w = np.ascontiguousarray(w)
    rows = x.size // n_in if n_in else int(np.prod(x.shape[:-1]))
    out = _empty(x.shape[:-1] + (n_out,), _F32)
    lib.mt_linear_forward(_from_buffer("float[]", x), _from_buffer("float[]", w),
                          _NULL if bias is None else _fp(contiguous(bias)), _from_buffer("float[]", out),
                          rows, n_in, n_out)
    return out


def linear_backward(
    g: np.ndarray, x: np.ndarray, w: np.ndarray, need_x: bool, need_w: bool, need_b: bool,
    dx_into: np.ndarray | None = None, dw_into: np.ndarray | None = None, db_into: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(dx, dw, db) of linear in one call: two sgemms and a column sum; None where not needed.

    A gradient given an `_into` array of its shape (C-contiguous float32) is added into it, which is returned.
    """
    intos = (dx_into, dw_into, db_into)
    if not _is_f32("linear_backward", g, x, w, *(a for a in intos if a is not None)):
        return reference.linear_backward(g, x, w, need_x, need_w, need_b, *intos)
    if not (g.ndim == 2 and x.ndim == 2 and w.ndim == 2):
        raise ValueError(f"linear_backward: g {g.shape}, x {x.shape}, w {w.shape} must be 2-D")
    (n, n_out), n_in = g.shape, w.shape[1]
    if not (x.shape == (n, n_in) and w.shape == (n_out, n_in)):
        raise ValueError(f"linear_backward: g {g.shape}, x {x.shape}, w {w.shape} must be (N, out), (N, in), (out, in)")
    g, x, w = contiguous(g), contiguous(x), contiguous(w)
    grads, add = [], 0
    for bit, (name, need, into, shape) in enumerate(
            zip(("dx", "dw", "db"), (need_x, need_w, need_b), intos, ((n, n_in), (n_out, n_in), (n_out,)))):
        if need and into is not None:
            if not (into.shape == shape and into.flags.c_contiguous):
                raise ValueError(f"linear_backward: {name}_into {into.shape} must be a C-contiguous {shape} array")
            add |= 1 << bit
        grads.append(None if not need else into if into is not None else _empty(shape, _F32))
    lib.mt_linear_backward(_fp(g), _fp(x), _fp(w), *(_NULL if a is None else _fp(a) for a in grads), add,
                           n, n_in, n_out)
    return tuple(grads)
