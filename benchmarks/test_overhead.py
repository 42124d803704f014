"""Per-op engine overhead: forward + backward of a chain of 200 ops on 1-element tensors.

Every training step pays this cost hundreds of times, so it is the engine's
budget (target: at most 5 us per op). The same chain runs in PyTorch, at one
thread, when it is installed. `extra_info["us_per_op"]` holds the median time
per call divided by CHAIN.

    python -m pytest benchmarks/test_overhead.py --benchmark-only --benchmark-columns=median,iqr,ops
"""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt

CHAIN = 200  # ops per call: 50 rounds of mul, add, tanh, sub


def chain(x, w: float = 0.9, b: float = 0.1, c: float = 0.05):
    """50 rounds of four ops each; works on any tensor type with * + - and .tanh()."""
    for _ in range(CHAIN // 4):
        x = (x * w + b).tanh() - c
    return x


def microtensor_step(x: mt.Tensor) -> float:
    x.grad = None
    y = chain(x)
    y.backward()
    return float(x.grad[0])


def expected_grad(x0: float) -> float:
    """d chain / dx in float64 numpy, to check the benchmarked code computes the right thing."""
    x, grad = x0, 1.0
    for _ in range(CHAIN // 4):
        t = np.tanh(x * 0.9 + 0.1)
        grad *= 0.9 * (1 - t * t)
        x = t - 0.05
    return grad


def record(benchmark, library: str) -> None:
    """Store the per-op figure; with --benchmark-disable there are no timings to store."""
    benchmark.extra_info["library"] = library
    if benchmark.stats is None:
        return
    benchmark.extra_info["ops"] = CHAIN
    benchmark.extra_info["us_per_op"] = round(benchmark.stats.stats.median / CHAIN * 1e6, 3)


def test_overhead_microtensor(benchmark) -> None:
    x = mt.tensor(np.array([0.3], dtype=np.float32), requires_grad=True)
    grad = benchmark(microtensor_step, x)
    assert grad == pytest.approx(expected_grad(0.3), rel=1e-4)
    benchmark.extra_info["backend"] = mt.backend.name()
    record(benchmark, "microtensor")


def test_overhead_torch(benchmark) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    x = torch.tensor([0.3], dtype=torch.float32, requires_grad=True)

    def step() -> float:
        x.grad = None
        chain(x).backward()
        return float(x.grad[0])

    grad = benchmark(step)
    assert grad == pytest.approx(expected_grad(0.3), rel=1e-4)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    record(benchmark, "torch")
