"""The numpy backend: matmul and linear, as the C backend has them (`microtensor._backend.c`, tested against
this module). Any float dtype works here; the C backend takes float32 and routes the rest to this module.

Each fused op keeps its own numpy reference in its home, microtensor/ops/<op>.py, and runs it when
`_backend.native` says the C kernels do not take its arrays (this backend active, or not float32).
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"


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
    dx_into: np.ndarray | None = None, dw_into: np.ndarray | None = None, db_into: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients (dx, dw, db) of linear for g (N, out), x (N, in), w (out, in); None where not needed.

    A gradient given an `_into` array is added into it, which is returned.
    """
    grads = (g @ w if need_x else None, g.T @ x if need_w else None, g.sum(axis=0) if need_b else None)
    return tuple(_added_into(grad, into) for grad, into in zip(grads, (dx_into, dw_into, db_into)))


def _added_into(grad: np.ndarray | None, into: np.ndarray | None) -> np.ndarray | None:
    """into += grad, returned; grad itself when there is no array to add into."""
    if grad is None or into is None:
        return grad
    into += grad
    return into
