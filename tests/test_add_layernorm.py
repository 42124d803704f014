"""layer_norm(x + residual) fused (ops/layernorm.py): kernel vs the numpy reference, gradients, PyTorch, errors."""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from microtensor.ops import layernorm

F32 = np.float32


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 16), (33, 17), (256, 64), (3000, 40)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_the_reference(rows: int, cols: int, affine: bool, threads: int) -> None:
    c = pytest.importorskip("microtensor._backend.c")
    previous_backend = mt.backend.name()
    rng = np.random.default_rng(rows * cols)
    x, r = rng.standard_normal((2, rows, cols)).astype(F32) * 2.0 + 3.0
    w, b = rng.standard_normal((2, cols)).astype(F32) if affine else (None, None)
    previous = c.num_threads()
    c.set_num_threads(min(threads, mt._backend.available_cores()))
    mt.backend.use("c")
    try:
        got = layernorm._add_layernorm_forward(x, r, w, b, 1e-5)
    finally:
        c.set_num_threads(previous)
        mt.backend.use(previous_backend)
    wide = (None if a is None else a.astype(np.float64) for a in (x, r, w, b))
    want = layernorm.reference_add_layernorm_forward(*wide, 1e-5)
    for g, e, tol in zip(got, want, (1e-6, 1e-4, 1e-5, 1e-4), strict=True):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


def test_equals_layer_norm_of_the_sum(backend) -> None:
    """Values and all four gradients equal the unfused layer_norm(x + residual) on either backend."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(F32) for s in ((3, 5, 16), (3, 5, 16), (16,), (16,))]
    results = []
    for fused in (True, False):
        ts = [mt.tensor(a, requires_grad=True) for a in arrays]
        y = F.add_layer_norm(*ts[:2], 16, *ts[2:]) if fused else F.layer_norm(ts[0] + ts[1], 16, *ts[2:])
        (y * mt.tensor(np.arange(y.numel(), dtype=F32).reshape(y.shape) / 100)).sum().backward()
        results.append([y.numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gradcheck(backend) -> None:
    rng = np.random.default_rng(1)
    inputs = [mt.tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3, 6), (2, 3, 6), (3, 6), (3, 6))]
    assert mt.gradcheck(lambda x, r, w, b: F.add_layer_norm(x, r, (3, 6), w, b), inputs)


def test_matches_torch(torch) -> None:
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((2, 4, 7, 32)).astype(F32)
    w, b = rng.standard_normal((2, 32)).astype(F32)
    ours = [mt.tensor(a, requires_grad=True) for a in (x, r, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, r, w, b)]
    F.add_layer_norm(ours[0], ours[1], 32, ours[2], ours[3]).square().sum().backward()
    torch.nn.functional.layer_norm(theirs[0] + theirs[1], (32,), theirs[2], theirs[3]).square().sum().backward()
    for a, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_inputs_name_the_op() -> None:
    x = mt.tensor(np.zeros((2, 4), F32))
    with pytest.raises(ValueError, match=r"add_layer_norm: input of shape \(2, 4\) and residual of shape \(2, 3\)"):
        F.add_layer_norm(x, mt.tensor(np.zeros((2, 3), F32)), 4)
    with pytest.raises(ValueError, match="add_layer_norm: input of shape .* does not end in normalized_shape"):
        F.add_layer_norm(x, x, 3)
    with pytest.raises(TypeError, match="add_layer_norm: residual must be float32 or float64"):
        F.add_layer_norm(x, mt.tensor(np.zeros((2, 4), np.int64)), 4)
