"""The default random Generator behind randn/rand/dropout/init when none is passed; seeded by manual_seed."""

from __future__ import annotations

import numpy as np

_default = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default Generator (as torch.manual_seed) and return it."""
    global _default
    _default = np.random.default_rng(seed)
    return _default


def default_generator() -> np.random.Generator:
    """The Generator used when a function is given none."""
    return _default


def resolve(generator: np.random.Generator | None) -> np.random.Generator:
    """The given Generator, or the default one."""
    return _default if generator is None else generator
