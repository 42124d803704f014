"""Shared fixtures: a seeded float64 random source, an optional PyTorch oracle, Ctrl-C at its default in children."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import microtensor as mt


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded numpy Generator so every test draws the same numbers."""
    return np.random.default_rng(1234)


@pytest.fixture
def randn(rng):
    """randn(*shape) -> float64 array, drawn from the test's seeded Generator."""

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    return draw


@pytest.fixture
def sigint_default():
    """A preexec_fn putting Ctrl-C back to its default in a child, as at a terminal: a suite started in the
    background (`make test &`) runs with SIGINT ignored, a child inherits that, and its Python then never raises
    KeyboardInterrupt."""
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def torch():
    """The torch module, single-threaded and float64-friendly; the test is skipped when it is absent."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _on_each_backend(request):
    """Run the test on one kernel backend (C skipped cleanly when not built), then restore the active one."""
    previous = mt.backend.name()
    try:
        mt.backend.use(request.param)
    except (ImportError, ValueError, RuntimeError) as err:
        pytest.skip(f"backend {request.param} unavailable: {err}")
    yield request.param
    mt.backend.use(previous)


kernels = pytest.fixture(params=["numpy", "c"], name="kernels")(_on_each_backend)
backend = pytest.fixture(params=["numpy", "c"], name="backend")(_on_each_backend)


@pytest.fixture
def c_kernels():
    """The C backend active (skipped when not built), so the ops' kernel entry points run C for float32."""
    previous = mt.backend.name()
    try:
        mt.backend.use("c")
    except ValueError as err:
        pytest.skip(f"backend c unavailable: {err}")
    yield
    mt.backend.use(previous)
