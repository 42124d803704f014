"""Random numbers: mt.Generator (a seedable numpy Generator) and the default one seeded by manual_seed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .device import _check_device


class Generator(np.random.Generator):
    """torch.Generator's API over numpy's PCG64: `manual_seed(s)` reseeds it in place; numpy's methods work too."""

    def __init__(self, device: Any = "cpu") -> None:
        _check_device(device, "Generator")
        self._seed = int(np.random.SeedSequence().entropy % (1 << 63))
        super().__init__(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        """Restart the stream from `seed` (any non-negative integer) and return self."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
        self._seed = int(seed)
        self.bit_generator.state = np.random.PCG64(self._seed).state
        return self

    def initial_seed(self) -> int:
        """The seed the stream last started from."""
        return self._seed


_default = Generator()


def manual_seed(seed: int) -> Generator:
    """Reseed the default Generator used by rand/randn/randint/multinomial/randperm/dropout/init (torch.manual_seed)."""
    return _default.manual_seed(seed)


def default_generator() -> Generator:
    """The Generator used when a function is given none."""
    return _default


def resolve(generator: np.random.Generator | None) -> np.random.Generator:
    """The given Generator (an mt.Generator or any numpy Generator), or the default one."""
    return _default if generator is None else generator
