"""Op benchmarks: scalar powers (x ** 3.0 takes the multiplication path) against x*x*x and PyTorch.

    python -m pytest benchmarks/test_ops.py --benchmark-only --benchmark-columns=median,iqr

The shape is a minGPT activation, (32, 64, 256) float32; each case is one forward
call, or forward + backward of the sum, as op code pays it. PyTorch runs at one thread.
"""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt

SHAPE = (32, 64, 256)
CASES = {
    "x**3.0": lambda x: x**3.0,
    "x*x*x": lambda x: x * x * x,
    "x**0.5": lambda x: x**0.5,
    "x**-1": lambda x: x**-1,
    "x**1.3 (numpy pow)": lambda x: x**1.3,
}


def data() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 2.0, SHAPE).astype(np.float32)


@pytest.mark.parametrize("impl", ["microtensor", "torch"])
@pytest.mark.parametrize("case", list(CASES))
def test_pow_forward(benchmark, case: str, impl: str) -> None:
    benchmark.group = f"forward {case}"
    fn = CASES[case]
    if impl == "microtensor":
        benchmark(fn, mt.tensor(data()))
        return
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    benchmark(fn, torch.tensor(data()))


@pytest.mark.parametrize("impl", ["microtensor", "torch"])
@pytest.mark.parametrize("case", ["x**3.0", "x*x*x"])
def test_pow_forward_backward(benchmark, case: str, impl: str) -> None:
    benchmark.group = f"forward+backward {case}"
    fn = CASES[case]
    if impl == "microtensor":
        x = mt.tensor(data(), requires_grad=True)
    else:
        torch = pytest.importorskip("torch")
        torch.set_num_threads(1)
        x = torch.tensor(data(), requires_grad=True)

    def step() -> None:
        x.grad = None
        fn(x).sum().backward()

    benchmark(step)
