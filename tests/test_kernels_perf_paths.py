"""The C kernels added for speed (exact GELU, batched matmul) against the numpy reference and PyTorch."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

try:
    c = importlib.import_module("microtensor._backend.c")
except ImportError as err:  # the extension is not built: nothing here can run
    pytest.skip(f"C kernels not built ({err})", allow_module_level=True)
ref = importlib.import_module("microtensor._backend.reference")

F32 = np.float32


def close(actual, expected, rtol: float, atol: float) -> None:
    """Assert a float32 kernel's output matches an expected array (compared in float64)."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol)


def gelu_inputs(n: int) -> np.ndarray:
    """n float32 values: a dense sweep of [-14, 9] (both tails and the centre) then normal values."""
    rng = np.random.default_rng(n)
    sweep = np.linspace(-14, 9, max(n // 2, 1))
    return np.concatenate([sweep, rng.standard_normal(n - len(sweep)) * 3]).astype(F32)[:n]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 33, 1001, 70001])
def test_gelu_erf_matches_the_exact_reference(n: int) -> None:
    x = gelu_inputs(n)
    g = np.random.default_rng(1).standard_normal(n).astype(F32)
    x64 = x.astype(np.float64)  # the float64 reference is exact (math.erfc)
    close(c.gelu_erf_forward(x), ref.gelu_erf_forward(x64), rtol=2e-6, atol=2e-7)
    close(c.gelu_erf_backward(x, g), ref.gelu_erf_backward(x64, g.astype(np.float64)), rtol=2e-6, atol=3e-7)


def test_gelu_erf_matches_torch_with_non_finite_values(torch) -> None:
    x = np.concatenate([gelu_inputs(4001), [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(F32).reshape(-1, 1)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(F32)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.backward(torch.tensor(g))
    close(c.gelu_erf_forward(x), yt.detach().numpy(), rtol=1e-6, atol=4e-7)
    close(c.gelu_erf_backward(x, g), xt.grad.numpy(), rtol=1e-6, atol=4e-7)


def test_gelu_erf_float64_and_shape_checks_route_or_raise() -> None:
    x = gelu_inputs(9).astype(np.float64)
    np.testing.assert_array_equal(c.gelu_erf_forward(x), ref.gelu_erf_forward(x))
    with pytest.raises(ValueError, match=r"gelu_erf_backward: x \(3,\) and g \(4,\) must have one shape"):
        c.gelu_erf_backward(np.zeros(3, F32), np.zeros(4, F32))


def test_gelu_erf_does_not_depend_on_the_thread_count() -> None:
    x = gelu_inputs(300001)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(F32)
    before = c.num_threads()
    try:
        c.set_num_threads(1)
        one = c.gelu_erf_forward(x), c.gelu_erf_backward(x, g)
        c.set_num_threads(2)
        two = c.gelu_erf_forward(x), c.gelu_erf_backward(x, g)
    finally:
        c.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
