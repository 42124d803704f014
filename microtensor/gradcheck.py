"""Check analytic gradients against central finite differences in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree; the message names the input and the worst element."""


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """True when d fn / d input matches finite differences for every input that requires grad.

    A non-scalar output is reduced with fixed random weights, so every output
    element is checked. Inputs that require grad must be float64.
    """
    inputs = tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; finite differences need float64")
    out = fn(*inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    for i in checked:
        inputs[i].grad = None
    out.backward(weights)
    for i in checked:
        grad = inputs[i].grad
        analytic = grad.data if grad is not None else np.zeros_like(inputs[i].data)
        numeric = _numeric_grad(fn, inputs, i, weights, eps)
        _compare(i, inputs[i].shape, analytic, numeric, atol, rtol)
    return True


@no_grad()
def _numeric_grad(fn: Callable, inputs: tuple, i: int, weights: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of sum(fn(...) * weights) with respect to every element of input i."""
    x = inputs[i].data
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        plus = float(np.sum(fn(*inputs).data * weights))
        x[idx] = saved - eps
        minus = float(np.sum(fn(*inputs).data * weights))
        x[idx] = saved
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def _compare(i: int, shape: tuple, analytic: np.ndarray, numeric: np.ndarray, atol: float, rtol: float) -> None:
    """Raise GradcheckError at the element with the largest violation of atol + rtol * |numeric|."""
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if excess.size and excess.max() > 0:
        worst = np.unravel_index(int(np.argmax(excess)), shape)
        raise GradcheckError(
            f"gradcheck: input {i} (shape {shape}) gradient mismatch at index {tuple(int(j) for j in worst)}: "
            f"analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g}"
        )
