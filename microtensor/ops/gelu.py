"""GELU's one home, mirroring csrc/gelu.c: the Functions of its tanh approximation and of the exact erf form
(the only place their inputs are checked), the numpy reference of the kernels, and the kernels' entry points.

The kernels work elementwise over C-contiguous arrays; the exact form's forward also writes Phi(x),
which its backward reads back. The entry points (private: they trust their caller's checks) run C
for float32 on the C backend and the reference otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend
from ..autograd import Function
from .checks import check_float, contiguous

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore"}  # np.errstate for inf - inf, ...
GELU_C = math.sqrt(2.0 / math.pi)  # a Python float, so float32 inputs stay float32

# ---------------------------------------------------------------- the numpy reference


def reference_gelu_forward(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    with np.errstate(**_QUIET):
        return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def reference_gelu_backward(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of the tanh-approximated GELU."""
    with np.errstate(**_QUIET):
        inner = GELU_C * (x + 0.044715 * x * x * x)
        t = np.tanh(inner)
        dinner = GELU_C * (1.0 + 3 * 0.044715 * x * x)
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


# For float32: Phi(x) = h for x < 0 and 1 - h for x >= 0, with h = erfc(|x|/sqrt(2)) / 2 = t exp(P(t) - x^2/2),
# t = 1 / (1 + |x| / (2 sqrt(2))) (the form of Numerical Recipes' erfcc); P of degree 9 (ln 1/2 folded into
# its constant) fitted to math.erfc weighted by erfc: |error| < 3e-11 in float64, so float32 rounding dominates.
_HALF_ERFC_P = (
    -1.953146260403301, 0.9213504607990458, 0.8711789773628149, -1.725996157065723, 4.08238148122582,
    -6.332348126307255, 5.628066316530774, -2.913890820294834, 0.8312215785734227, -0.10196463093235698,
)
_erfc64 = np.frompyfunc(math.erfc, 1, 1)  # exact but ~0.3 us per element: float64 only (tests, gradcheck)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = erfc(-x / sqrt(2)) / 2 (numpy has no erf): exact in float64, the fit above in float32."""
    if x.dtype == np.float64:
        return 0.5 * _erfc64(x * -(1.0 / math.sqrt(2.0))).astype(np.float64)
    t = 1.0 / (1.0 + np.abs(x) * (0.5 / math.sqrt(2.0)))
    p = _HALF_ERFC_P[-1] * t + _HALF_ERFC_P[-2]
    for c in _HALF_ERFC_P[-3::-1]:
        p *= t
        p += c
    p -= 0.5 * x * x
    h = t * np.exp(p)  # p may be a numpy scalar (0-d input): no out=
    return np.where(x < 0, h, 1.0 - h)


def reference_gelu_erf_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x * Phi(x), Phi(x)): the exact GELU (PyTorch's default, approximate='none') and the CDF for backward."""
    with np.errstate(**_QUIET):
        cdf = _normal_cdf(x)
        return x * cdf, cdf


def reference_gelu_erf_backward(x: np.ndarray, cdf: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of the exact GELU from the forward's Phi(x): g (Phi(x) + x phi(x))."""
    with np.errstate(**_QUIET):
        return g * (cdf + x * np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi)))


# ---------------------------------------------------------------- the kernels' entry points


def _gelu_forward(x: np.ndarray) -> np.ndarray:
    """GELU (tanh approximation) of a C-contiguous array."""
    if not _backend.native(x):
        return reference_gelu_forward(x)
    y = np.empty_like(x)
    _backend.K.call("gelu_forward", x, y, x.size)
    return y


def _gelu_backward(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """dx of the tanh GELU from x and the output's gradient g (C-contiguous, one shape)."""
    if not _backend.native(x, g):
        return reference_gelu_backward(x, g)
    dx = np.empty_like(x)
    _backend.K.call("gelu_backward", x, g, dx, x.size)
    return dx


def _gelu_erf_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x * Phi(x), Phi(x)) of a C-contiguous array."""
    if not _backend.native(x):
        return reference_gelu_erf_forward(x)
    y, cdf = np.empty_like(x), np.empty_like(x)
    _backend.K.call("gelu_erf_forward", x, y, cdf, x.size)
    return y, cdf


def _gelu_erf_backward(x: np.ndarray, cdf: np.ndarray, g: np.ndarray) -> np.ndarray:
    """dx of the exact GELU from x, the forward's Phi(x) and the output's gradient g (C-contiguous, one shape)."""
    if not _backend.native(x, cdf, g):
        return reference_gelu_erf_backward(x, cdf, g)
    dx = np.empty_like(x)
    _backend.K.call("gelu_erf_backward", x, cdf, g, dx, x.size)
    return dx


# ---------------------------------------------------------------- the Functions


class Gelu(Function):
    """GELU with the tanh approximation (PyTorch's approximate='tanh')."""

    @staticmethod
    def forward(ctx, a):
        if a.dtype.kind != "f":
            raise TypeError(f"gelu: expected a float32 or float64 tensor, got dtype {a.dtype}")
        a = contiguous(a)
        ctx.save_for_backward(a)
        return _gelu_forward(a)

    @staticmethod
    def backward(ctx, g):
        return _gelu_backward(ctx.saved_tensors[0], contiguous(g))


class GeluErf(Function):
    """GELU x * Phi(x) with the exact normal CDF (PyTorch's default, approximate='none')."""

    @staticmethod
    def forward(ctx, x):
        check_float("gelu", input=x)
        x = contiguous(x)
        y, cdf = _gelu_erf_forward(x)
        ctx.save_for_backward(x, cdf)
        return y

    @staticmethod
    def backward(ctx, g):
        x, cdf = ctx.saved_tensors
        return _gelu_erf_backward(x, cdf, contiguous(g))
