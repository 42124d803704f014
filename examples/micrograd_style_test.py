"""Scalar autograd tests in micrograd's style, on PyTorch or on microtensor.

    python examples/micrograd_style_test.py                           # microtensor
    EXAMPLES_BACKEND=torch python examples/micrograd_style_test.py     # the same tests on PyTorch

Only the import line below differs between the two. Each test builds an expression
from 0-d or one-element tensors with + * ** relu tanh exp (in-place `+=` on
intermediate results included), calls backward() and checks the values and the
.grad of the inputs against numbers worked out by hand (micrograd's README example).
"""

import math
import os

BACKEND = os.environ.get("EXAMPLES_BACKEND", "microtensor")
if BACKEND == "torch":
    import torch
else:
    import microtensor as torch

TOL = 1e-6


def test_sanity_check():
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    # y = z^2 + z*x + z*x^2 with z = 3x + 2 < 0, so dy/dx = 6z + 6x + 2 + 9x^2 + 4x
    assert y.item() == -20.0
    assert x.grad.item() == 46.0


def test_more_ops():
    a = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    assert f"{g:.4f}" == "24.7041"
    assert f"{a.grad:.4f}" == "138.8338"
    assert f"{b.grad:.4f}" == "645.5773"
    assert abs(g.item() - 24.70408163265306) < TOL
    assert abs(a.grad.item() - 138.83381924198252) < TOL
    assert abs(b.grad.item() - 645.5772594752186) < TOL


def test_unary_fns():
    for v in [-1.0, 0.123, 2.0]:
        x = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        y = x.tanh()
        y.backward()
        assert abs(y.item() - math.tanh(v)) < TOL
        assert abs(x.grad.item() - (1 - math.tanh(v) ** 2)) < TOL

        x = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        y = torch.exp(x)
        y.backward()
        assert abs(y.item() - math.exp(v)) < TOL
        assert abs(x.grad.item() - math.exp(v)) < TOL


def test_grad_accumulates_until_zeroed():
    w = torch.tensor(3.0, requires_grad=True)
    for _ in range(2):
        (w * w).backward()
    assert w.grad.item() == 12.0
    w.grad.zero_()
    (w**3).backward()
    assert w.grad.item() == 27.0
    assert bool(w.grad == 27.0)


def test_powers_and_division():
    x = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    y = x**2 + x**0.5 + 1 / x + x**-2
    y.backward()
    expected = 2 * 1.5 + 0.5 * 1.5**-0.5 - 1.5**-2 - 2 * 1.5**-3
    assert abs(x.grad.item() - expected) < TOL
    assert f"{y.item():.6f}" == f"{1.5**2 + 1.5**0.5 + 1 / 1.5 + 1.5**-2:.6f}"


if __name__ == "__main__":
    tests = [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("test_")]
    for name, fn in tests:
        fn()
        print(f"{name}: ok")
    print(f"{len(tests)} tests passed on {BACKEND}")
