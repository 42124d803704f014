"""Adam's one home, mirroring csrc/adam.c: the step over an optimiser's flat buffers (microtensor.optim.Adam
calls it; the only place its arguments are checked), its numpy reference, and the kernel's binding.

One call updates every parameter of a group in place. float32 C-contiguous buffers run the C kernel on
the C backend; any other buffers run the reference.
"""

from __future__ import annotations

import numpy as np

from .. import _backend

# ---------------------------------------------------------------- the numpy reference


def reference_adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float,
                          beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool) -> None:
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


# ---------------------------------------------------------------- the checked step


def adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool) -> None:
    """One Adam (decoupled=False) or AdamW step over flat buffers of one size, in place (the C kernel for
    float32 contiguous buffers on the C backend, the reference otherwise)."""
    if not param.size == grad.size == m.size == v.size:
        raise ValueError(f"adam_update: param {param.shape}, grad {grad.shape}, m {m.shape}, v {v.shape} "
                         "must have one size")
    if not (param.flags.writeable and m.flags.writeable and v.flags.writeable):
        raise ValueError("adam_update: param, m and v must be writeable")
    if int(step) < 1:
        raise ValueError(f"adam_update: step must be >= 1, got {step}")
    arrays = (param, grad, m, v)
    if not _backend.native(*arrays) or not all(a.flags.c_contiguous for a in arrays):
        reference_adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
        return
    _backend.K.call("adam_update", param, grad, m, v, param.size, int(step), float(lr), float(beta1), float(beta2),
                    float(eps), float(weight_decay), bool(decoupled))
