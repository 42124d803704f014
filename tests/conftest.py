"""Shared fixtures: a seeded float64 random source and an optional PyTorch oracle."""

from __future__ import annotations

import numpy as np
import pytest


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
def torch():
    """The torch module, single-threaded and float64-friendly; the test is skipped when it is absent."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch
