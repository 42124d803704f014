"""The numpy reference implementation of every kernel.

Every backend exposes exactly these functions with these signatures; the C
backend (`microtensor._backend.c`) is tested against this module. Arrays in,
new arrays out (except `adam_update`, which updates its buffers in place).
Any float dtype works here; the C backend takes float32 and routes the rest
to this module. NaN and +-inf give PyTorch's results (a NaN or +inf in a
softmax row makes the row NaN), silently as PyTorch: numpy's warnings for
them are switched off where they arise.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore"}  # np.errstate for inf - inf, log(0), ...


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """op(a) @ op(b) for 2-D arrays or 3-D arrays with equal batch; op transposes the last two axes."""
    if trans_a:
        a = np.swapaxes(a, -1, -2)
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def linear(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x @ w.T + bias for x (N, in), w (out, in), bias (out,) or None."""
    y = x @ w.T
    if bias is not None:
        y += bias
    return y


def linear_backward(
    g: np.ndarray, x: np.ndarray, w: np.ndarray, need_x: bool, need_w: bool, need_b: bool,
    dx_into: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients (dx, dw, db) of linear for g (N, out), x (N, in), w (out, in); None where not needed.

    With dx_into (N, in), dx is added into it and returned as dx.
    """
    dx = g @ w if need_x else None
    if dx_into is not None and dx is not None:
        dx_into += dx
        dx = dx_into
    dw = g.T @ x if need_w else None
    db = g.sum(axis=0) if need_b else None
    return dx, dw, db


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One Adam (decoupled=False, L2 weight decay) or AdamW step over flat buffers, in place.

    Follows PyTorch: bias-corrected moments, eps added after the square root.
    """
    if weight_decay and decoupled:
        param *= 1.0 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * param
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    denom = np.sqrt(v) / np.sqrt(bias2) + eps
    param -= (lr / bias1) * m / denom
